"""Run every benchmark module (``bench/bench_*.py``) or the ones named, and print one table.

Each module defines ``run(report: Report) -> None`` and calls ``report.row(...)`` per measurement:
ours vs a peer (rclone, smbclient, find) timed in the same run, so the ratio is what counts.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table


@dataclass
class Row:
    area: str
    case: str
    ours_s: float | None
    peer: str = ""
    peer_s: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.ours_s / self.peer_s if self.ours_s is not None and self.peer_s else None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    area: str = ""

    def row(self, case: str, ours_s: float | None, peer: str = "", peer_s: float | None = None,
            note: str = "") -> None:
        row = Row(self.area, case, ours_s, peer, peer_s, note)
        self.rows.append(row)
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        print(f"[{self.area}] {case}: ours={_fmt(ours_s)} {peer}={_fmt(peer_s)} ratio={ratio} {note}", flush=True)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    wanted = [f"bench_{a}" if not a.startswith("bench_") else a for a in argv] or names
    report = Report()
    started = time.monotonic()
    for name in wanted:
        module = importlib.import_module(f"bench.{name}")
        report.area = name.removeprefix("bench_")
        module.run(report)
    table = Table(title=f"farmkeeper benchmarks ({time.monotonic() - started:.0f} s)")
    for col in ("area", "case", "ours", "peer", "peer time", "ours/peer", "note"):
        table.add_column(col)
    for r in report.rows:
        table.add_row(r.area, r.case, _fmt(r.ours_s), r.peer, _fmt(r.peer_s),
                      f"{r.ratio:.2f}" if r.ratio is not None else "-", r.note)
    Console(width=200).print(table)
    out = here / "out"
    out.mkdir(exist_ok=True)
    (out / "results.json").write_text(json.dumps([asdict(r) | {"ratio": r.ratio} for r in report.rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

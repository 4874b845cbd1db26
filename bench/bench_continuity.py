"""Continuity report benchmark: one camera, 30 days of 1-minute segments (43,200 files) over SMB.

One Samba server on 127.0.0.14 (the test fixture's ``SambaFarm``, signing as configured there) shares
``DATAD`` holding the camera's 30 days plus a second camera's 30 days (never listed by the report: only the
camera's day folders in the range are). Ours: ``farmkeeper.continuity.continuity`` over SMB (target
< 2 s); peer: ``rclone size`` of the same camera's stream folder (the same 43,200 files), same run.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_storage import _run  # noqa: E402
from bench.peers import rclone_env  # noqa: E402
from farmkeeper.continuity import continuity  # noqa: E402
from farmkeeper.layout import video_path  # noqa: E402
from farmkeeper.storage import open_volume  # noqa: E402
from tests.fixtures.samba import SambaFarm  # noqa: E402

DAYS = 30
START = datetime(2026, 10, 1, tzinfo=UTC)


def build(root: Path, camera: str, skip: tuple[int, int] = (0, 0)) -> int:
    """One empty segment a minute for DAYS days; minutes in [skip) are missing (a gap)."""
    made = 0
    folder = None
    for minute in range(DAYS * 24 * 60):
        if skip[0] <= minute < skip[1]:
            continue
        path = root / video_path(camera, 0, START + timedelta(minutes=minute)).relpath
        if path.parent != folder:
            folder = path.parent
            folder.mkdir(parents=True, exist_ok=True)
        path.touch()
        made += 1
    return made


def run(report: Any) -> None:
    base = Path(os.environ.get("FK_BENCH_DIR") or tempfile.mkdtemp(prefix="fk-bench-cont-", dir="/var/tmp"))
    farm = SambaFarm(1, root=base / "samba", first_host=14)
    farm.start()
    try:
        server = farm.servers[0]
        share = server.share_path("DATAD")
        files = build(share, "cam-001", skip=(10_000, 10_090))
        build(share, "cam-002")
        env = rclone_env({"SRC": server})
        peer = _run(["rclone", "size", "SRC:DATAD/video/cam-001/0"], env)
        with open_volume(server.access("D")) as volume:
            started = time.perf_counter()
            result = continuity("cam-001", START, START + timedelta(days=DAYS), [(server.host, "D")],
                                lambda _s, _d: volume)
            ours = time.perf_counter() - started
        gaps = [(g.start.isoformat(), round(g.seconds / 60)) for g in result.gaps]
        report.row(f"continuity report, 1 camera, {DAYS} days of 1-min segments ({files} files) over SMB",
                   ours, "rclone size (same folder)", peer,
                   f"{result.segments} segments, gaps {gaps}, {result.availability_percent} %; target < 2 s")
    finally:
        farm.close()
        shutil.rmtree(base, ignore_errors=True)

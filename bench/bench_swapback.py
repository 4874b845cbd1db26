"""Swap-back benchmark: the whole ``swap-back`` flow vs ``rclone copy`` + ``rclone delete`` of the same files.

Two Samba servers (127.0.0.70 = home ``rec1``, 127.0.0.71 = redundant ``spare1``); the footage recorded
during a failover sits on spare1's ``DATAD`` in the layout. Two cases, each timed for both tools in the
same run: big files (``FK_BENCH_SB_MB``, default 1024, as 64 MiB files) and small files
(``FK_BENCH_SB_SMALL``, default 20000 × 4 KiB over 4 cameras).

Equal verification: ours with ``verify=size`` (size + modification time after the copy, re-listed before
deleting) vs rclone's default check (size + modtime); and the verified swap-back (``verify=hash``, the
default: the copy read back and its BLAKE2b compared with the source's, hashed while read) vs ``rclone copy``
+ ``rclone check --download`` (which reads both sides again) on the same big-file tree; its row also gives
the read-back's cost against our ``verify=size`` run. rclone (go-smb2) cannot sign, so both run with server
signing = auto and ours with signing off (equal security). ``FK_BENCH_SB_SMALL=0`` skips the small-file case.

Ours is the full flow: validation gate, cameras home, closed-segment check, plan, copy, verify, audit,
delete sources (with empty-folder pruning), progress artifacts, notifications (none configured here).
Run: ``.venv/bin/python -m bench swapback``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_storage import build_tree  # noqa: E402
from bench.peers import rclone_env  # noqa: E402
from tests.fixtures.samba import PASSWORD, USERNAME, SambaFarm  # noqa: E402

PW_ENV = "FK_BENCH_SB_PASSWORD"


class _RetryCounter(logging.Filter):
    """Counts the Prefect client's retries (the API answered 503, e.g. its SQLite database was busy) and the
    seconds it slept before retrying; passes on only INFO and above, as without it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.seconds = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "retryable status code" in text:
            self.count += 1
            found = re.search(r"will be made in ([0-9.]+)s", text)
            self.seconds += float(found.group(1)) if found else 0.0
        return record.levelno >= logging.INFO


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _run(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    result = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed: {result.stderr[-500:]}")
    return time.perf_counter() - t0


def _big(root: Path, cam: str, mb: int) -> int:
    count = max(1, mb // 64)
    block = os.urandom(1 << 20)
    for i in range(count):
        rel = f"video/{cam}/0/2024-03-01/{i // 60:02d}/20240301T{i // 60:02d}{i % 60:02d}00Z.mkv"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            for j in range(64):
                f.write(block[j:] + block[:j])
    return count


def _move_back(home: Path, spare: Path) -> None:
    """Put the footage rclone copied home back on spare1 (a rename: same files, same mtimes)."""
    shutil.rmtree(spare / "video", ignore_errors=True)
    (home / "video").rename(spare / "video")


def _failover(cameras: list[str]) -> None:
    from farmkeeper.db import ensure_schema, get_engine, session_scope
    from farmkeeper.models import Camera, FailoverEvent, utcnow

    with session_scope(ensure_schema(get_engine())) as session:
        for cam in cameras:
            row = session.get(Camera, cam)
            assert row is not None
            row.current = "spare1"
            session.add(row)
            session.add(FailoverEvent(camera_id=cam, from_server="rec1", to_server="spare1", started_at=utcnow()))


def run(report: Any) -> None:
    base = Path(os.environ.get("FK_BENCH_DIR") or tempfile.mkdtemp(prefix="fk-bench-sb-", dir="/var/tmp"))
    farm = SambaFarm(2, root=base / "samba", first_host=70, shares=("DATAD",))
    for server in farm.servers:
        server.extra_global["server signing"] = "auto"
    farm.start()
    saved = {k: os.environ.get(k) for k in ("FARMKEEPER_DATABASE_URL", "FARMKEEPER_STORAGE__REQUIRE_SIGNING", PW_ENV)}
    try:
        os.environ["FARMKEEPER_DATABASE_URL"] = f"sqlite:///{base / 'inventory.db'}"
        os.environ["FARMKEEPER_STORAGE__REQUIRE_SIGNING"] = "false"
        os.environ[PW_ENV] = PASSWORD
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            _bench(report, farm, base)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        farm.close()
        shutil.rmtree(base, ignore_errors=True)


def _bench(report: Any, farm: SambaFarm, base: Path) -> None:
    from farmkeeper.db import dispose_engines, ensure_schema, get_engine, session_scope
    from farmkeeper.farmfile import apply_farm_file, parse_farm_file
    from flows.swap_back import SwapBackParams, swap_back

    home, spare = farm.servers
    home_root, spare_root = home.share_path("DATAD"), spare.share_path("DATAD")
    small_cams = [f"cam-{i:02d}" for i in range(4)]
    data = {"farm": {"name": "bench"}, "storage": {"default_path": "D:\\Data"},
            "servers": [{"name": name, "host": srv.host, "role": role, "master": name == "rec1", "health": "smb",
                         "san_failover_mode": True, "smb": {"username": USERNAME, "password_env": PW_ENV},
                         "volumes": [{"drive": "D"}]}
                        for name, srv, role in (("rec1", home, "primary"), ("spare1", spare, "redundant"))],
            "cameras": [{"id": c, "home": "rec1"} for c in ["cam-big", *small_cams]]}
    path = base / "farm.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with session_scope(ensure_schema(get_engine())) as session:
        apply_farm_file(session, parse_farm_file(path.read_text(), str(path)))
    env = rclone_env({"SRC": farm.servers[1], "DST": farm.servers[0]})

    mb = _env("FK_BENCH_SB_MB", 1024)
    small = _env("FK_BENCH_SB_SMALL", 20_000)
    big = f"{max(1, mb // 64)}x64 MiB"
    cases = [(f"swap-back {big}", ["cam-big"], 4, "size", lambda: _big(spare_root, "cam-big", mb)),
             (f"verified swap-back {big} (read-back BLAKE2b)", ["cam-big"], 4, "hash",
              lambda: _big(spare_root, "cam-big", mb))]
    if small:
        cases.append((f"swap-back {small}x4 KiB", small_cams, 8, "size",
                      lambda: len(build_tree(spare_root, "video", small, size=4096, cameras=4))))
    seconds: dict[str, float] = {}
    for case, cams, conns, verify, build in cases:
        shutil.rmtree(spare_root / "video", ignore_errors=True)
        shutil.rmtree(home_root / "video", ignore_errors=True)
        files = build()
        t_copy = _run(["rclone", "copy", "--transfers", str(conns), "--checkers", "8", "SRC:DATAD/video",
                       "DST:DATAD/video"], env)
        if verify == "hash":   # the peer reads both sides again; we read the source once and the copy once
            t_check = _run(["rclone", "check", "--download", "--checkers", str(conns), "SRC:DATAD/video",
                            "DST:DATAD/video"], env)
            shutil.rmtree(home_root / "video")
            (home_root / "video").mkdir()
            peer, peer_text, peer_name = t_copy + t_check, (f"rclone copy {t_copy:.1f}s + check --download "
                                                            f"{t_check:.1f}s"), "rclone copy + check --download"
        else:
            t_del = _run(["rclone", "delete", "--rmdirs", "--checkers", "8", "SRC:DATAD/video"], env)
            _move_back(home_root, spare_root)
            peer, peer_text, peer_name = t_copy + t_del, f"rclone copy {t_copy:.1f}s + delete {t_del:.1f}s", \
                "rclone copy + delete"
        _failover(cams)
        retries = _RetryCounter()
        client_log = logging.getLogger("prefect.client")
        level = client_log.level
        client_log.addFilter(retries)
        client_log.setLevel(logging.DEBUG)
        t0 = time.perf_counter()
        try:
            result = swap_back(SwapBackParams(cameras=cams, verify=verify, connections=conns, notify=False))
        finally:
            ours = time.perf_counter() - t0
            client_log.removeFilter(retries)
            client_log.setLevel(level)
        assert result["state"] == "done" and result["copied"] == files, result
        left = [p for p in (spare_root / "video").rglob("*") if p.is_file()] if (spare_root / "video").exists() else []
        assert not left, f"{len(left)} source files left"
        seconds[f"{verify} {cams}"] = ours
        extra = ""
        if verify == "hash" and f"size {cams}" in seconds:
            extra = f"; read-back costs {ours / seconds[f'size {cams}']:.2f}x our verify=size run"
        report.row(case, ours, peer_name, peer,
                   f"{files} files; {peer_text}; ours = whole flow (gate, plan, copy, verify, audit, delete), "
                   f"{conns} connections, verify={verify}, unsigned{extra}; "
                   f"Prefect API 503 retries in our flow: {retries.count} ({retries.seconds:.1f} s asleep)")
    dispose_engines()

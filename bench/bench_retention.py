"""Retention sweep benchmarks: ours (list, plan with pandas, audit to SQLite, delete, prune) vs find / rclone.

Two identical footage trees per case, same run: ours sweeps one, the peer deletes by age on the other.
The trees hold ``FK_BENCH_RET_DAYS`` (20) days of 10 cameras, file mtimes = the names' timestamps (the
peers need mtimes; ours reads the age from the name); the rule keeps ``FK_BENCH_RET_KEEP`` (12) days.

* local: ``FK_BENCH_RET_LOCAL_FILES`` (200000) files vs ``find DIR -type f -mmin +N -delete``;
* Samba: ``FK_BENCH_RET_SMB_FILES`` (50000) files on a loopback smbd (127.0.0.15, server signing
  mandatory, so both clients sign) vs ``rclone delete --min-age Nd`` (smb remote from env vars).
``FK_BENCH_RET_SKIP`` = comma list of ``local,smb``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.peers import rclone_env  # noqa: E402
from farmkeeper import retention as core  # noqa: E402
from farmkeeper.db import dispose_engines, make_engine, migrate, session_scope  # noqa: E402
from farmkeeper.models import Camera, FarmSettings, StorageSettings  # noqa: E402
from farmkeeper.storage import VolumeAccess, open_volume  # noqa: E402
from tests.fixtures.samba import SambaFarm  # noqa: E402

CAMERAS = 10


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def build_tree(root: Path, files: int, days: int, now: datetime) -> int:
    """``files`` layout files spread evenly over ``days`` days and ``CAMERAS`` cameras; mtime = name time."""
    per_cam = max(1, files // CAMERAS)
    step = timedelta(days=days) / per_cam
    made = 0
    for cam in range(CAMERAS):
        for i in range(per_cam):
            t = now - timedelta(days=days) + i * step
            t = t.replace(microsecond=0)
            d = root / f"video/cam-{cam:02d}/0/{t:%Y-%m-%d}/{t:%H}"
            rel = d / f"{t:%Y%m%dT%H%M%S}Z.mkv"
            try:
                fd = os.open(rel, os.O_WRONLY | os.O_CREAT, 0o644)
            except FileNotFoundError:
                d.mkdir(parents=True, exist_ok=True)
                fd = os.open(rel, os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, b"x" * 100)
            os.close(fd)
            ts = t.timestamp()
            os.utime(rel, (ts, ts))
            made += 1
    return made


def _policy(keep: int) -> core.RetentionPolicy:
    storage = StorageSettings(limit_storage_days=True, default_max_storage_days=keep)
    cams = [Camera(id=f"cam-{i:02d}", streams=1, declared_home="r", home="r") for i in range(CAMERAS)]
    return core.build_policy(storage, FarmSettings(), cams)


def sweep(access: VolumeAccess, prefer: str, keep: int, url: str) -> tuple[int, dict[str, float]]:
    """One retention sweep of a volume as the task does it (lease and flow aside)."""
    engine = make_engine(url)
    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    with open_volume(access, prefer=prefer) as volume:  # type: ignore[arg-type]
        space = volume.space()
        listing = core.read_listing(volume.walk())
        phases["list"] = time.perf_counter() - t0
        plan = core.plan_volume(listing, _policy(keep), space=space, now=time.time(), force=True,
                                server=access.server, drive=access.drive)
        phases["plan"] = time.perf_counter() - t0 - phases["list"]
        done = core.execute_plan(volume, plan, sessions=lambda: session_scope(engine), run_id="bench")
        phases["delete"] = time.perf_counter() - t0 - phases["list"] - phases["plan"]
        with session_scope(engine) as session:
            core.record_sweep(session, plan, volume.space())
    engine.dispose()
    return done.files, phases


def _run(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    result = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {result.stderr[-500:]}")
    return time.perf_counter() - t0


def _count(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def run(report: Any) -> None:
    skip = set(filter(None, os.environ.get("FK_BENCH_RET_SKIP", "").split(",")))
    days, keep = _env("FK_BENCH_RET_DAYS", 20), _env("FK_BENCH_RET_KEEP", 12)
    base = Path(os.environ.get("FK_BENCH_DIR") or tempfile.mkdtemp(prefix="fk-bench-ret-", dir="/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{base / 'audit.db'}"
    migrate(url)
    dispose_engines()
    now = datetime.now(UTC)
    minutes = keep * 24 * 60
    try:
        if "local" not in skip:
            n = _env("FK_BENCH_RET_LOCAL_FILES", 200_000)
            a, b = base / "local-a", base / "local-b"
            build_tree(a, n, days, now)
            build_tree(b, n, days, now)
            peer = _run(["find", str(b), "-type", "f", "-mmin", f"+{minutes}", "-delete"])
            ours, (deleted, phases) = _timed(lambda: sweep(VolumeAccess(server="bench", drive="D",
                                                                        local_path=str(a)), "local", keep, url))
            left_a, left_b = _count(a), _count(b)
            note = (f"{deleted} deleted + audited + folders pruned; list {phases['list']:.2f}s, plan "
                    f"{phases['plan']:.2f}s, audit+delete+prune {phases['delete']:.2f}s; left {left_a} vs {left_b}")
            report.row(f"sweep {n} local files", ours, "find -mmin +N -delete", peer, note)
            prune = _run(["find", str(b), "-mindepth", "1", "-type", "d", "-empty", "-delete"])
            report.row(f"sweep {n} local files", ours, "find -delete, then find -type d -empty -delete",
                       peer + prune, "peer also removes the emptied folders")
        if "smb" not in skip:
            n = _env("FK_BENCH_RET_SMB_FILES", 50_000)
            farm = SambaFarm(1, root=base / "samba", first_host=15)
            farm.servers[0].extra_global["server signing"] = "mandatory"
            farm.start()
            try:
                server = farm.servers[0]
                build_tree(server.share_path("DATAD"), n, days, now)
                build_tree(server.share_path("DATAE"), n, days, now)
                env = rclone_env({"X": server})
                peer = _run(["rclone", "delete", "--min-age", f"{keep}d", "--checkers", "8", "X:DATAE/video"], env)
                ours, (deleted, phases) = _timed(lambda: sweep(server.access("D"), "smb", keep, url))
                left_a, left_b = _count(server.share_path("DATAD")), _count(server.share_path("DATAE"))
                report.row(f"sweep {n} files over SMB", ours, "rclone delete --min-age", peer,
                           f"{deleted} deleted + audited + folders pruned; list {phases['list']:.2f}s, plan "
                           f"{phases['plan']:.2f}s, audit+delete {phases['delete']:.2f}s; left {left_a} vs "
                           f"{left_b}; both sign")
            finally:
                farm.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out

"""Ownership count benchmark: ``recompute-ownership``'s counting vs ``rclone size``, same shares, same run.

Three Samba servers on 127.0.0.70-72 (the test fixture's ``SambaFarm``, ``server signing = mandatory``
so every client signs) hold ``FK_BENCH_OWN_FILES`` footage files each (default 100000, so 300k together),
built directly in the shares' folders (under ``FK_BENCH_DIR``, default a tmpfs folder in /dev/shm).
Ours: ``farmkeeper.ownership.count_footage`` over SMB on all six volumes (DATAD with the footage,
DATAE empty) at once, then the per-camera totals and the home decisions.
Peer: three ``rclone size`` (smb remotes from ``RCLONE_CONFIG_*`` env vars) run in parallel.

    .venv/bin/python -m bench ownership
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.peers import rclone_env  # noqa: E402
from farmkeeper.ownership import count_footage, decide_home  # noqa: E402
from farmkeeper.volumes import ServerVolume  # noqa: E402
from tests.fixtures.samba import SambaFarm  # noqa: E402


def build_tree(root: Path, files: int, cameras: int = 20, per_hour: int = 60) -> int:
    """``files`` video files in the layout: ``cameras`` cameras, 24 hour folders a day, ``per_hour`` each."""
    n, day = 0, 1
    while n < files:
        for cam in range(cameras):
            for hour in range(24):
                d = root / f"video/cam-{cam:02d}/0/2024-03-{day:02d}/{hour:02d}"
                d.mkdir(parents=True, exist_ok=True)
                for i in range(min(per_hour, files - n)):
                    os.close(os.open(d / f"202403{day:02d}T{hour:02d}{i // 60:02d}{i % 60:02d}Z.mkv",
                                     os.O_WRONLY | os.O_CREAT, 0o644))
                n += min(per_hour, files - n)
                if n >= files:
                    return n
        day += 1
    return n


def _rclone_sizes(farm: SambaFarm, env: dict[str, str]) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["rclone", "size", "--json", f"S{i}:DATAD/video"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(len(farm.servers))]
    outs = [p.communicate() for p in procs]
    elapsed = time.perf_counter() - t0
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"rclone size failed: {err[-500:]}")
    return elapsed, [o for o, _ in outs]


def run(report: Any) -> None:
    per_server = int(os.environ.get("FK_BENCH_OWN_FILES", 100_000))
    # tmpfs by default: creating 300k files on this machine's disk takes minutes (both contenders read the same)
    scratch = "/dev/shm" if os.path.isdir("/dev/shm") else None
    base = Path(os.environ.get("FK_BENCH_DIR") or tempfile.mkdtemp(prefix="fk-bench-own-", dir=scratch))
    farm = SambaFarm(3, root=base / "samba", first_host=70)
    for server in farm.servers:
        server.extra_global["server signing"] = "mandatory"
    farm.start()
    try:
        t0 = time.perf_counter()
        for server in farm.servers:
            build_tree(server.share_path("DATAD"), per_server)
        print(f"[ownership] built {3 * per_server} files in {time.perf_counter() - t0:.1f}s", flush=True)
        volumes = [ServerVolume(s.host, d, s.access(d)) for s in farm.servers for d in ("D", "E")]

        def ours() -> tuple[float, int]:
            t = time.perf_counter()
            result = count_footage(volumes, prefer="smb")
            assert not result.errors, result.errors
            totals = result.totals()
            for cam, per in totals.items():
                decide_home(cam, farm.servers[0].host, per, margin=0.1)
            return time.perf_counter() - t, result.files

        env = rclone_env({f"S{i}": s for i, s in enumerate(farm.servers)})
        _rclone_sizes(farm, env)  # warm the server side (dentry cache) for both contenders
        ours_s, files = ours()
        peer_s, outs = _rclone_sizes(farm, env)
        ours_s2, _ = ours()
        peer_s2, _ = _rclone_sizes(farm, env)
        import json

        peer_files = sum(json.loads(o)["count"] for o in outs)
        assert files == peer_files == 3 * per_server, (files, peer_files)
        local = [ServerVolume(s.host, "D", s.local_access("D")) for s in farm.servers]
        t = time.perf_counter()
        count_footage(local, prefer="local")
        local_s = time.perf_counter() - t
        report.row(f"ownership count 3 servers x {per_server} files over SMB", min(ours_s, ours_s2),
                   "rclone size x3 parallel", min(peer_s, peer_s2),
                   f"{files} files, 6 volumes, totals+decisions included; signed; runs: ours {ours_s:.2f}/"
                   f"{ours_s2:.2f}s, rclone {peer_s:.2f}/{peer_s2:.2f}s; local backend {local_s:.2f}s")
    finally:
        farm.close()
        shutil.rmtree(base, ignore_errors=True)

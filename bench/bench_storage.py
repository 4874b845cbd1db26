"""Storage layer benchmarks: ours vs rclone / smbclient / GNU find, same trees, same run.

Two Samba servers on 127.0.0.12 and 127.0.0.13 (the test fixture's ``SambaFarm``) with
``server signing = mandatory``, so every SMB client signs (equal security). Trees are built directly
in the shares' local folders. Sizes scale with env vars (defaults = the issue's targets):

``FK_BENCH_WALK_FILES`` (100000), ``FK_BENCH_DELETE_FILES`` (20000), ``FK_BENCH_COPY_MB`` (1024, as 64 MiB
files), ``FK_BENCH_SMALL_FILES`` (20000, 4 KiB each), ``FK_BENCH_LOCAL_FILES`` (200000),
``FK_BENCH_RSS_FILES`` (1000000; 0 skips), ``FK_BENCH_SKIP`` (comma list of: walk,delete,copy,small,local,rss,
signing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.peers import rclone_env  # noqa: E402
from farmkeeper.storage import CopyItem, copy_files, open_volume  # noqa: E402
from tests.fixtures.samba import SambaFarm  # noqa: E402


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _run(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    result = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {result.stderr[-500:]}")
    return elapsed


def build_tree(root: Path, prefix: str, files: int, size: int = 0, per_hour: int = 100, cameras: int = 10) -> list[str]:
    """``files`` footage files under ``root/prefix`` (video/<cam>/0/<day>/<hour>/<stamp>.mkv layout)."""
    rels: list[str] = []
    payload = os.urandom(size) if size else b""
    n = 0
    day = 1
    while n < files:
        for cam in range(cameras):
            for hour in range(24):
                d = f"{prefix}/cam-{cam:02d}/0/2024-03-{day:02d}/{hour:02d}"
                (root / d).mkdir(parents=True, exist_ok=True)
                for i in range(min(per_hour, files - n)):
                    rel = f"{d}/202403{day:02d}T{hour:02d}{i // 60:02d}{i % 60:02d}Z.mkv"
                    fd = os.open(root / rel, os.O_WRONLY | os.O_CREAT, 0o644)
                    if payload:
                        os.write(fd, payload)
                    os.close(fd)
                    rels.append(rel)
                n = len(rels)
                if n >= files:
                    return rels
        day += 1
    return rels


def run(report: Any) -> None:
    skip = set(filter(None, os.environ.get("FK_BENCH_SKIP", "").split(",")))
    base = Path(os.environ.get("FK_BENCH_DIR") or tempfile.mkdtemp(prefix="fk-bench-", dir="/var/tmp"))
    farm = SambaFarm(2, root=base / "samba", first_host=12)
    for server in farm.servers:
        server.extra_global["server signing"] = "mandatory"
    farm.start()
    try:
        _bench(report, farm, base, skip)
    finally:
        farm.close()
        shutil.rmtree(base, ignore_errors=True)


def _bench(report: Any, farm: SambaFarm, base: Path, skip: set[str]) -> None:
    a, b = farm.servers
    a_root, _b_root = a.share_path("DATAD"), b.share_path("DATAD")
    env = rclone_env({"SRC": farm.servers[0], "DST": farm.servers[1]})
    user = f"{a.username}%{a.password}"
    note_sign = "all sides sign (server signing = mandatory)"

    if "walk" not in skip:
        n = _env("FK_BENCH_WALK_FILES", 100_000)
        build_tree(a_root, "video", n)
        peer = _run(["rclone", "size", "SRC:DATAD/video"], env)
        ours, total = _timed(lambda: _walk_smb(a.access("D"), "video"))
        report.row(f"walk {n} files over SMB", ours, "rclone size", peer, f"{total} files; {note_sign}")
        peer2 = _run(["smbclient", f"//{a.host}/DATAD", "-U", user, "-c", "recurse; ls video"])
        report.row(f"walk {n} files over SMB", ours, "smbclient recurse;ls", peer2, note_sign)
        ours_c, _ = _timed(lambda: _count_smb(a.access("D"), "video"))
        report.row(f"count {n} files over SMB", ours_c, "rclone size", peer, "count() = footage per camera/day")

    if "delete" not in skip:
        n = _env("FK_BENCH_DELETE_FILES", 20_000)
        build_tree(a_root, "video/delA", n, cameras=4)
        build_tree(a_root, "video/delB", n, cameras=4)
        peer = _run(["rclone", "delete", "--checkers", "8", "SRC:DATAD/video/delB"], env)

        def ours_delete() -> int:
            with open_volume(a.access("D")) as vol:
                res = vol.delete_files([e.relpath for e in vol.walk("video/delA")])
                return res.deleted
        ours, deleted = _timed(ours_delete)
        report.row(f"delete {n} files over SMB", ours, "rclone delete --checkers 8", peer,
                   f"ours = list + delete + prune folders ({deleted} deleted); {note_sign}")

    # rclone 1.60 (go-smb2) fails writes with "signing required" when the server mandates signing, so the
    # copy benchmarks run with server signing = auto: rclone does not sign, ours is timed signed and unsigned.
    for server in farm.servers:
        server.extra_global["server signing"] = "auto"
        server.restart()
    note_copy = "rclone unsigned"

    if "copy" not in skip:
        mb = _env("FK_BENCH_COPY_MB", 1024)
        count = max(1, mb // 64)
        block = os.urandom(1 << 20)
        for i in range(count):
            path = a_root / "big" / f"f{i:03d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                for j in range(64):
                    f.write(block[j:] + block[:j])
        _copy_rows(report, farm, env, "big", f"copy {count}x64 MiB share->share", note_copy, connections=4)

    if "small" not in skip:
        n = _env("FK_BENCH_SMALL_FILES", 20_000)
        build_tree(a_root, "small", n, size=4096, cameras=4)
        _copy_rows(report, farm, env, "small", f"copy {n}x4 KiB share->share", note_copy, connections=8)

    if "local" not in skip:
        n = _env("FK_BENCH_LOCAL_FILES", 200_000)
        local = base / "local"
        local.mkdir(exist_ok=True)
        build_tree(local, "video", n)
        peer = _run(["find", str(local / "video"), "-type", "f", "-printf", "%s\n"])
        vol = open_volume(_local_access(local))
        ours, total = _timed(lambda: sum(1 for _ in vol.walk("video")))
        report.row(f"local walk {n} files (with sizes)", ours, "find -type f -printf %s", peer, f"{total} files")
        peer = _run(["find", str(local / "video"), "-type", "f", "-delete"])
        shutil.rmtree(local / "video")
        build_tree(local, "video", n)
        ours, res = _timed(lambda: vol.delete_files([f"{d}/{n}" for d, names in vol.list_files_by_dir("video")
                                                     for n in names], prune_dirs=False))
        report.row(f"local walk+delete {n} files", ours, "find -type f -delete", peer, f"{res.deleted} deleted")
        shutil.rmtree(local, ignore_errors=True)

    if "rss" not in skip and _env("FK_BENCH_RSS_FILES", 1_000_000):
        n = _env("FK_BENCH_RSS_FILES", 1_000_000)
        rss_dir = base / "rss"
        build_tree(rss_dir, "video", n, per_hour=1000)
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import resource;"
                "from farmkeeper.storage import open_volume, VolumeAccess;"
                f"v = open_volume(VolumeAccess('bench', 'D', local_path={str(rss_dir)!r}));"
                "n = sum(1 for _ in v.walk()); c = v.count();"
                "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1];"
                "print(n, hwm)")
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        report.row(f"walk+count {n} files, peak RSS", time.perf_counter() - t0, "", None,
                   f"local backend; {out[0]} entries, max RSS {int(out[1]) / 1024:.0f} MiB (target < 150)")
        shutil.rmtree(rss_dir, ignore_errors=True)

    if "signing" not in skip and "walk" not in skip:
        for sign in (True, False):
            ours, _ = _timed(lambda s=sign: _walk_smb(a.access("D", require_signing=s), "video"))
            report.row(f"walk {_env('FK_BENCH_WALK_FILES', 100_000)} files, ours signing={'on' if sign else 'off'}",
                       ours, "rclone size", _run(["rclone", "size", "SRC:DATAD/video"], env),
                       "server signing = auto: rclone does not sign here" + ("" if sign else "; equal security"))


def _local_access(path: Path) -> Any:
    from farmkeeper.storage import VolumeAccess

    return VolumeAccess("bench", "D", local_path=str(path))


def _walk_smb(access: Any, prefix: str) -> int:
    with open_volume(access) as vol:
        return sum(1 for _ in vol.walk(prefix))


def _count_smb(access: Any, prefix: str) -> int:
    with open_volume(access) as vol:
        return sum(vol.count(prefix).values())


def _copy_rows(report: Any, farm: SambaFarm, env: dict[str, str], folder: str, case: str, note: str,
               connections: int) -> None:
    a, b = farm.servers
    b_root = b.share_path("DATAD")
    best = None
    for transfers in (4, 8):
        shutil.rmtree(b_root / f"{folder}_r", ignore_errors=True)
        t = _run(["rclone", "copy", "--transfers", str(transfers), "--checkers", "8",
                  f"SRC:DATAD/{folder}", f"DST:DATAD/{folder}_r"], env)
        if best is None or t < best[1]:
            best = (transfers, t)
        report.row(f"{case} (rclone --transfers {transfers})", None, f"rclone --transfers {transfers}", t, note)
    shutil.rmtree(b_root / f"{folder}_r", ignore_errors=True)

    for sign in (False, True):
        def ours(sign: bool = sign) -> int:
            with open_volume(a.access("D", require_signing=sign)) as src, \
                    open_volume(b.access("D", require_signing=sign)) as dst:
                items = [CopyItem(e.relpath, e.size, e.mtime) for e in src.walk(folder)]
                rep = copy_files(src, dst, items, connections=connections)
                return rep.count("copied")
        t, copied = _timed(ours)
        assert best is not None
        report.row(f"{case}, ours signing={'on' if sign else 'off'}", t, f"rclone --transfers {best[0]} (best)",
                   best[1], f"ours: {connections} connections, {copied} copied, list+copy+verify; {note}")
        shutil.rmtree(b_root / folder, ignore_errors=True)

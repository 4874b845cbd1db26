"""Start the simulated farm: one OS process per server, pid files in the state dir."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from farmkeeper.errors import InventoryError
from farmkeeper.farmfile import load_farm_file
from farmkeeper.sim.recorder import ServerSim, SimOptions

logger = logging.getLogger(__name__)


def pid_file(state_dir: str | os.PathLike[str], server: str) -> Path:
    return Path(state_dir) / f"{server}.pid"


def read_pid(state_dir: str | os.PathLike[str], server: str) -> int | None:
    try:
        return int(pid_file(state_dir, server).read_text().strip())
    except (OSError, ValueError):
        return None


def _server_health(farm_file: Path, server: str) -> str:
    spec = load_farm_file(farm_file)
    for srv in spec.servers:
        if srv.name == server:
            return srv.health
    raise InventoryError(f"{farm_file}: no server {server!r} (servers: {', '.join(s.name for s in spec.servers)})")


def run_server(farm_file: Path, server: str, options: SimOptions) -> None:
    """Run one simulated server in this process until SIGTERM/SIGINT."""
    sim = ServerSim(server, _server_health(farm_file, server), options)
    options.state_dir.mkdir(parents=True, exist_ok=True)
    pid_path = pid_file(options.state_dir, server)
    pid_path.write_text(str(os.getpid()))

    def _stop(signum: int, frame: FrameType | None) -> None:
        sim.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        sim.run()
    finally:
        if read_pid(options.state_dir, server) == os.getpid():
            pid_path.unlink(missing_ok=True)


def _server_command(farm_file: Path, server: str, options: SimOptions) -> list[str]:
    return [sys.executable, "-m", "farmkeeper.sim", str(farm_file), server, str(options.state_dir),
            str(options.segment_s), ",".join(str(b) for b in options.bitrates), options.database_url]


def start_farm(farm_file: Path, options: SimOptions, servers: Sequence[str] | None = None,
               wait_ready_s: float = 10.0) -> dict[str, subprocess.Popen[bytes]]:
    """Spawn one process per server (all of the farm file's, or ``servers``); returns them by name.

    Waits until each has written its pid file. The caller stops them (terminate, then wait).
    """
    names = list(servers) if servers else [s.name for s in load_farm_file(farm_file).servers]
    options.state_dir.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name in names:
        pid_file(options.state_dir, name).unlink(missing_ok=True)
        procs[name] = subprocess.Popen(_server_command(farm_file, name, options), start_new_session=True)
    deadline = time.monotonic() + wait_ready_s
    for name, proc in procs.items():
        while read_pid(options.state_dir, name) != proc.pid:
            if proc.poll() is not None:
                raise InventoryError(f"simulated server {name} exited with code {proc.returncode}")
            if time.monotonic() > deadline:
                raise InventoryError(f"simulated server {name} did not start within {wait_ready_s:g} s")
            time.sleep(0.05)
    return procs


def run_farm(farm_file: Path, options: SimOptions) -> int:
    """Start every server as a child process and wait; SIGTERM/SIGINT stops them all."""
    procs = start_farm(farm_file, options)
    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    (options.state_dir / "farm.pid").write_text(str(os.getpid()))
    alive = set(procs)
    try:
        while alive and not stopping:
            for name in sorted(alive):
                code = procs[name].poll()
                if code is not None:
                    logger.warning("simulated server %s (pid %d) exited with code %s", name, procs[name].pid, code)
                    alive.discard(name)
            time.sleep(0.2)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        (options.state_dir / "farm.pid").unlink(missing_ok=True)
    return 0


def child_main(argv: list[str]) -> None:
    """Entry of one server process (``python -m farmkeeper.sim FARM SERVER STATE SEGMENT RATES URL``)."""
    farm_file, server, state_dir, segment, bitrates, url = argv
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s sim[{server}] %(levelname)s %(message)s")
    options = SimOptions(database_url=url, state_dir=Path(state_dir), segment_s=float(segment),
                         bitrates=tuple(int(b) for b in bitrates.split(",")))
    run_server(Path(farm_file), server, options)

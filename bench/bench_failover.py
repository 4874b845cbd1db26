"""Failover benchmarks.

* detection and failover latency with the simulator: a 3-server farm (down_after 5 s, health
  interval 1 s), the health check watching in its own process (``farmkeeper run health-check
  --watch``), 5 kills of a primary; time from the kill to ``down`` and to its cameras recorded
  elsewhere (median, max);
* a 200-server / 10,000-camera SQLite inventory: one health sweep probing 200 local listeners
  and recording the results; one failover of a 100-camera server.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

KILLS = 5
DOWN_AFTER = 5.0


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait(check: Any, timeout: float, every: float = 0.05) -> float | None:
    """Seconds until ``check()`` is true (None on timeout)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except Exception:  # noqa: BLE001 - the database may be busy; poll again
            pass
        time.sleep(every)
    return None


def bench_latency(report: Any, root: Path) -> None:
    import sqlalchemy as sa
    from sqlmodel import Session

    from farmkeeper import inventory
    from farmkeeper.db import dispose_engines, ensure_schema, get_engine, session_scope
    from farmkeeper.farmfile import apply_farm_file, parse_farm_file
    from farmkeeper.models import Role, ServerState
    from farmkeeper.sim import SimOptions, read_pid, start_farm

    url = f"sqlite:///{root / 'latency.db'}"
    os.environ["FARMKEEPER_DATABASE_URL"] = url
    servers = []
    for i, (name, role) in enumerate([("p1", "primary"), ("p2", "primary"), ("r1", "redundant")]):
        host = f"127.0.0.{50 + i}"
        (root / name).mkdir()
        servers.append({"name": name, "host": host, "role": role, "master": i == 0, "san_failover_mode": True,
                        "health": f"tcp://{host}:{_free_port(host)}",
                        "volumes": [{"drive": "D", "path": str(root / name)}]})
    farm = {"farm": {"name": "bench", "down_after": f"{DOWN_AFTER:g}s", "health_interval": "1s"},
            "servers": servers,
            "cameras": [{"id": "cam-a", "home": "p1", "streams": 2}, {"id": "cam-b", "home": "p1"},
                        {"id": "cam-c", "home": "p2"}]}
    farm_file = root / "farm.yaml"
    farm_file.write_text(yaml.safe_dump(farm))
    dispose_engines()
    engine = ensure_schema(get_engine())
    with session_scope(engine) as s:
        apply_farm_file(s, parse_farm_file(farm_file.read_text()))
    state_dir = root / "sim"
    options = SimOptions(database_url=url, state_dir=state_dir, segment_s=2.0)
    procs = list(start_farm(farm_file, options).values())
    cli = str(Path(sys.executable).with_name("farmkeeper"))
    watch = subprocess.Popen([cli, "run", "health-check", "--watch", "30m"], env=os.environ | {
        "PREFECT_LOGGING_LEVEL": "WARNING"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)

    reader = sa.create_engine(url)   # plain reads: polling must not take SQLite's write lock

    def server(name: str) -> Any:
        with Session(reader) as s:
            return inventory.get_server(s, name)

    def cams_on(name: str) -> set[str]:
        with Session(reader) as s:
            return {c.id for c in inventory.list_cameras(s, current=name)}

    def files(name: str, cam: str) -> int:
        base = root / name / "video" / cam
        return sum(1 for p in base.rglob("*") if p.is_file()) if base.is_dir() else 0

    detect: list[float] = []
    moved: list[float] = []
    try:
        if _wait(lambda: all(server(n).state == ServerState.up for n in ("p1", "p2", "r1")), 120) is None:
            report.row("detection latency", None, note="health check never saw the farm up")
            return
        for _ in range(KILLS):
            pid = read_pid(state_dir, "p1")
            assert pid is not None
            before = files("r1", "cam-a")
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            t_down = _wait(lambda: server("p1").state == ServerState.down, 30)
            t_moved = _wait(lambda n=before: {"cam-a", "cam-b"} <= cams_on("r1") and files("r1", "cam-a") > n,
                            30 - (time.monotonic() - killed))
            if t_down is not None:
                detect.append(t_down)
            if t_moved is not None:
                moved.append(t_moved + (t_down or 0))
            # restart p1, wait until it is up again, then put its cameras back (what swap-back does)
            restart = subprocess.Popen([cli, "sim", str(farm_file), "--only", "p1", "--state-dir", str(state_dir)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            procs.append(restart)
            _wait(lambda: server("p1").state == ServerState.up, 30)
            with session_scope(engine) as s:
                for cam in inventory.list_cameras(s, home="p1"):
                    cam.current = "p1"
                    s.add(cam)
                p1 = inventory.get_server(s, "p1")
                p1.role = Role.primary
                s.add(p1)
            time.sleep(1.5)
    finally:
        for proc in [watch, *procs]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [watch, *procs]:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        reader.dispose()
        dispose_engines()
    note = f"{len(detect)}/{KILLS} kills; down_after {DOWN_AFTER:g}s, interval 1s"
    if detect:
        report.row("detection latency (median)", statistics.median(detect), note=note)
        report.row("detection latency (max)", max(detect), note=f"deadline down_after + 5 s = {DOWN_AFTER + 5:g}s")
    if moved:
        report.row("kill -> footage on redundant (median)", statistics.median(moved),
                   note="cameras moved and redundant simulator writing")
        report.row("kill -> footage on redundant (max)", max(moved))


def bench_scale(report: Any, root: Path) -> None:
    from sqlmodel import Session

    from farmkeeper import failover, health
    from farmkeeper.db import make_engine, migrate
    from farmkeeper.models import Camera, FarmSettings, Role, Server, ServerState, Volume

    url = f"sqlite:///{root / 'scale.db'}"
    migrate(url)
    engine = make_engine(url)
    listeners = []
    for _ in range(200):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        listeners.append(sock)
    try:
        with Session(engine) as s:
            s.add(FarmSettings(id=1, down_after_s=30, health_interval_s=10))
            for i, sock in enumerate(listeners):
                role = Role.redundant if i >= 180 else Role.primary
                s.add(Server(name=f"s{i:03d}", host="127.0.0.1", role=role, declared_role=role, master=i == 0,
                             health=f"tcp://127.0.0.1:{sock.getsockname()[1]}", state=ServerState.up,
                             max_cameras=200 if role == Role.redundant else None))
                s.add(Volume(server_name=f"s{i:03d}", drive="D"))
            s.flush()
            cam = 0
            for i in range(180):
                n = 100 if i == 0 else (9900 // 179 + (1 if i <= 9900 % 179 else 0))
                for _ in range(n):
                    s.add(Camera(id=f"c{cam:05d}", declared_home=f"s{i:03d}", home=f"s{i:03d}",
                                 current=f"s{i:03d}"))
                    cam += 1
            s.commit()
        with Session(engine) as s:
            targets = health.probe_targets(s)
        started = time.monotonic()
        results = health.probe_all(targets, timeout=health.probe_timeout(10))
        probe_s = time.monotonic() - started
        with Session(engine) as s:
            health.apply_probe_results(s, results, 30)
            s.commit()
        sweep_s = time.monotonic() - started
        ok = sum(r.ok for r in results)
        report.row("health sweep, 200 servers (probe + record)", sweep_s,
                   note=f"{ok}/200 answered; probing alone {probe_s:.3f}s; target < 2 s")
        with Session(engine) as s:
            server = s.get(Server, "s000")
            assert server is not None
            server.state = ServerState.down
            s.add(server)
            s.commit()
        started = time.monotonic()
        with Session(engine) as s:
            result = failover.apply_failover(s, "s000")
            s.commit()
        report.row("failover of 100 cameras (10,000-camera inventory)", time.monotonic() - started,
                   note=f"{len(result.moved)} moved to {len(result.rows() and {m.to_server for m in result.moved})} "
                        "redundant servers; target < 3 s")
    finally:
        for sock in listeners:
            sock.close()
        engine.dispose()


def run(report: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="fk-bench-failover-") as tmp:
        root = Path(tmp)
        (root / "scale").mkdir()
        bench_scale(report, root / "scale")
        (root / "latency").mkdir()
        bench_latency(report, root / "latency")

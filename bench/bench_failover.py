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
        sock.listen(socket.SOMAXCONN)      # never accepted: one connection a sweep stays queued
        listeners.append(sock)
    try:
        with Session(engine) as s:
            s.add(FarmSettings(id=1, down_after_s=30, health_interval_s=10))
            for i, sock in enumerate(listeners):
                role = Role.redundant if i >= 180 else Role.primary
                s.add(Server(name=f"s{i:03d}", host="127.0.0.1", role=role, declared_role=role, master=i == 0,
                             health=f"tcp://127.0.0.1:{sock.getsockname()[1]}", state=ServerState.up,
                             max_cameras=200 if role == Role.redundant else None))
                vol = root / "vol" / f"s{i:03d}" / "D"
                vol.mkdir(parents=True)
                s.add(Volume(server_name=f"s{i:03d}", drive="D", path=str(vol)))
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
        bench_watchdog(report, engine, root, targets)
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


def _max_gap(listener: Any, start: float, end: float) -> float:
    return float(listener.max_gap(start, end))


def bench_blind(report: Any, root: Path) -> None:
    """The longest time without a probe under each fault, measured at a live server's listener.

    One farm (3 servers, down_after 5 s, health_interval 1 s, SQLite), watched by the supervisor of
    ``farmkeeper serve`` (its watcher runs without a Prefect API here: plain mode), notifying a target that
    never answers.
    """
    import sqlite3

    import sqlalchemy as sa
    from sqlmodel import Session

    from deployments.supervisor import WatchSupervisor
    from farmkeeper import inventory
    from farmkeeper.db import dispose_engines, migrate
    from farmkeeper.models import ServerState
    from tests.failover.conftest import apply, build_farm
    from tests.fixtures.listeners import HungTarget, Listener

    url = f"sqlite:///{root / 'blind.db'}"
    os.environ["FARMKEEPER_DATABASE_URL"] = url
    migrate(url)
    hung = HungTarget()
    farm = build_farm(root, [("p1", "primary"), ("p2", "primary"), ("r1", "redundant")],
                      [{"id": "cam-a", "home": "p1"}, {"id": "cam-c", "home": "p2"}], notify=[hung.url],
                      down_after="5s", interval="1s")
    apply(farm)
    dispose_engines()
    listeners = {n: Listener(farm.health(n)) for n in ("p1", "p2", "r1")}
    engine = sa.create_engine(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {
        "FARMKEEPER_DATABASE_URL": url, "PREFECT_HOME": str(root / "prefect")}
    supervisor = WatchSupervisor(env=env, watch_for_s=3600, log_path=root / "watch.log").start()
    standby: subprocess.Popen[bytes] | None = None

    def state(name: str) -> Any:
        with Session(engine) as s:
            return inventory.get_server(s, name).state

    def current(camera: str) -> Any:
        with Session(engine) as s:
            return inventory.get_camera(s, camera).current

    p2 = listeners["p2"]
    try:
        if _wait(lambda: all(state(n) == ServerState.up for n in ("p1", "p2", "r1")), 120) is None:
            report.row("blind time", None, note="the supervised watcher never saw the farm up")
            return
        start = time.monotonic()
        time.sleep(10)
        report.row("blind: none (longest probing gap, 10 s)", _max_gap(p2, start, time.monotonic()),
                   note="health_interval 1 s")

        start = time.monotonic()
        listeners["p1"].close()
        _wait(lambda: current("cam-a") == "r1", 30)
        listeners["p1"] = Listener(farm.health("p1"))
        _wait(lambda: state("p1") == ServerState.up, 30)
        time.sleep(2)
        report.row("blind: hung notification target", _max_gap(p2, start, time.monotonic()),
                   note=f"failover + 3 notifications into a target that never answers ({len(hung.conns)} conns)")

        lock = sqlite3.connect(root / "blind.db", isolation_level=None, timeout=30)
        lock.execute("BEGIN EXCLUSIVE")
        start = time.monotonic()
        time.sleep(5)
        listeners["p1"].close()
        time.sleep(35)
        lock.execute("ROLLBACK")
        lock.close()
        released = time.monotonic()
        report.row("blind: SQLite inventory locked 40 s", _max_gap(p2, start, released),
                   note="longest probing gap during the outage")
        t_down = _wait(lambda: state("p1") == ServerState.down, 30)
        report.row("inventory back -> server killed in the outage down", t_down,
                   note="results held in memory, written at once")
        listeners["p1"] = Listener(farm.health("p1"))
        _wait(lambda: state("p1") == ServerState.up, 30)

        victim = supervisor.pids()[0]
        start = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: any(t > start for t in p2.accepted), 60)
        time.sleep(2)
        report.row("blind: watcher SIGKILLed (supervisor restarts it)", _max_gap(p2, start, time.monotonic()),
                   note="a new process: Python + imports on this machine")

        cli = str(Path(sys.executable).with_name("farmkeeper"))
        standby = subprocess.Popen([cli, "run", "health-check", "--watch", "10m"], env=env,
                                   stdout=(root / "standby.log").open("wb"), stderr=subprocess.STDOUT,
                                   start_new_session=True)
        time.sleep(20)   # started and standing by for the lease
        supervisor._stop.set()                       # no replacement from the supervisor this time
        holder = supervisor.pids()[0]
        start = time.monotonic()
        os.kill(holder, signal.SIGKILL)
        _wait(lambda: any(t > start + 0.01 for t in p2.accepted), 60)
        time.sleep(2)
        report.row("blind: holder SIGKILLed, standby takes the lease", _max_gap(p2, start, time.monotonic()),
                   note="lease ttl 2.5 s (down_after 5 s), standby polls every ttl/4")
    finally:
        supervisor.stop()
        if standby is not None and standby.poll() is None:
            os.killpg(standby.pid, signal.SIGTERM)
            standby.wait(timeout=20)
        for listener in listeners.values():
            listener.close()
        hung.close()
        engine.dispose()
        dispose_engines()


def bench_one_sweep(report: Any, root: Path) -> None:
    """``farmkeeper run health-check`` (one sweep): without a Prefect API vs a flow run on Prefect's ephemeral
    server (what it did before)."""
    from farmkeeper.db import dispose_engines, migrate
    from tests.failover.conftest import apply, build_farm

    url = f"sqlite:///{root / 'one.db'}"
    os.environ["FARMKEEPER_DATABASE_URL"] = url
    migrate(url)
    farm = build_farm(root, [("p1", "primary"), ("r1", "redundant")], [{"id": "cam-a", "home": "p1"}])
    apply(farm)
    dispose_engines()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {
        "FARMKEEPER_DATABASE_URL": url, "PREFECT_HOME": str(root / "prefect")}
    cli = str(Path(sys.executable).with_name("farmkeeper"))
    started = time.monotonic()
    subprocess.run([cli, "run", "health-check"], env=env, capture_output=True, check=True, timeout=300)
    ours = time.monotonic() - started
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "from flows.health_check import health_check; health_check()"],
                   env=env | {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}, capture_output=True,
                   check=True, timeout=300)
    peer = time.monotonic() - started
    report.row("one-sweep CLI (farmkeeper run health-check)", ours, peer="flow on ephemeral server", peer_s=peer,
               note="whole process, imports included")


def _sweep(engine: Any, targets: Any) -> float:
    """One sweep as ``probe`` + ``record_health`` do it: probe, record, master, pending failovers, deadline."""
    from sqlmodel import Session

    from farmkeeper import failover, health, inventory

    started = time.monotonic()
    results = health.probe_all(targets, timeout=health.probe_timeout(10))
    with Session(engine) as s:
        health.apply_probe_results(s, results, 30, stopped_gap_s=health.stopped_gap(10))
        failover.ensure_master(s)
        failover.pending_failovers(s)
        health.next_deadline(inventory.list_servers(s), 30)
        s.commit()
    return time.monotonic() - started


SEGMENT_S = 24          # the farm's time, 2.5x faster than 1-minute segments / stall_after 2 min / 10-s sweeps
STALL_AFTER_S = 2 * SEGMENT_S
TICK_S = SEGMENT_S / 12   # one sweep per tick, alternating: the watchdog sweeps every stall_after / 12
RECORDER_LAG_S = 1.0      # a recorder closes a segment up to 1-2 s after its end (the seconds are whole)


class _Recorders:
    """10,000 recorders writing closed segments of ``SEGMENT_S`` seconds (each camera with its own phase), as
    the clock passes; ``catch_up()`` creates every segment that closed since the last call (``RECORDER_LAG_S``
    after its end at the earliest)."""

    def __init__(self, root: Path, cams: list[tuple[str, str]], back_s: float) -> None:
        self.root = root
        self.cams = [(cam, current, n % SEGMENT_S) for n, (cam, current) in enumerate(cams)]
        self.folders: set[str] = set()
        self.done = int(time.time() - back_s)
        self.files = 0

    def catch_up(self) -> None:
        from datetime import UTC, datetime

        from farmkeeper.layout import video_path

        until = int(time.time() - RECORDER_LAG_S)
        for cam, current, phase in self.cams:
            first = self.done - (self.done - phase) % SEGMENT_S + SEGMENT_S      # next start after ``done``
            for start in range(first, until - SEGMENT_S + 1, SEGMENT_S):       # closed by ``until``
                rel = video_path(cam, 0, datetime.fromtimestamp(start, UTC)).relpath
                path = f"{self.root}/{current}/D/{rel}"
                folder = path.rsplit("/", 1)[0]
                if folder not in self.folders:
                    os.makedirs(folder, exist_ok=True)
                    self.folders.add(folder)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
                self.files += 1
        self.done = until - SEGMENT_S


def bench_watchdog(report: Any, engine: Any, root: Path, targets: Any) -> None:
    """The watchdog's share of a sweep, in steady state: every camera records (closed segments of its own
    phase, written as the clock passes), sweeps alternate with and without the watchdog's steps.

    The farm's time runs 2.5x faster than a real farm's defaults (segments of 24 s instead of 1 minute,
    stall_after 48 s instead of 2 minutes, the watchdog sweeping every 4 s instead of 10 s), so the share of
    cameras due a look per sweep is the real one and a steady state is reached in two minutes.
    """
    from sqlmodel import Session, select

    from farmkeeper.models import Camera, FarmSettings

    with Session(engine) as s:
        farm = s.get(FarmSettings, 1)
        assert farm is not None
        farm.stall_after_s = float(STALL_AFTER_S)
        s.add(farm)
        cams = [(c.id, str(c.current)) for c in s.exec(select(Camera).order_by(Camera.id)).all()]
        s.commit()
    recorders = _Recorders(root / "vol", cams, back_s=STALL_AFTER_S + 3 * SEGMENT_S)
    recorders.catch_up()
    with_all, without_all, looked, watched = _health_check_sweeps(engine, recorders)
    with_s, without_s = _trimmed_mean(with_all), _trimmed_mean(without_all)
    median_ratio = statistics.median(with_all) / statistics.median(without_all)
    report.row("health-check sweep, 200 servers / 10,000 cameras, without the watchdog steps", without_s,
               note="flows.health_check.sweep, every other step (probe, record, failovers, notifications, "
                    f"floors, report), mean of {ROUNDS} sweeps without the {TRIM} fastest and {TRIM} slowest, "
                    "as a watching run sweeps")
    report.row("  + watchdog steps (200 volume probes, newest segment of the cameras due)", with_s,
               peer="without", peer_s=without_s,
               note=f"steady state: {looked} cameras looked at per sweep (mean; {watched} recording), "
                    f"{recorders.files} segments written meanwhile; ratio of the medians {median_ratio:.2f}; "
                    "target ratio <= 1.10")


WATCHDOG_STEPS = ("volumes", "recordings")


ROUNDS = 21      # sweeps with and without the watchdog steps; their times are two-moded (one or two full garbage
TRIM = 2        # collections in a sweep, ~70 ms each), so the mean of the middle ones is taken, not a median that
#                 jumps between the modes


def _trimmed_mean(values: list[float]) -> float:
    middle = sorted(values)[TRIM:len(values) - TRIM] if len(values) > 2 * TRIM else values
    return statistics.fmean(middle)


def _health_check_sweeps(engine: Any, recorders: _Recorders, rounds: int = ROUNDS, warm_s: float = 120.0
                         ) -> tuple[list[float], list[float], int, int]:
    """Seconds of the product's own sweep (``flows.health_check.sweep``, in process, as a watching run sweeps) with
    every step and without the watchdog's steps (each list: ``rounds`` sweeps), alternated one tick apart in the
    same run after ``warm_s`` of the same; the mean number of cameras looked at, and of cameras recording."""
    from contextlib import ExitStack

    from flows import health_check
    from tasks.common import PLAIN, plain_calls

    steps = list(health_check.SWEEP_STEPS)
    without = [step for step in steps if step.name not in WATCHDOG_STEPS]
    assert len(without) == len(steps) - len(WATCHDOG_STEPS), "the watchdog's sweep steps were renamed"
    env = {"FARMKEEPER_DATABASE_URL": str(engine.url),
           "FARMKEEPER_FARM_STATUS_EVERY_S": "3600"}     # farm-status published once (the warm-up), not mid-run
    saved = {name: os.environ.get(name) for name in env}
    times: dict[bool, list[float]] = {True: [], False: []}
    looked: list[int] = []

    def restore() -> None:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    with ExitStack() as stack:
        os.environ.update(env)
        stack.callback(restore)
        stack.callback(lambda: health_check.SWEEP_STEPS.__setitem__(slice(None), steps))
        plain_calls()
        token = PLAIN.set(True)
        stack.callback(PLAIN.reset, token)
        watch = health_check.WatchState.watching()         # as a watching run: its memory, settled after sweep 1
        started = time.monotonic()
        tick = started
        while len(times[True]) < rounds:
            for with_watchdog in (False, True):
                tick += TICK_S
                time.sleep(max(0.0, tick - time.monotonic()))
                recorders.catch_up()          # just before the sweep: what the recorders closed by now
                health_check.SWEEP_STEPS[:] = steps if with_watchdog else without
                began = time.monotonic()
                summary = health_check.sweep(watch)
                seconds = time.monotonic() - began
                if summary["errors"] or summary["down"]:
                    raise RuntimeError(f"bench sweep not clean: {summary['errors']} down={summary['down'][:5]}")
                if with_watchdog and summary["recordings"]["stalled"]:
                    raise RuntimeError(f"bench cameras stalled: {summary['recordings']['stalled'][:5]}")
                if began - started >= warm_s:
                    times[with_watchdog].append(seconds)
                    if with_watchdog:
                        looked.append(summary["recordings"]["checked"])
        memory = watch.recordings
        watched = len(memory.cameras) if memory is not None else 0
    return times[True], times[False], round(statistics.fmean(looked)), watched


def run(report: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="fk-bench-failover-") as tmp:
        root = Path(tmp)
        (root / "scale").mkdir()
        bench_scale(report, root / "scale")
        (root / "latency").mkdir()
        bench_latency(report, root / "latency")
        (root / "one").mkdir()
        bench_one_sweep(report, root / "one")
        (root / "blind").mkdir()
        bench_blind(report, root / "blind")

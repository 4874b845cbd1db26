"""Scale-out: a Prefect server on PostgreSQL, the work pool, `prefect deploy --all` from prefect.yaml, two
`prefect worker` processes, and health-check, failover and swap-back run through them against an inventory
on PostgreSQL. Two health-check watch runs on two workers: the one holding the watch lease sweeps; killing
its worker (and flow-run process), the other sweeps within 15 s and marks the dead run crashed. Every
transition and every camera move is recorded exactly once (no lost or doubled updates).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlmodel import select

from deployments.embedded import local_server
from farmkeeper import inventory
from farmkeeper.db import dispose_engines, ensure_schema, get_engine, migrate, session_scope
from farmkeeper.farmfile import apply_farm_file, parse_farm_file
from farmkeeper.layout import video_path
from farmkeeper.models import CameraState, FailoverEvent, Role, ServerEvent, ServerState
from farmkeeper.sim.samba import SambaFarm
from farmkeeper.watch import lease_holder
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.samba import running
from tests.helpers import descendants, wait_for

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
PASSWORD_ENV = "FK_SCALE_SMB_PASSWORD"


@pytest.fixture
def samba(tmp_path: Path) -> Iterator[SambaFarm]:
    farm = SambaFarm(3, root=tmp_path / "samba", first_host=100, shares=("DATAD",))
    with running(farm):
        yield farm


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def farm_file(samba: SambaFarm, path: Path) -> Path:
    names = ("p1", "p2", "r1")
    servers = []
    for name, server in zip(names, samba.servers, strict=True):
        servers.append({
            "name": name, "host": server.host, "role": "redundant" if name == "r1" else "primary",
            "master": name == "p1", "health": f"tcp://{server.host}:445", "san_failover_mode": True,
            "smb": {"username": server.username, "password_env": PASSWORD_ENV}, "volumes": [{"drive": "D"}],
        })
    data = {
        "farm": {"name": "scale", "down_after": "5s", "health_interval": "1s"},
        "storage": {"default_path": "D:\\Data"},
        "servers": servers,
        "cameras": [{"id": "cam-a", "home": "p1", "streams": 1}, {"id": "cam-b", "home": "p1", "streams": 1},
                    {"id": "cam-usb", "home": "p1", "movable": False}, {"id": "cam-c", "home": "p2"}],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_two_workers_on_postgres(tmp_path: Path, postgres_server: PostgresServer, samba: SambaFarm,
                                 procs: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch) -> None:
    inventory_url = postgres_server.url(postgres_server.create_database())
    prefect_db = postgres_server.create_database()
    prefect_url = f"postgresql+asyncpg://{postgres_server.user}@{postgres_server.host}:{postgres_server.port}/" \
                  f"{prefect_db}"
    monkeypatch.setenv("FARMKEEPER_DATABASE_URL", inventory_url)
    monkeypatch.setenv(PASSWORD_ENV, samba.servers[0].password)
    migrate(inventory_url)
    spec = parse_farm_file(farm_file(samba, tmp_path / "farm.yaml").read_text(), "farm.yaml")
    engine = ensure_schema(get_engine())
    with session_scope(engine) as session:
        apply_farm_file(session, spec)

    with local_server(tmp_path / "prefect", database_url=prefect_url) as api_url:
        env = os.environ | {"PREFECT_API_URL": api_url, "FARMKEEPER_CODE_DIR": str(REPO), "PYTHONPATH": str(REPO),
                            "FARMKEEPER_DATABASE_URL": inventory_url, "PREFECT_WORKER_QUERY_SECONDS": "2"}
        env.pop("PREFECT_HOME", None)
        prefect = [sys.executable, "-m", "prefect"]

        def run(*args: str) -> str:
            out = subprocess.run([*prefect, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, f"prefect {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
            return out.stdout

        run("work-pool", "create", "farmkeeper", "--type", "process")
        run("--no-prompt", "deploy", "--all")

        def worker(name: str) -> None:
            log = (tmp_path / f"{name}.log").open("wb")
            # --limit 1: each worker runs one flow at a time, so the two watch runs land on both workers
            procs.append(subprocess.Popen([*prefect, "worker", "start", "--pool", "farmkeeper", "--name", name,
                                           "--limit", "1"], cwd=REPO, env=env, stdout=log,
                                          stderr=subprocess.STDOUT))

        for name in ("w1", "w2"):
            worker(name)

        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            deployments = {d.name: d for d in client.read_deployments()}
            assert {"health-check", "failover", "swap-back", "retention-sweep", "recompute-ownership",
                    "validate-farm", "move-cameras"} <= set(deployments)

            def start(name: str, params: dict[str, Any]) -> Any:
                return client.create_flow_run_from_deployment(deployments[name].id, parameters={"params": params})

            def final(run_id: Any, timeout: float) -> Any:
                return wait_for(f"flow run {run_id} final",
                                lambda: (lambda s: s if s is not None and s.is_final() else None)(
                                    client.read_flow_run(run_id).state), timeout)

            watches = [start("health-check", {"watch_for": 90}) for _ in range(2)]

            def servers() -> dict[str, Any]:
                with session_scope(engine) as s:
                    return {x.name: x for x in inventory.list_servers(s)}

            def cameras() -> dict[str, Any]:
                with session_scope(engine) as s:
                    return {c.id: c for c in inventory.list_cameras(s)}

            wait_for("both health-check runs running",
                     lambda: all(client.read_flow_run(w.id).state.is_running() for w in watches), 90)
            wait_for("all servers up", lambda: all(s.state == ServerState.up for s in servers().values()), 60)

            # one watch run sweeps (it holds the lease), the other stands by: kill the watching worker
            def lease() -> Any:
                with session_scope(engine) as s:
                    return lease_holder(s)

            held = wait_for("a watch run holds the lease", lambda: (lambda h: h if h and h.flow_run_id else None)(
                lease()), 60)
            run_pid = int(held.holder.split(":")[1])
            lost = next(p for p in procs if run_pid in descendants(p.pid))
            os.kill(run_pid, signal.SIGKILL)
            lost.kill()
            killed = datetime.now(UTC)
            worker("w3")    # the operator replaces the lost worker; the manual runs below land on it
            taken = wait_for("the other worker's watch run sweeps within 15 s",
                             lambda: (lambda h: h if h and h.holder != held.holder else None)(lease()), 15)
            wait_for("the new holder probes", lambda: min(s.probed_at for s in servers().values()) > killed, 60)
            assert taken.flow_run_id != held.flow_run_id
            dead_watch = next(w for w in watches if str(w.id) == held.flow_run_id)
            assert wait_for("the dead watch run marked crashed (its slot freed)",
                            lambda: client.read_flow_run(dead_watch.id).state.is_crashed(), 30)

            samba.servers[0].kill()   # p1 stops answering on 445
            wait_for("p1's movable cameras on r1",
                     lambda: all(cameras()[c].current == "r1" for c in ("cam-a", "cam-b")), 30)
            cams = cameras()
            assert cams["cam-usb"].state == CameraState.offline and cams["cam-c"].current == "p2"

            # footage recorded on r1 while p1 was down
            r1_root = samba.servers[2].share_path("DATAD")
            stamp = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
            written: dict[str, bytes] = {}
            for i in range(6):
                for cam in ("cam-a", "cam-b"):
                    rel = video_path(cam, 0, stamp + timedelta(seconds=10 * i)).relpath
                    data = os.urandom(200_000 + i)
                    (r1_root / rel).parent.mkdir(parents=True, exist_ok=True)
                    (r1_root / rel).write_bytes(data)
                    written[rel] = data

            samba.servers[0].start()
            # still primary: it records its non-movable cam-usb (docs/failover.md, recovered servers)
            wait_for("p1 back up, primary",
                     lambda: (lambda p1: p1.state == ServerState.up and p1.role == Role.primary)(servers()["p1"]),
                     30)
            # on the replacement worker while the watch goes on: a manual failover of p1 (moves nothing twice),
            # then swap-back
            manual = start("failover", {"server": "p1", "force": True})
            manual_state = final(manual.id, 180)
            assert manual_state.is_completed(), manual_state.message
            assert all(cameras()[c].current == "r1" for c in ("cam-a", "cam-b"))
            swap = start("swap-back", {"server": "p1"})
            swap_state = final(swap.id, 240)
            assert swap_state.is_completed(), swap_state.message
            for watch in watches:
                if watch is not dead_watch:
                    assert final(watch.id, 120).is_completed()

            runs = [*watches, manual, swap]
            workers_used = set()
            for name in ("w1", "w2", "w3"):
                text = (tmp_path / f"{name}.log").read_text(errors="replace")
                if any(str(r.id) in text for r in runs):
                    workers_used.add(name)
            assert workers_used == {"w1", "w2", "w3"}, "every worker ran flows of this farm"

    p1_root = samba.servers[0].share_path("DATAD")
    for rel, data in written.items():
        assert hashlib.sha256((p1_root / rel).read_bytes()).digest() == hashlib.sha256(data).digest(), rel
        assert not (r1_root / rel).exists(), f"source {rel} removed after verification"
    cams = cameras()
    assert all(cams[c].current == "p1" for c in ("cam-a", "cam-b"))
    with session_scope(engine) as session:
        events = session.exec(select(FailoverEvent)).all()
        downs = session.exec(select(ServerEvent).where(ServerEvent.server == "p1",
                                                       ServerEvent.kind == "down")).all()
    assert sorted(e.camera_id for e in events) == ["cam-a", "cam-b"], "one failover event per camera"
    assert all(e.ended_at is not None for e in events)
    assert len(downs) == 1, f"p1 went down once, recorded once by two concurrent sweeps: {downs}"
    dispose_engines()

"""End to end: a simulated farm, a real Prefect server, the served health-check deployment; kill a server.

Deadlines are the functional ones (down_after + 5 s); nothing is timed more finely.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from farmkeeper import inventory
from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.models import CameraState, Role, ServerState
from farmkeeper.sim import SimOptions, read_pid, start_farm
from tests.failover.conftest import apply, build_farm
from tests.fixtures.prefect_server import PrefectServer
from tests.fixtures.receivers import HttpReceiver
from tests.helpers import wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DOWN_AFTER = 5.0


def api(server: PrefectServer, path: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(f"{server.api_url}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in reversed(started):
        kill_group(proc)


def footage(root: Path, camera: str) -> list[Path]:
    return [p for p in (root / "video" / camera).rglob("*") if p.is_file()] if (root / "video" / camera).is_dir() \
        else []


def test_kill_a_server_fail_over_and_come_back_redundant(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server: PrefectServer,
        http_receiver: HttpReceiver, procs: list[subprocess.Popen[bytes]]) -> None:
    url = f"sqlite:///{tmp_path / 'inventory.db'}"
    monkeypatch.setenv("FARMKEEPER_DATABASE_URL", url)
    farm = build_farm(tmp_path, [("p1", "primary"), ("p2", "primary"), ("r1", "redundant")], [
        {"id": "cam-a", "home": "p1", "streams": 2},
        {"id": "cam-b", "home": "p1"},
        {"id": "cam-usb", "home": "p1", "movable": False},
        {"id": "cam-c", "home": "p2"},
    ], notify=[http_receiver.url], down_after=f"{DOWN_AFTER:g}s", interval="1s")
    apply(farm)
    engine = ensure_schema(get_engine())
    env = prefect_server.env() | {"FARMKEEPER_DATABASE_URL": url, "PYTHONPATH": str(REPO)}

    state_dir = tmp_path / "sim"
    sims = start_farm(farm.path, SimOptions(database_url=url, state_dir=state_dir, segment_s=2.0))
    procs.extend(sims.values())

    serve = subprocess.Popen([sys.executable, "-m", "flows.health_check", "--every", "60s", "--overlap", "30s",
                              "--name", "e2e"], cwd=REPO, env=env, start_new_session=True,
                             stdout=(tmp_path / "serve.log").open("wb"), stderr=subprocess.STDOUT)
    procs.append(serve)
    deployment = wait_for("health-check deployment registered",
                          lambda: api(prefect_server, "/deployments/filter",
                                      {"deployments": {"name": {"any_": ["e2e"]}}}), 60)
    api(prefect_server, f"/deployments/{deployment[0]['id']}/create_flow_run", {})

    def servers() -> dict[str, Any]:
        with session_scope(engine) as s:
            return {x.name: x for x in inventory.list_servers(s)}

    def cameras() -> dict[str, Any]:
        with session_scope(engine) as s:
            return {c.id: c for c in inventory.list_cameras(s)}

    wait_for("all servers up (the served health check sweeps)",
             lambda: all(s.state == ServerState.up for s in servers().values()), 60)
    assert footage(farm.volumes["p1"], "cam-a"), "p1's simulator records its cameras"

    pid = read_pid(state_dir, "p1")
    assert pid == sims["p1"].pid
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    deadline = DOWN_AFTER + 5

    wait_for("movable cameras of p1 on r1",
             lambda: all(cameras()[c].current == "r1" for c in ("cam-a", "cam-b")),
             deadline - (time.monotonic() - killed))
    wait_for("r1's simulator writes the moved cameras' footage",
             lambda: footage(farm.volumes["r1"], "cam-a") and footage(farm.volumes["r1"], "cam-b"),
             deadline - (time.monotonic() - killed))
    message = http_receiver.wait_for(lambda m: "p1 is down" in m["title"],
                                     timeout=max(0.5, deadline - (time.monotonic() - killed)))
    assert "cam-usb" in message["message"] and "offline" in message["message"]
    cams = cameras()
    assert cams["cam-usb"].current == "p1" and cams["cam-usb"].state == CameraState.offline
    assert cams["cam-c"].current == "p2"
    state = servers()
    assert state["p1"].state == ServerState.down and state["p2"].master

    cli = str(Path(sys.executable).with_name("farmkeeper"))
    restart = subprocess.Popen([cli, "sim", str(farm.path), "--only", "p1", "--state-dir", str(state_dir)],
                               cwd=REPO, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(restart)
    wait_for("p1 back up, still primary (it records its non-movable cam-usb)",
             lambda: (lambda p1: p1.state == ServerState.up and p1.role == Role.primary)(servers()["p1"]), 20)
    assert cameras()["cam-usb"].state == CameraState.recording
    http_receiver.wait_for(lambda m: m["title"] == "p1 recovered", timeout=10)

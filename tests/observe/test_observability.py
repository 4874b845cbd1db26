"""Events, automations, the farm-status artifact and the metrics endpoint, against a real `prefect server start`.

One Prefect server for this module; `farmkeeper serve --metrics-port` serves every deployment on it. A server
stops answering its health probe: the failover's events reach the events API, the shipped automation runs
validate-farm, the farm-status artifact and the metrics endpoint show the server down; it answers again and,
after auto_swap_back_after, the second automation runs swap-back.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from deployments.embedded import free_port
from tests.failover.conftest import apply, build_farm
from tests.fixtures.prefect_server import PrefectServer
from tests.helpers import wait_for, write_footage

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prefect() -> Iterator[PrefectServer]:
    """This module's own server: the automations it ships must not act on other modules' farms."""
    server = PrefectServer().start(timeout=300)   # a busy machine starts it slowly
    yield server
    server.stop()


class Listener:
    """A TCP health endpoint the test opens and closes (``tcp://host:port`` probes connect to it)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        self.address = (host, int(port))
        self.sock: socket.socket | None = None

    def open(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(self.address)
        sock.listen(64)
        sock.settimeout(0.2)
        self.sock = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        """Accept and drop every probe (an unaccepted backlog would fill and refuse them)."""
        while self.sock is sock:
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


def _client(server: PrefectServer) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class _Ctx:
        def __enter__(self) -> Any:
            self.settings = temporary_settings({PREFECT_API_URL: server.api_url})
            self.settings.__enter__()
            self.client = get_client(sync_client=True).__enter__()
            return self.client

        def __exit__(self, *exc: object) -> None:
            self.client.__exit__(*exc)
            self.settings.__exit__(*exc)

    return _Ctx()


def _events(server: PrefectServer, since: datetime) -> list[Any]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.events import read_events

    with temporary_settings({PREFECT_API_URL: server.api_url}):
        return read_events(since)


def _runs_of(server: PrefectServer, deployment: str) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with _client(server) as client:
        return list(client.read_flow_runs(deployment_filter=DeploymentFilter(
            name=DeploymentFilterName(any_=[deployment]))))


def _farm_status(server: PrefectServer) -> Any:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with _client(server) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["farm-status"])),
                                      sort=ArtifactSort.CREATED_DESC, limit=1)
    return found[0] if found else None


def _metrics(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_a_down_server_is_seen_everywhere(tmp_path: Path, prefect: PrefectServer,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'inventory.db'}"
    monkeypatch.setenv("FARMKEEPER_DATABASE_URL", url)
    farm = build_farm(tmp_path, [("p1", "primary"), ("r1", "redundant")], [
        {"id": "cam-a", "home": "p1"}, {"id": "cam-usb", "home": "p1", "movable": False}],
        down_after="5s", interval="1s")
    farm.data["farm"]["auto_swap_back_after"] = "1m"
    farm.path.write_text(yaml.safe_dump(farm.data, sort_keys=False))
    apply(farm)
    from farmkeeper import inventory
    from farmkeeper.db import ensure_schema, get_engine, session_scope

    with session_scope(ensure_schema(get_engine())) as session:   # the farm file's floor is 1 min; the test
        inventory.farm_settings(session).auto_swap_back_after_s = 10.0   # waits Prefect's shortest window
    listeners = {s["name"]: Listener(s["health"]) for s in farm.data["servers"]}
    for listener in listeners.values():
        listener.open()

    metrics_port = free_port()
    env = prefect.env() | {"FARMKEEPER_DATABASE_URL": url, "PYTHONPATH": str(REPO),
                           "FARMKEEPER_HOME": str(tmp_path / "home"), "FARMKEEPER_STORAGE__PREFER": "local",
                           "FARMKEEPER_FARM_STATUS_EVERY_S": "0", "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = tmp_path / "serve.log"
    serve = subprocess.Popen([sys.executable, "-m", "farmkeeper.cli", "serve",
                              "--metrics-port", str(metrics_port)], cwd=REPO, env=env, start_new_session=True,
                             stdout=log.open("wb"), stderr=subprocess.STDOUT)

    def tail() -> str:
        watch = tmp_path / "home" / "watch.log"
        return log.read_text(errors="replace")[-3000:] + "\n--- watch.log\n" + (
            watch.read_text(errors="replace")[-3000:] if watch.exists() else "")

    try:
        from farmkeeper import inventory
        from farmkeeper.db import ensure_schema, get_engine, session_scope

        def servers() -> dict[str, Any]:
            with session_scope(ensure_schema(get_engine())) as s:
                return {x.name: (x.state.value, x.role.value, x.master) for x in inventory.list_servers(s)}

        def automations() -> dict[str, Any]:
            with _client(prefect) as client:
                return {a.name: a for a in client.read_automations() if a.name.startswith("farmkeeper:")}

        shipped = wait_for(f"serve registers the automations\n{tail()}",
                           lambda: (lambda a: a if len(a) == 2 else None)(automations()), 120)
        assert shipped["farmkeeper: server recovered and healthy -> swap-back"].trigger.within == timedelta(
            seconds=10)
        wait_for(f"both servers up\n{tail()}", lambda: all(s[0] == "up" for s in servers().values()), 90)

        since = datetime.now(UTC)
        listeners["p1"].close()
        wait_for(f"p1 down and failed over\n{tail()}", lambda: servers()["p1"][0] == "down", 30)

        # the events of the failover, read back through the events API
        want = {("farmkeeper.server.down", "farmkeeper.server.p1"),
                ("farmkeeper.camera.failed-over", "farmkeeper.camera.cam-a"),
                ("farmkeeper.camera.offline", "farmkeeper.camera.cam-usb"),
                ("farmkeeper.server.master", "farmkeeper.server.r1")}
        events = wait_for("the failover's events", lambda: (lambda ev: ev if want <= {
            (e.event, e.resource.id) for e in ev} else None)(_events(prefect, since)), 30)
        down = next(e for e in events if e.event == "farmkeeper.server.down")
        assert down.payload["redundancy_group"] == ["p1", "r1"] and down.payload["live"] == ["r1"]
        assert down.payload["cameras"] == ["cam-a", "cam-usb"], "emitted before the failover moved cam-a"
        moved = next(e for e in events if e.event == "farmkeeper.camera.failed-over")
        assert moved.payload["from"] == "p1" and moved.payload["to"] == "r1"
        assert {(r.id, r.role) for r in moved.related} >= {("farmkeeper.server.p1", "from"),
                                                           ("farmkeeper.server.r1", "to")}

        # the shipped automation ran validate-farm for the live part of p1's redundancy group
        run = wait_for(f"validate-farm run by the automation\n{tail()}",
                       lambda: next((r for r in _runs_of(prefect, "validate-farm")
                                     if r.state is not None and r.state.is_final()), None), 120)
        assert run.state.is_completed(), run.state
        assert run.parameters["params"]["servers"] == ["r1"]
        assert run.created_by is not None and run.created_by.type == "AUTOMATION", run.created_by

        # the farm-status artifact shows the down server
        artifact = wait_for("farm-status shows p1 down", lambda: (
            lambda a: a if a is not None and "| p1 | **DOWN**" in str(a.data) else None)(_farm_status(prefect)), 20)
        assert "cam-usb | offline" in str(artifact.data)

        # the metrics endpoint reports it
        m = _metrics(metrics_port)
        assert m["farmkeeper_server_up"][(("role", "primary"), ("server", "p1"))] == 0
        assert m["farmkeeper_servers"][(("role", "primary"), ("state", "down"))] == 1
        assert m["farmkeeper_server_master"][(("server", "r1"),)] == 1
        assert m["farmkeeper_failovers_total"][()] == 1
        assert m["farmkeeper_cameras"][(("state", "offline"),)] == 1
        assert m["farmkeeper_health_sweep_duration_seconds_count"][()] >= 3

        # p1 answers again and stays up for auto_swap_back_after: the second automation runs swap-back, which
        # brings home what cam-a recorded on r1 meanwhile (a copy job)
        recorded = write_footage(farm.volumes["r1"], "cam-a", 3, size=4096, start=datetime.now(UTC) - timedelta(
            minutes=5))
        listeners["p1"].open()
        wait_for(f"p1 recovered\n{tail()}", lambda: servers()["p1"][0] == "up", 20)
        try:
            swap = wait_for("swap-back run by the automation",
                            lambda: next((r for r in _runs_of(prefect, "swap-back")
                                          if r.state is not None and r.state.is_final()), None), 300)
        except AssertionError as exc:
            runs = [(r.name, r.state.name if r.state else None, r.parameters) for r in _runs_of(prefect, "swap-back")]
            raise AssertionError(f"{exc}\nswap-back runs: {runs}\n{tail()}") from None
        assert swap.parameters["params"] == {"server": "p1", "auto": True}
        assert swap.state.is_completed(), swap.state
        from farmkeeper.models import Camera

        with session_scope(ensure_schema(get_engine())) as s:
            assert s.get(Camera, "cam-a").current == "p1", "cam-a swapped back home"  # type: ignore[union-attr]
        assert all((farm.volumes["p1"] / rel).is_file() for rel in recorded), "the footage came home"
        wanted = {"farmkeeper.server.recovered", "farmkeeper.copy-job.started", "farmkeeper.copy-job.finished"}
        # events reach the API through the flow run's background emitter: read them until they are all there
        wait_for("the recovery and copy-job events in the events API",
                 lambda: wanted <= {e.event for e in _events(prefect, since)}, 30)
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
        for listener in listeners.values():
            listener.close()


def test_emitting_with_the_api_down_neither_blocks_nor_raises() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks import events

    dead = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings({PREFECT_API_URL: dead}):
        started = time.monotonic()
        results = [events.server_down("p9", error="test"), events.camera_stalled("cam-9", server="p9"),
                   events.copy_job_failed(7, kind="swap-back", target="p9", cameras=["cam-9"], error="x")]
        took = time.monotonic() - started
    assert all(r in (True, False) for r in results)
    assert took < 5, f"emitting to a dead API took {took:.1f} s"

"""The health-check and failover flows on a real (ephemeral) Prefect API, real listeners and receivers."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlmodel import select

from farmkeeper import failover as core
from farmkeeper import inventory
from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.models import CameraState, FailoverEvent, Role, ServerState, utcnow
from farmkeeper.notify import outbox
from flows.failover import FailoverParams, failover
from flows.health_check import HealthCheckParams, health_check
from tests.failover.conftest import Farm
from tests.fixtures.receivers import HttpReceiver, SmtpReceiver

pytestmark = pytest.mark.usefixtures("prefect_api")

CAMERAS = [
    {"id": "cam-a", "home": "p1"},
    {"id": "cam-b", "home": "p1", "streams": 2},
    {"id": "cam-usb", "home": "p1", "movable": False},
    {"id": "cam-c", "home": "p2"},
]
SERVERS = [("p1", "primary"), ("p2", "primary"), ("r1", "redundant")]


class Listeners:
    """Real TCP listeners on the servers' health ports (a live server)."""

    def __init__(self, farm: Farm) -> None:
        self.farm = farm
        self.socks: dict[str, socket.socket] = {}

    def up(self, *servers: str) -> None:
        for name in servers:
            url = urlsplit(self.farm.health(name))
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((url.hostname or "", url.port or 0))
            sock.listen(64)
            self.socks[name] = sock

    def down(self, *servers: str) -> None:
        for name in servers:
            self.socks.pop(name).close()

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()


@pytest.fixture
def farm(make_farm: Callable[..., Farm], http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver) -> Farm:
    return make_farm(SERVERS, CAMERAS, notify=[http_receiver.url, smtp_receiver.url])


@pytest.fixture
def listeners(farm: Farm) -> Iterator[Listeners]:
    ls = Listeners(farm)
    yield ls
    ls.close()


def db() -> Any:
    return session_scope(ensure_schema(get_engine()))


def set_server(name: str, **values: Any) -> None:
    with db() as s:
        server = inventory.get_server(s, name)
        for key, value in values.items():
            setattr(server, key, value)
        server.version += 1
        s.add(server)


def failing_for(seconds: float) -> dict[str, Any]:
    """Health fields of a server whose probes have failed for ``seconds`` (no need to wait in tests)."""
    now = utcnow()
    return {"state": ServerState.up, "failing_since": now - timedelta(seconds=seconds),
            "probed_at": now - timedelta(seconds=1)}


def cameras() -> dict[str, tuple[str | None, CameraState]]:
    with db() as s:
        return {c.id: (c.current, c.state) for c in inventory.list_cameras(s)}


def servers() -> dict[str, Any]:
    with db() as s:
        return {x.name: (x.state, x.role, x.master) for x in inventory.list_servers(s)}


def test_failover_flow_moves_reports_notifies_and_is_idempotent(
        farm: Farm, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver) -> None:
    set_server("p1", state=ServerState.down)
    set_server("r1", state=ServerState.up)
    result = failover(FailoverParams(server="p1"), newly_down=True)
    assert sorted(m["camera"] for m in result["moved"]) == ["cam-a", "cam-b"]
    assert result["offline"] == ["cam-usb"] and result["stranded"] == []
    cams = cameras()
    assert cams["cam-a"] == ("r1", CameraState.recording) and cams["cam-b"][0] == "r1"
    assert cams["cam-usb"] == ("p1", CameraState.offline) and cams["cam-c"][0] == "p2"
    with db() as s:
        events = s.exec(select(FailoverEvent)).all()
    assert sorted((e.camera_id, e.from_server, e.to_server) for e in events) == [
        ("cam-a", "p1", "r1"), ("cam-b", "p1", "r1")]
    assert all(e.ended_at is None and e.started_at is not None for e in events)

    message = http_receiver.wait_for(lambda m: "p1 is down" in m["title"])
    assert "2 cameras moved" in message["title"] and "cam-usb" in message["message"]
    smtp_receiver.wait_for(lambda m: "p1 is down" in str(m["Subject"]))

    again = failover(FailoverParams(server="p1"))
    assert again["moved"] == []
    with db() as s:
        assert len(s.exec(select(FailoverEvent)).all()) == 2


def test_manual_failover_of_a_live_server_needs_force(farm: Farm) -> None:
    set_server("p1", state=ServerState.up)
    set_server("r1", state=ServerState.up)
    assert failover(FailoverParams(server="p1"))["skipped"]
    assert cameras()["cam-a"][0] == "p1"
    forced = failover(FailoverParams(server="p1", force=True, reason="manual"))
    assert len(forced["moved"]) == 2


def test_health_check_detects_down_fails_over_elects_master_and_recovers(
        farm: Farm, listeners: Listeners, http_receiver: HttpReceiver) -> None:
    listeners.up("p1", "p2", "r1")
    health_check(HealthCheckParams())
    assert {n: s[0] for n, s in servers().items()} == {"p1": "up", "p2": "up", "r1": "up"}

    listeners.down("p1")
    set_server("p1", **failing_for(10))
    result = health_check(HealthCheckParams())
    assert ("p1", "down") in result["transitions"]
    state = servers()
    assert state["p1"][0] == ServerState.down and not state["p1"][2]
    assert state["p2"][2], "the master was down: p2 (a live primary) is master now"
    assert cameras()["cam-a"][0] == "r1" and cameras()["cam-usb"] == ("p1", CameraState.offline)
    http_receiver.wait_for(lambda m: "p1 is down" in m["title"])

    # a second sweep while still down moves nothing and reports no new transition
    assert health_check(HealthCheckParams())["transitions"] == []

    listeners.up("p1")
    result = health_check(HealthCheckParams())
    assert ("p1", "recovered") in result["transitions"]
    state = servers()
    assert state["p1"][0] == ServerState.up
    # its movable cameras were failed over, but it still records its non-movable camera: it stays primary
    assert state["p1"][1] == Role.primary
    assert cameras()["cam-usb"] == ("p1", CameraState.recording)
    http_receiver.wait_for(lambda m: m["title"] == "p1 recovered")


def test_recovered_server_without_cameras_becomes_redundant(make_farm: Callable[..., Farm]) -> None:
    farm = make_farm(SERVERS, [c for c in CAMERAS if c["id"] != "cam-usb"])
    ls = Listeners(farm)
    try:
        ls.up("p2", "r1")
        set_server("p1", **failing_for(10))
        health_check(HealthCheckParams())
        assert servers()["p1"][0] == ServerState.down
        ls.up("p1")
        health_check(HealthCheckParams())
        assert servers()["p1"][:2] == (ServerState.up, Role.redundant)
        with db() as s:
            assert core.open_failover_events(s, from_server="p1")
    finally:
        ls.close()


def test_maintenance_suppresses_failover_until_switched_off(farm: Farm, listeners: Listeners,
                                                            http_receiver: HttpReceiver) -> None:
    listeners.up("p2", "r1")
    set_server("p1", maintenance=True, **failing_for(10))
    result = health_check(HealthCheckParams())
    assert ("p1", "down-maintenance") in result["transitions"]
    cams = cameras()
    assert cams["cam-a"] == ("p1", CameraState.offline) and cams["cam-usb"] == ("p1", CameraState.offline)
    http_receiver.wait_for(lambda m: "maintenance" in m["title"])

    set_server("p1", maintenance=False)
    health_check(HealthCheckParams())
    assert cameras()["cam-a"] == ("r1", CameraState.recording)


def test_stranded_cameras_move_when_capacity_appears(make_farm: Callable[..., Farm]) -> None:
    farm = make_farm(SERVERS, CAMERAS, extra_server={"r1": {"max_cameras": 1}})
    ls = Listeners(farm)
    try:
        ls.up("p2", "r1")
        set_server("p1", **failing_for(10))
        result = health_check(HealthCheckParams())
        fo = result["last"]["failovers"][0]
        assert len(fo["moved"]) == 1 and len(fo["stranded"]) == 1
        stranded = fo["stranded"][0]
        assert cameras()[stranded] == ("p1", CameraState.stranded)
        assert health_check(HealthCheckParams())["last"]["failovers"] == [], "no capacity: not retried in vain"
        set_server("r1", max_cameras=5)
        result = health_check(HealthCheckParams())
        assert [m["camera"] for m in result["last"]["failovers"][0]["moved"]] == [stranded]
        assert cameras()[stranded] == ("r1", CameraState.recording)
    finally:
        ls.close()


def test_failing_notification_target_never_fails_the_failover(
        farm: Farm, http_receiver: HttpReceiver) -> None:
    http_receiver.fail_next(100)
    set_server("p1", state=ServerState.down)
    set_server("r1", state=ServerState.up)
    result = failover(FailoverParams(server="p1"), newly_down=True)
    assert len(result["moved"]) == 2
    assert outbox().flush(30), "delivery gives up after its retries"
    assert http_receiver.requests >= 2, "the failing target was retried"


def test_swap_back_due_after_healthy_period(farm: Farm) -> None:
    set_server("p1", state=ServerState.down)
    set_server("r1", state=ServerState.up)
    failover(FailoverParams(server="p1", notify=False))
    set_server("p1", state=ServerState.up, state_changed_at=utcnow() - timedelta(seconds=120))
    with db() as s:
        assert core.swap_back_due(s) == [], "off by default"
        inventory.farm_settings(s).auto_swap_back_after_s = 60
    with db() as s:
        assert core.swap_back_due(s) == ["p1"]
        inventory.record_server_event(s, "p1", "auto-swap-back", started=False)
    with db() as s:
        assert core.swap_back_due(s) == [], "started once per recovery"


def test_segment_closed_rule(tmp_path: Any) -> None:
    root = tmp_path / "share"
    folder = root / "video" / "cam-a" / "0" / "2026-01-01" / "00"
    folder.mkdir(parents=True)
    (folder / "20260101T000000Z.mkv").write_bytes(b"x")
    assert core.segments_closed(root, "cam-a")
    (folder / ".20260101T000002Z.mkv").write_bytes(b"x")
    assert core.open_segments(root, "cam-a") == ["video/cam-a/0/2026-01-01/00/.20260101T000002Z.mkv"]
    assert core.segments_closed(root, "cam-b")


def test_a_watching_run_keeps_what_it_holds_out_of_full_collections_after_its_first_sweep(
        farm: Farm, listeners: Listeners) -> None:
    """``settle_memory``: garbage collected first (a cycle dropped before the sweep is gone, though automatic
    collection is off here), then everything alive frozen; once, not every sweep; never for a one-off sweep."""
    import gc
    import weakref

    from flows.health_check import WatchState, sweep

    class Node:
        me: Any = None

    listeners.up("p1", "p2", "r1")
    gc.disable()
    gc.unfreeze()
    try:
        sweep(WatchState())
        assert gc.get_freeze_count() == 0, "a one-off sweep freezes nothing"
        cycle = Node()
        cycle.me = cycle
        dropped = weakref.ref(cycle)
        del cycle
        watch = WatchState(long_lived=True)
        assert sweep(watch)["recorded"]
        assert dropped() is None, "collected before freezing: garbage is never frozen"
        frozen = gc.get_freeze_count()
        assert frozen > 10_000, "the watcher's modules and inventory view are out of the full passes"
        for _ in range(2):
            sweep(watch)
        assert gc.get_freeze_count() <= frozen, "sweeps 2 and 3 freeze nothing more (frozen objects still die)"
    finally:
        gc.unfreeze()
        gc.enable()

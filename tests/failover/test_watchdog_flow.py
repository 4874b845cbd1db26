"""The watchdog steps inside health-check sweeps: one notification each way, failover of a stalled camera."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import select

from farmkeeper import inventory
from farmkeeper.db import get_engine, session_scope
from farmkeeper.models import CameraState, CameraWatch, FailoverEvent, ServerState, utcnow
from flows.health_check import HealthCheckParams, health_check
from tests.failover.conftest import Farm
from tests.failover.test_flows import Listeners
from tests.failover.test_watchdog import write_segment
from tests.fixtures.receivers import HttpReceiver

pytestmark = pytest.mark.usefixtures("prefect_api")


def db() -> Any:
    return session_scope(get_engine())


@pytest.fixture
def farm(make_farm: Callable[..., Farm], http_receiver: HttpReceiver) -> Farm:
    return make_farm([("p1", "primary"), ("r1", "redundant")],
                     [{"id": "cam-a", "home": "p1", "failover_stalled": True}, {"id": "cam-b", "home": "p1"}],
                     notify=[http_receiver.url])


@pytest.fixture
def listeners(farm: Farm) -> Iterator[Listeners]:
    ls = Listeners(farm)
    ls.up("p1", "r1")
    yield ls
    ls.close()


def watched_since(hours: float) -> None:
    """Both cameras watched on p1 for a while (servers up that long): no waiting for stall_after."""
    past = utcnow() - timedelta(hours=hours)
    with db() as s:
        for name in ("p1", "r1"):
            server = inventory.get_server(s, name)
            server.state, server.state_changed_at, server.last_seen = ServerState.up, past, past
            s.add(server)
        for cam in ("cam-a", "cam-b"):
            s.add(CameraWatch(camera_id=cam, server="p1", since=past))


def sweep_once() -> dict[str, Any]:
    return health_check(HealthCheckParams(max_sweeps=1))["last"]


def titles(receiver: HttpReceiver, word: str) -> list[str]:
    return [t for t in receiver.titles() if word in t]


def test_stalled_camera_notified_once_failed_over_and_resumed_once(
        farm: Farm, listeners: Listeners, http_receiver: HttpReceiver) -> None:
    watched_since(1)
    root = farm.volumes["p1"]
    last = (utcnow() - timedelta(minutes=10)).replace(microsecond=0)
    write_segment(root, "cam-a", last)
    write_segment(root, "cam-b", last)

    summary = sweep_once()
    assert sorted(summary["recordings"]["stalled"]) == ["cam-a", "cam-b"]
    assert summary["recordings"]["moved"] == ["cam-a"]       # failover_stalled: cam-a only
    message = http_receiver.wait_for(lambda m: "cam-b stopped recording on p1" in m["title"])
    assert last.strftime("%Y-%m-%d %H:%M:%S UTC") in message["message"]
    http_receiver.wait_for(lambda m: "camera stalled on p1" in m["title"] and "1 camera moved" in m["title"])
    with db() as s:
        assert inventory.get_camera(s, "cam-a").current == "r1"
        assert inventory.get_camera(s, "cam-b").state == CameraState.stalled
        events = s.exec(select(FailoverEvent)).all()
        assert [(e.camera_id, e.from_server, e.to_server, e.reason) for e in events] == [
            ("cam-a", "p1", "r1", "camera stalled")]

    sweep_once()                                                           # still stalled: nothing new
    write_segment(root, "cam-b", (utcnow() - timedelta(seconds=20)).replace(microsecond=0))
    summary = sweep_once()
    assert summary["recordings"]["resumed"] == ["cam-b"]
    http_receiver.wait_for(lambda m: "cam-b records again on p1" in m["title"])
    sweep_once()
    assert len(titles(http_receiver, "cam-b stopped recording")) == 1
    assert len(titles(http_receiver, "cam-b records again")) == 1
    assert len(titles(http_receiver, "cam-a stopped recording")) == 1
    with db() as s:
        assert inventory.get_camera(s, "cam-b").state == CameraState.recording

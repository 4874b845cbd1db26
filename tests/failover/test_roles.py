"""Server roles: who is redundant after a recovery, primary again after a swap-back, and set by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlmodel import select

from farmkeeper import failover as core
from farmkeeper import inventory, swapback
from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.models import CameraState, Role, ServerEvent, ServerState
from tests.failover.conftest import Farm
from tests.helpers import cli

SERVERS = [("p1", "primary"), ("r1", "redundant")]
CAMERAS = [{"id": "cam-a", "home": "p1"}, {"id": "cam-usb", "home": "p1", "movable": False}]


def db() -> Any:
    return session_scope(ensure_schema(get_engine()))


def role_events(server: str) -> list[dict[str, Any]]:
    with db() as s:
        return [e.detail for e in s.exec(select(ServerEvent).where(ServerEvent.server == server,
                                                                   ServerEvent.kind == "role")
                                          .order_by(ServerEvent.id))]  # type: ignore[arg-type]


def fail_over_p1() -> None:
    with db() as s:
        for name, state in (("p1", ServerState.down), ("r1", ServerState.up)):
            srv = inventory.get_server(s, name)
            srv.state = state
            s.add(srv)
    with db() as s:
        result = core.apply_failover(s, "p1")
        assert [m.camera for m in result.moved] == ["cam-a"]
    with db() as s:
        inventory.get_server(s, "p1").state = ServerState.up


def test_recovered_server_recording_a_non_movable_camera_stays_primary(make_farm: Callable[..., Farm]) -> None:
    make_farm(SERVERS, CAMERAS)
    fail_over_p1()
    with db() as s:
        result = core.apply_recovery(s, "p1")
    assert not result.became_redundant and result.cameras_back == ["cam-usb"]
    with db() as s:
        assert inventory.get_server(s, "p1").role == Role.primary
        assert inventory.get_camera(s, "cam-usb").state == CameraState.recording
    assert role_events("p1") == []


def test_swap_back_makes_a_recovered_redundant_server_primary_again(make_farm: Callable[..., Farm]) -> None:
    make_farm(SERVERS, CAMERAS[:1])
    fail_over_p1()
    with db() as s:
        assert core.apply_recovery(s, "p1").became_redundant
    with db() as s:
        assert inventory.get_server(s, "p1").role == Role.redundant
        moved = swapback.move_home(s, ["cam-a"])
        assert [(m.camera, m.from_server, m.to_server) for m in moved] == [("cam-a", "r1", "p1")]
    with db() as s:
        assert inventory.get_server(s, "p1").role == Role.primary
        assert inventory.get_server(s, "r1").role == Role.redundant
    assert [e["role"] for e in role_events("p1")] == ["redundant", "primary"]
    assert role_events("p1")[-1]["reason"] == "cameras swapped back home"


def test_server_role_command_sets_and_records_the_role(make_farm: Callable[..., Farm]) -> None:
    make_farm(SERVERS, CAMERAS)
    code, out = cli("server", "role", "p1", "redundant")
    assert code == 0, out
    assert "p1: role redundant (declared in the farm file: primary; records 2 cameras)" in " ".join(out.split())
    with db() as s:
        assert inventory.get_server(s, "p1").role == Role.redundant
    assert role_events("p1") == [{"role": "redundant", "previous": "primary",
                                  "reason": "set by the operator (farmkeeper server role)"}]
    code, out = cli("server", "role", "p1", "redundant")
    assert code == 0 and "already redundant" in out and len(role_events("p1")) == 1
    code, out = cli("server", "role", "p1", "primary")
    assert code == 0
    with db() as s:
        assert inventory.get_server(s, "p1").role == Role.primary
    code, out = cli("server", "role", "p1", "spare")
    assert code == 2 and "primary or redundant" in out   # a bad argument: exit 2
    code, out = cli("server", "role", "nope", "primary")
    assert code == 1 and "unknown server 'nope'" in out

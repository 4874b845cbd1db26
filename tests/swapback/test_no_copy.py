"""Swap-backs that copy nothing: the cameras go home, the footage stays where it was recorded, the result says why."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlmodel import select

from farmkeeper import inventory
from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.models import Camera, CopyJob, DeletionAudit, FailoverEvent, Role, ServerEvent
from tests.swapback.conftest import SBFarm, camera, cli, fail_over, parse_json, tree_hashes, write_footage

pytestmark = [pytest.mark.samba]


def _db() -> object:
    return session_scope(ensure_schema(get_engine()))


def test_san_failover_mode_off_moves_cameras_home_without_copying(prefect_api: None,
                                                                   make_farm: Callable[..., SBFarm]) -> None:
    farm = make_farm([camera("cam-a"), camera("cam-b")], san=False)
    on_spare = write_footage(farm.share("spare1", "D"), "cam-a", 4)
    fail_over("cam-a")
    fail_over("cam-b")
    with session_scope(ensure_schema(get_engine())) as session:   # what recovery left: rec1 came back camera-less
        rec1 = inventory.get_server(session, "rec1")
        rec1.role = Role.redundant
        session.add(rec1)

    code, out = cli("swap-back", "rec1", "--dry-run", "--json")
    assert code == 0, out
    dry = parse_json(out)
    assert dry["state"] == "dry run" and dry["files"] == 0 and "SAN failover mode is off on rec1" in dry["why"]
    with session_scope(ensure_schema(get_engine())) as session:
        assert session.get(Camera, "cam-a").current == "spare1"  # type: ignore[union-attr]

    code, out = cli("swap-back", "rec1", "--json")
    assert code == 0, out
    result = parse_json(out)
    assert result["state"] == "done" and sorted(result["moved_home"]) == ["cam-a", "cam-b"]
    assert result["copied"] == result["removed"] == 0 and result["job_id"] is None
    assert result["footage"] == "stays where it was recorded"
    assert "SAN failover mode is off on rec1" in result["why"]
    assert result["footage_stays"] == {"cam-a": ["spare1"], "cam-b": ["spare1"]}
    # nothing copied, nothing deleted
    assert tree_hashes(farm.share("spare1", "D"), "cam-a") == on_spare
    assert tree_hashes(farm.share("rec1", "D"), "cam-a") == {}
    with session_scope(ensure_schema(get_engine())) as session:
        assert {c.id: c.current for c in inventory.list_cameras(session)} == {"cam-a": "rec1", "cam-b": "rec1"}
        assert all(e.ended_at is not None for e in session.exec(select(FailoverEvent)))
        assert session.exec(select(CopyJob)).first() is None
        assert session.exec(select(DeletionAudit)).first() is None
        # the cameras are back: rec1 takes its declared role again, recorded as a server event
        assert inventory.get_server(session, "rec1").role == Role.primary
        roles = [e.detail for e in session.exec(select(ServerEvent).where(ServerEvent.server == "rec1",
                                                                          ServerEvent.kind == "role"))]
        assert roles == [{"role": "primary", "previous": "redundant", "reason": "cameras swapped back home"}]

    code, out = cli("swap-back", "rec1")
    assert code == 0 and "nothing to swap back" in out

    # the human-readable form says why too
    fail_over("cam-b")
    code, out = cli("swap-back", "--camera", "cam-b")
    assert code == 0, out
    text = " ".join(out.split())
    assert "nothing copied or deleted" in text and "SAN failover mode is off on rec1" in text
    assert "cam-b: footage stays on spare1" in text

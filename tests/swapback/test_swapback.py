"""Swap-back end to end on real Samba: CLI → flow → copy jobs, verified byte for byte."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlmodel import select

from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.models import Camera, CopyItem, CopyItemState, CopyJob, CopyJobState, DeletionAudit, FailoverEvent
from tests.fixtures.receivers import HttpReceiver
from tests.swapback.conftest import SBFarm, camera, cli, fail_over, parse_json, tree_hashes, write_footage

pytestmark = [pytest.mark.samba, pytest.mark.slow]


def _db() -> object:
    return session_scope(ensure_schema(get_engine()))


def _camera(cam: str) -> Camera:
    with session_scope(ensure_schema(get_engine())) as session:
        row = session.get(Camera, cam)
        assert row is not None
        return row


def _jobs() -> list[CopyJob]:
    with session_scope(ensure_schema(get_engine())) as session:
        return list(session.exec(select(CopyJob).order_by(CopyJob.id)))  # type: ignore[arg-type]


def _items(job_id: int) -> list[CopyItem]:
    with session_scope(ensure_schema(get_engine())) as session:
        return list(session.exec(select(CopyItem).where(CopyItem.job_id == job_id)))


def _events(cam: str) -> list[FailoverEvent]:
    with session_scope(ensure_schema(get_engine())) as session:
        return list(session.exec(select(FailoverEvent).where(FailoverEvent.camera_id == cam)))


def test_swap_back_brings_footage_home(prefect_api: None, make_farm: Callable[..., SBFarm],
                                       http_receiver: HttpReceiver) -> None:
    farm = make_farm([camera("cam-a"), camera("cam-b", storage_path="D:\\Data;*E:\\Data"), camera("cam-c")],
                     notify=[http_receiver.url])
    want_a = write_footage(farm.share("spare1", "D"), "cam-a", 12, size=300 << 10)
    want_b = write_footage(farm.share("spare1", "D"), "cam-b", 5, seed=1)
    want_b_e = write_footage(farm.share("spare1", "E"), "cam-b", 4, seed=2)
    home_before = write_footage(farm.share("rec1", "D"), "cam-a", 3, start=datetime(2026, 2, 1, tzinfo=UTC))
    fail_over("cam-a")
    fail_over("cam-b")
    code, out = cli("swap-back", "rec1", "--json")
    assert code == 0, out
    result = parse_json(out)
    assert result["state"] == "done" and sorted(result["cameras"]) == ["cam-a", "cam-b"]
    n = len(want_a) + len(want_b) + len(want_b_e)
    assert result["copied"] == n and result["removed"] == n and result["remaining"] == 0
    # byte-identical at home, same drive letter, same relative path; home's own footage untouched
    assert tree_hashes(farm.share("rec1", "D"), "cam-a") == want_a | home_before
    assert tree_hashes(farm.share("rec1", "D"), "cam-b") == want_b
    assert tree_hashes(farm.share("rec1", "E"), "cam-b") == want_b_e
    # sources removed (and their empty folders pruned)
    for drive in "DE":
        for cam in ("cam-a", "cam-b"):
            assert tree_hashes(farm.share("spare1", drive), cam) == {}
    assert _camera("cam-a").current == "rec1" and _camera("cam-b").current == "rec1"
    assert all(e.ended_at is not None for cam in ("cam-a", "cam-b") for e in _events(cam))
    (job,) = _jobs()
    assert job.state == CopyJobState.done and job.files_done == job.files_total == n
    assert {i.state for i in _items(job.id or 0)} == {CopyItemState.removed}
    with session_scope(ensure_schema(get_engine())) as session:
        audits = list(session.exec(select(DeletionAudit).where(DeletionAudit.rule == "source_copied")))
    assert len(audits) == n and {a.server for a in audits} == {"spare1"}
    started = http_receiver.wait_for(lambda m: "started" in m.get("title", ""))
    assert "cam-a" in started["message"]
    finished = http_receiver.wait_for(lambda m: "finished" in m.get("title", ""))
    assert f"{n} copied" in finished["message"]
    # a second run has nothing to do
    code, out = cli("swap-back", "rec1", "--json")
    assert code == 0 and parse_json(out)["state"] == "nothing to do"

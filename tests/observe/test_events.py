"""The event helpers as Prefect's events worker receives them (its in-memory asserting client records them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tasks import events


@pytest.fixture
def sent() -> Iterator[Any]:
    """Events go to Prefect's AssertingEventsClient; ``sent()`` drains the worker and returns what arrived."""
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    EventsWorker.set_client_override(AssertingEventsClient)
    AssertingEventsClient.reset()
    events._below_floor.clear()

    def drain() -> list[Any]:
        EventsWorker.drain_all()
        return [e for client in AssertingEventsClient.all for e in client.pop_events()]

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):   # never contacted
        yield drain
    EventsWorker.drain_all()
    EventsWorker.set_client_override(None)
    AssertingEventsClient.reset()


def test_resources_name_the_farm_objects(sent: Any) -> None:
    assert events.camera_failed_over("cam-1", from_server="rec1", to_server="spare1")
    assert events.copy_job_finished(7, kind="swap-back", target="rec1", cameras=["cam-1"], state="done",
                                    files_done=3, bytes_done=300)
    moved, job = sent()
    assert moved.event == "farmkeeper.camera.failed-over" and moved.resource.id == "farmkeeper.camera.cam-1"
    assert moved.resource["farmkeeper.kind"] == "camera"
    assert {(r.id, r.role) for r in moved.related} == {("farmkeeper.server.rec1", "from"),
                                                       ("farmkeeper.server.spare1", "to")}
    assert job.event == "farmkeeper.copy-job.finished" and job.resource.id == "farmkeeper.copy-job.7"
    assert job.payload["bytes_done"] == 300 and job.resource.name == "swap-back #7"


def test_below_floor_once_per_descent(sent: Any) -> None:
    rec1 = {"server": "rec1", "drive": "D", "free": 10, "total": 1000, "floor": 50}
    assert events.floor_events([rec1]) == 1
    assert events.floor_events([rec1]) == 0, "still below: no second event"
    assert events.floor_events([]) == 0
    assert events.floor_events([rec1 | {"free": 5}]) == 1, "went under again"
    first, second = sent()
    assert first.event == "farmkeeper.volume.below-floor" and first.resource.id == "farmkeeper.volume.rec1.D"
    assert first.resource.name == r"\\rec1\DATAD"
    assert (first.payload["free_bytes"], first.payload["floor_bytes"]) == (10, 50) and second.payload["free_bytes"] == 5


def test_retention_blocked_only_when_new(sent: Any) -> None:
    guard = {"server": "rec1", "drive": "E", "blocked": True, "alert_kinds": ["purge_guard"],
             "new_alerts": ["\\\\rec1\\DATAE: would delete 90 % of the volume"]}
    assert events.retention_events([guard]) == 1
    assert events.retention_events([guard | {"new_alerts": []}]) == 0, "the same alert as last time"
    assert events.retention_events([guard | {"dry_run": True}]) == 0
    holds = {"server": "rec2", "drive": "D", "blocked": False, "alert_kinds": ["holds_block_floors"],
             "new_alerts": ["holds keep 80 GB"]}
    assert events.retention_events([holds]) == 1
    assert [(e.event, e.resource.id) for e in sent()] == [("farmkeeper.retention.blocked", "farmkeeper.volume.rec1.E"),
                                                          ("farmkeeper.retention.blocked", "farmkeeper.volume.rec2.D")]


def test_plain_mode_and_no_api_emit_nothing(sent: Any) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks.common import PLAIN

    token = PLAIN.set(True)
    try:
        assert events.server_recovered("rec1", role="redundant") is False
    finally:
        PLAIN.reset(token)
    with temporary_settings({PREFECT_API_URL: None}):
        assert events.server_recovered("rec1", role="redundant") is False, "no ephemeral server for an event"
    assert sent() == []

"""The farm view (farm-status markdown) and the Prometheus collector, read from a real SQLite inventory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session, select

from farmkeeper import inventory
from farmkeeper.db import ensure_schema, get_engine, make_engine, session_scope
from farmkeeper.farmview import fingerprint, read_farm_view, render_markdown
from farmkeeper.metrics import FarmCollector, record_sweep
from farmkeeper.models import (
    CameraState,
    CopyJob,
    CopyJobState,
    DeletionAudit,
    FailoverEvent,
    RetentionCamera,
    RetentionVolume,
    Server,
    ServerState,
    StorageSettings,
    utcnow,
)
from tests.failover.conftest import Farm, apply, build_farm

GB = 1 << 30


@pytest.fixture
def farm(tmp_path: Path, inventory_url: str) -> Farm:
    farm = build_farm(tmp_path, [("p1", "primary"), ("p2", "primary"), ("r1", "redundant")], [
        {"id": "cam-a", "home": "p1"}, {"id": "cam-b", "home": "p1"},
        {"id": "cam-usb", "home": "p1", "movable": False}, {"id": "cam-c", "home": "p2"}])
    apply(farm)
    return farm


def _sessions() -> Any:
    return session_scope(ensure_schema(get_engine()))


def _scrape(collector: FarmCollector) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name of each sample → {sorted labels: value}, parsed with prometheus_client's text parser."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _one(metrics: dict[str, Any], name: str, **labels: str) -> float:
    return metrics[name][tuple(sorted(labels.items()))]  # type: ignore[no-any-return]


def _outage(session: Session) -> None:
    """p1 down with its cameras failed over to r1 (cam-usb offline), a stalled camera, volumes and a copy job."""
    now = utcnow()
    p1 = inventory.get_server(session, "p1")
    p1.state, p1.last_seen, p1.probe_error = ServerState.down, now - timedelta(minutes=3), "no answer within 2 s"
    p1.master = False
    inventory.get_server(session, "p2").master = True
    for s in inventory.list_servers(session):
        s.probed_at = now - timedelta(seconds=4)
        if s.name != "p1":
            s.state, s.last_seen = ServerState.up, now
        session.add(s)
    for cam_id, current, state in (("cam-a", "r1", CameraState.recording), ("cam-b", "r1", CameraState.recording),
                                   ("cam-usb", "p1", CameraState.offline), ("cam-c", "p2", CameraState.stalled)):
        cam = inventory.get_camera(session, cam_id)
        cam.current, cam.state = current, state
        session.add(cam)
        if current == "r1":
            session.add(FailoverEvent(camera_id=cam_id, from_server="p1", to_server="r1", started_at=now))
    storage = session.get(StorageSettings, 1) or StorageSettings(id=1)
    storage.min_free_bytes, storage.min_free_percent = 50 * GB, 5.0
    session.add(storage)
    session.add(RetentionVolume(server="p2", drive="D", total_bytes=2000 * GB, free_bytes=40 * GB, swept_at=now))
    session.add(RetentionVolume(server="r1", drive="D", total_bytes=2000 * GB, free_bytes=900 * GB, swept_at=now))
    session.add(RetentionCamera(camera_id="cam-c", server="p2", drive="D", oldest_video_at=now - timedelta(days=12),
                                rule_days=30, updated_at=now))
    session.add(CopyJob(kind="swap-back", state=CopyJobState.running, created_at=now, updated_at=now,
                        cameras=["cam-a"], target="p1", files_total=10, files_done=4, bytes_total=1000,
                        bytes_done=400))
    for i, (rule, outcome, size) in enumerate([("age", "deleted", 100), ("age", "deleted", 50),
                                               ("min_free", "pending", 7), ("source_copied", "deleted", 999)]):
        session.add(DeletionAudit(at=now, server="p2", drive="D", path=f"video/cam-c/0/x/{i}.mp4", size=size,
                                  rule=rule, outcome=outcome))


def test_the_farm_view_shows_the_outage(farm: Farm) -> None:
    with _sessions() as session:
        before = fingerprint(read_farm_view(session))
        _outage(session)
    with _sessions() as session:
        view = read_farm_view(session)
    text = render_markdown(view)
    assert "3 servers (1 down: p1)" in text
    assert "| p1 | **DOWN** | primary |" in text and "no answer within 2 s" in text
    assert "| p2 | up | primary | **master** | 1 |" in text
    assert "| cam-usb | offline | p1 | p1 |" in text and "| cam-c | stalled | p2 | p2 |" in text
    assert "cam-a |" not in text.split("## Cameras not recording")[1].split("## Volumes")[0]
    assert r"\\p2\DATAD" in text and "BELOW FLOOR" in text.split(r"\\p2\DATAD")[1].split("\n")[0]
    assert "12.0 / 30" in text, "days held vs configured"
    assert "BELOW FLOOR" not in text.split(r"\\r1\DATAD")[1].split("\n")[0]
    assert "| #1 | swap-back | p1 | cam-a | 4/10 |" in text and "40 %" in text
    assert fingerprint(view) != before

    with _sessions() as session:   # only the live servers' last-seen moved: nothing an operator needs
        for s in inventory.list_servers(session):
            if s.state == ServerState.up and s.last_seen is not None:
                s.last_seen += timedelta(seconds=10)
                session.add(s)
    with _sessions() as session:
        assert fingerprint(read_farm_view(session)) == fingerprint(view)


def test_metrics_are_read_from_the_inventory_at_scrape_time(farm: Farm, inventory_url: str) -> None:
    collector = FarmCollector(_sessions)
    with _sessions() as session:
        _outage(session)
    m = _scrape(collector)
    assert _one(m, "farmkeeper_inventory_up") == 1
    assert _one(m, "farmkeeper_servers", state="down", role="primary") == 1
    assert _one(m, "farmkeeper_servers", state="up", role="redundant") == 1
    assert _one(m, "farmkeeper_server_up", server="p1", role="primary") == 0
    assert _one(m, "farmkeeper_server_up", server="r1", role="redundant") == 1
    assert _one(m, "farmkeeper_server_master", server="p2") == 1
    assert _one(m, "farmkeeper_server_cameras", server="r1") == 2
    assert _one(m, "farmkeeper_cameras", state="offline") == 1
    assert _one(m, "farmkeeper_cameras", state="stalled") == 1
    assert _one(m, "farmkeeper_cameras", state="recording") == 2
    assert 3 <= _one(m, "farmkeeper_health_sweep_age_seconds") < 3600
    assert _one(m, "farmkeeper_failovers_total") == 2
    assert _one(m, "farmkeeper_volume_free_bytes", server="p2", drive="D") == 40 * GB
    assert _one(m, "farmkeeper_volume_floor_bytes", server="p2", drive="D") == 100 * GB, "5 % of 2000 GB > 50 GB"
    assert _one(m, "farmkeeper_volume_below_floor", server="p2", drive="D") == 1
    assert _one(m, "farmkeeper_volume_below_floor", server="r1", drive="D") == 0
    assert 11.9 * 86400 < _one(m, "farmkeeper_volume_oldest_footage_age_seconds", server="p2", drive="D") \
        < 12.1 * 86400
    assert _one(m, "farmkeeper_retention_deleted_files_total", server="p2", drive="D", rule="age") == 2
    assert _one(m, "farmkeeper_retention_deleted_bytes_total", server="p2", drive="D", rule="age") == 150
    assert ("rule", "source_copied") not in {kv for k in m["farmkeeper_retention_deleted_files_total"] for kv in k}
    assert ("rule", "min_free") not in {kv for k in m["farmkeeper_retention_deleted_files_total"] for kv in k}, \
        "a pending audit row is not a deletion yet"
    assert _one(m, "farmkeeper_copy_job_done_bytes", job="1", kind="swap-back", target="p1") == 400
    assert _one(m, "farmkeeper_copy_job_planned_bytes", job="1", kind="swap-back", target="p1") == 1000

    with _sessions() as session:   # the pending delete is confirmed, another one happens: counted once each
        pending = session.exec(select(DeletionAudit).where(DeletionAudit.outcome == "pending")).one()
        pending.outcome = "deleted"
        session.add(pending)
        session.add(DeletionAudit(at=utcnow(), server="p2", drive="D", path="video/cam-c/0/y.mp4", size=3,
                                  rule="age", outcome="deleted"))
    m = _scrape(collector)
    assert _one(m, "farmkeeper_retention_deleted_files_total", server="p2", drive="D", rule="age") == 3
    assert _one(m, "farmkeeper_retention_deleted_bytes_total", server="p2", drive="D", rule="age") == 153
    assert _one(m, "farmkeeper_retention_deleted_files_total", server="p2", drive="D", rule="min_free") == 1
    m = _scrape(collector)
    assert _one(m, "farmkeeper_retention_deleted_files_total", server="p2", drive="D", rule="age") == 3


def test_sweep_histogram_adds_up_across_processes(farm: Farm, inventory_url: str) -> None:
    """Two engines (as two processes would have) add to the same rows; buckets are cumulative."""
    first, second = make_engine(inventory_url), make_engine(inventory_url)
    try:
        for engine, seconds in ((first, 0.3), (second, 0.07), (first, 12.0)):
            with session_scope(engine) as session:
                record_sweep(session, seconds)
    finally:
        first.dispose()
        second.dispose()
    m = _scrape(FarmCollector(_sessions))
    bucket = m["farmkeeper_health_sweep_duration_seconds_bucket"]
    assert bucket[(("le", "0.1"),)] == 1
    assert bucket[(("le", "0.5"),)] == 2
    assert bucket[(("le", "10.0"),)] == 2
    assert bucket[(("le", "30.0"),)] == 3 and bucket[(("le", "+Inf"),)] == 3
    assert _one(m, "farmkeeper_health_sweep_duration_seconds_count") == 3
    assert _one(m, "farmkeeper_health_sweep_duration_seconds_sum") == pytest.approx(12.37)


def test_a_scrape_answers_when_the_inventory_is_down(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gone' / 'inventory.db'}"   # a folder that does not exist

    @contextmanager
    def sessions() -> Iterator[Session]:
        engine = make_engine(url)
        try:
            with Session(engine) as session:
                session.exec(select(Server)).all()
                yield session
        finally:
            engine.dispose()

    m = _scrape(FarmCollector(sessions))
    assert m == {"farmkeeper_inventory_up": {(): 0.0}}


"""The ``retention-sweep`` flow on local volumes under a real Prefect API and a SQLite inventory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from farmkeeper import inventory
from farmkeeper.db import get_engine, session_scope
from farmkeeper.layout import parse_footage
from farmkeeper.models import CopyItem, CopyJob, CopyJobState, DeletionAudit, RetentionCamera, utcnow
from flows.retention_sweep import RetentionSweepParams, retention_sweep
from tests.retention.conftest import RetentionFarm
from tests.retention.helpers import days_back, files_under, write

pytestmark = pytest.mark.usefixtures("prefect_api")


def now() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0)


def audit() -> list[DeletionAudit]:
    with session_scope(get_engine()) as session:
        return list(session.exec(select(DeletionAudit)))


def older(paths: list[str], days: float) -> set[str]:
    cut = datetime.now(UTC).timestamp() - days * 86400
    return {p for p in paths if parse_footage(p).timestamp < cut}


def sweep(**kw: Any) -> dict[str, Any]:
    return retention_sweep(RetentionSweepParams(**kw))


def vol(result: dict[str, Any], label: str) -> dict[str, Any]:
    return next(v for v in result["volumes"] if v["volume"] == label)


def test_age_rules_on_every_volume_audit_matches_and_rerun_is_idle(retention_farm: RetentionFarm) -> None:
    farm = retention_farm.apply()
    t = now()
    d1, e1, d2 = farm.root("rec1", "D"), farm.root("rec1", "E"), farm.root("rec2", "D")
    s0 = write(d1, days_back("cam-001", 0, 5, now=t))
    s1 = write(d1, days_back("cam-001", 1, 10, now=t))
    meta = write(d1, days_back("cam-001", None, 12, now=t))
    other = write(e1, days_back("cam-003", 0, 9, now=t))       # after a failover: any camera on any server
    ghost = write(d2, days_back("ghost-9", 0, 30, now=t))      # unknown camera: left alone, reported
    mine = write(d2, days_back("cam-002", 0, 8, now=t))
    (d1 / "video" / "cam-001" / "README.txt").write_text("keep me")
    (d1 / "Thumbs.db").write_text("keep me")
    before = {k: files_under(v) for k, v in farm.volumes.items()}

    result = sweep()
    assert result["errors"] == []
    expected = {("rec1", "D"): older(s0, 3) | older(s1, 8) | older(meta, 8),
                ("rec1", "E"): older(other, 7), ("rec2", "D"): older(mine, 7)}
    for key, root in farm.volumes.items():
        assert before[key] - files_under(root) == expected[key], key
    assert set(ghost) <= files_under(d2)
    assert {"video/cam-001/README.txt", "Thumbs.db"} <= files_under(d1)
    rows = audit()
    assert {(r.server, r.drive, r.path) for r in rows} == {(s, d, p) for (s, d), ps in expected.items() for p in ps}
    assert all(r.outcome == "deleted" and r.run_id == result["run_id"] for r in rows)
    assert {r.rule for r in rows if r.path.startswith("meta/")} == {"metadata_age"}
    assert vol(result, "\\\\rec2\\DATAD")["unknown_cameras"] == {"ghost-9": len(ghost)}
    r1d = vol(result, "\\\\rec1\\DATAD")
    assert r1d["deleted"]["age"]["files"] == len(older(s0, 3) | older(s1, 8))
    assert r1d["free_before"] is not None and r1d["free_after"] is not None
    # empty hour and day folders are gone, camera folders stay
    days_left = {p.name for p in (d1 / "video" / "cam-001" / "0").iterdir()}
    assert days_left == {parse_footage(p).start.strftime("%Y-%m-%d") for p in set(s0) - older(s0, 3)}

    again = sweep()
    assert sum(v.get("deleted_files", 0) for v in again["volumes"]) == 0
    assert len(audit()) == len(rows)


def test_dry_run_touches_nothing(retention_farm: RetentionFarm) -> None:
    farm = retention_farm.apply(storage={"min_free": "1PB"})
    t = now()
    paths = write(farm.root(), days_back("cam-002", 0, 9, now=t))
    before = files_under(farm.root())
    result = sweep(dry_run=True)
    assert files_under(farm.root()) == before
    assert audit() == []
    v = vol(result, "\\\\rec1\\DATAD")
    assert v["dry_run"] and v["rules"]["age"]["files"] == len(older(paths, 7))
    assert v["floor_rule"] == "min_free" and not v["floors_met"]
    with session_scope(get_engine()) as session:
        assert list(session.exec(select(RetentionCamera))) == []


def test_holds_and_swap_back_in_flight_are_kept(retention_farm: RetentionFarm) -> None:
    farm = retention_farm.apply()
    t = now()
    paths = write(farm.root(), days_back("cam-002", 0, 9, now=t))
    copying = write(farm.root("rec2", "D"), days_back("cam-002", 0, 9, now=t))
    old = sorted(older(paths, 7))
    h_start = parse_footage(old[5]).start + timedelta(minutes=5)       # mid-segment
    h_end = parse_footage(old[8]).start                                 # exactly at a start: 8 not held
    with session_scope(get_engine()) as session:
        inventory.add_hold(session, "cam-002", h_start, h_end, "incident 42")
        job = CopyJob(kind="swap-back", state=CopyJobState.running, created_at=utcnow(), updated_at=utcnow(),
                      cameras=["cam-002"], target="rec1")
        done = CopyJob(kind="swap-back", state=CopyJobState.done, created_at=utcnow(), updated_at=utcnow(),
                       cameras=["cam-002"], target="rec1")
        session.add(job)
        session.add(done)
        session.flush()
        in_flight = sorted(older(copying, 7))[40:60]
        for rel in in_flight:
            session.add(CopyItem(job_id=job.id or 0, camera_id="cam-002", src_server="rec2", src_drive="D",
                                 dst_server="rec1", dst_drive="D", relpath=rel))
        session.add(CopyItem(job_id=done.id or 0, camera_id="cam-002", src_server="rec2", src_drive="D",
                             dst_server="rec1", dst_drive="D", relpath=sorted(older(copying, 7))[70]))
    result = sweep(force=True)
    left_d1, left_d2 = files_under(farm.root()), files_under(farm.root("rec2", "D"))
    assert set(old[5:8]) <= left_d1 and old[8] not in left_d1 and old[4] not in left_d1
    # the destination paths of the running job are protected too (same relpaths on rec1)
    assert set(in_flight) <= left_d1 and set(in_flight) <= left_d2
    assert sorted(older(copying, 7))[70] not in left_d2
    assert vol(result, "\\\\rec1\\DATAD")["kept"]["held"]["past_rule_files"] == 3
    assert not {r.path for r in audit()} & (set(old[5:8]) | set(in_flight))


def test_purge_guard_alerts_then_force_deletes(retention_farm: RetentionFarm, http_receiver: Any) -> None:
    farm = retention_farm.apply(notify=[http_receiver.url],
                                cameras=[{"id": "cam-002", "home": "rec1", "max_storage_days": "2"}])
    paths = write(farm.root(), days_back("cam-002", 0, 9, now=now()))
    result = sweep()
    v = vol(result, "\\\\rec1\\DATAD")
    assert v["blocked"] and v["deleted_files"] == 0 and files_under(farm.root()) == set(paths)
    assert audit() == []
    msg = http_receiver.wait_for(lambda m: "alert" in m.get("title", ""))
    assert "purge guard" not in msg["title"] and "deleting nothing" in msg["message"]
    sweep()   # the same alert is not sent twice
    forced = sweep(force=True)
    assert vol(forced, "\\\\rec1\\DATAD")["deleted_files"] == len(older(paths, 2))
    assert files_under(farm.root()) == set(paths) - older(paths, 2)
    assert len(audit()) == len(older(paths, 2))
    assert sum("deleting nothing" in m.get("message", "") for m in http_receiver.messages) == 1


def test_floors_on_a_real_small_volume_with_shortfall_notice(retention_farm: RetentionFarm, tmpfs_volume: Path,
                                                              http_receiver: Any) -> None:
    retention_farm.apply(notify=[http_receiver.url], storage={"min_free": "6MiB", "min_free_percent": 10},
                                volumes={"rec1": ["D"]}, paths={("rec1", "D"): tmpfs_volume},
                                cameras=[{"id": "cam-002", "home": "rec1"}, {"id": "cam-003", "home": "rec1"}])
    t = now()
    a = write(tmpfs_volume, days_back("cam-002", 0, 6, step=timedelta(hours=1), now=t), size=40 * 1024)
    b = write(tmpfs_volume, days_back("cam-003", 0, 6, step=timedelta(hours=1), now=t), size=40 * 1024)
    m = write(tmpfs_volume, days_back("cam-002", None, 6, step=timedelta(hours=1), now=t), size=4096)
    import os

    st = os.statvfs(tmpfs_volume)
    assert st.f_bavail * st.f_frsize < 6 * 2**20
    result = sweep(force=True)
    v = vol(result, "\\\\rec1\\DATAD")
    assert v["floor_rule"] == "min_free" and v["floors_met"]
    st = os.statvfs(tmpfs_volume)
    assert st.f_bavail * st.f_frsize >= 6 * 2**20
    gone = (set(a) | set(b) | set(m)) - files_under(tmpfs_volume)
    kept_video = (set(a) | set(b)) - gone
    assert not gone & set(m)                                   # metadata only after all video
    newest_gone = max(parse_footage(p).timestamp for p in gone)
    assert all(parse_footage(p).timestamp >= newest_gone for p in kept_video)   # oldest first across cameras
    assert {r.rule for r in audit()} == {"min_free"}
    msg = http_receiver.wait_for(lambda m: "shortfall" in m.get("title", ""))
    assert "cam-002 holds" in msg["message"] and "of 7 days" in msg["message"]
    with session_scope(get_engine()) as session:
        from farmkeeper.forecast import storage_forecast

        rows = storage_forecast(session)
    row = next(r for r in rows if r["camera"] == "cam-002")
    assert row["rule_days"] == 7 and row["held_days"] < 7 and row["bytes_per_day"] > 0
    assert row["lasts_days"] is not None and row["lasts_days"] < 7


def test_server_filter_and_unknown_server(retention_farm: RetentionFarm) -> None:
    farm = retention_farm.apply()
    write(farm.root("rec2", "D"), days_back("cam-003", 0, 9, now=now()))
    result = sweep(servers=["rec1"], dry_run=True)
    assert {v["volume"] for v in result["volumes"]} == {"\\\\rec1\\DATAD", "\\\\rec1\\DATAE"}
    from farmkeeper.errors import NotFoundError

    with pytest.raises(NotFoundError):
        sweep(servers=["nope"])


@pytest.mark.samba
def test_sweep_over_samba(retention_farm: RetentionFarm, samba_farm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    server = samba_farm.servers[1]
    share = server.share_path("DATAE")
    monkeypatch.setenv("FK_RET_SMB_PW", server.password)
    retention_farm.apply(servers=[{"name": "smb2", "host": server.host, "role": "primary", "master": True,
                                   "health": "smb", "volumes": [{"drive": "E"}],
                                   "smb": {"port": server.port, "username": server.username,
                                           "password_env": "FK_RET_SMB_PW"}}],
                         storage={"default_path": "E:\\Data"}, cameras=[{"id": "cam-s2", "home": "smb2"}])
    for sub in ("video", "meta"):      # the Samba farm is shared by the session: start from an empty share
        shutil.rmtree(share / sub, ignore_errors=True)
    try:
        paths = write(share, days_back("cam-s2", 0, 9, now=now()))
        result = sweep()
        assert result["errors"] == []
        assert files_under(share) == set(paths) - older(paths, 7)
        assert {r.path for r in audit()} == older(paths, 7)
        assert "password" not in str(result).lower() and server.password not in str(result)
    finally:
        for sub in ("video", "meta"):
            shutil.rmtree(share / sub, ignore_errors=True)

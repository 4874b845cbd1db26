"""Adding a server and moving cameras to it, end to end on real Samba (CLI → flows → copy jobs)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import col, select

from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.models import (
    Camera,
    CopyJob,
    DeletionAudit,
    OwnershipChange,
    OwnershipCount,
    Server,
    ServerEvent,
)
from tests.fixtures.receivers import HttpReceiver
from tests.move.conftest import (
    MVFarm,
    camera,
    cli,
    flat,
    parse_json,
    server_entry,
    tree_hashes,
    write_footage,
)

pytestmark = [pytest.mark.samba, pytest.mark.slow]


def _camera(cam: str) -> Camera:
    with session_scope(ensure_schema(get_engine())) as session:
        row = session.get(Camera, cam)
        assert row is not None
        return row


def _rows(model: Any, *where: Any) -> list[Any]:
    with session_scope(ensure_schema(get_engine())) as session:
        return list(session.exec(select(model).where(*where)))


def _servers() -> list[str]:
    return sorted(s.name for s in _rows(Server))


def _inventory() -> dict[str, Any]:
    """What refusals must leave as it was: servers, cameras (home, current, pin), copy jobs."""
    return {"servers": _servers(),
            "cameras": sorted((c.id, c.home, c.current, c.pinned_home, c.version) for c in _rows(Camera)),
            "jobs": len(_rows(CopyJob)), "changes": len(_rows(OwnershipChange))}


def _all_footage(farm: MVFarm, cams: tuple[str, ...], drives: str = "DE") -> dict[str, dict[str, str]]:
    return {f"{s}/{d}/{c}": tree_hashes(farm.share(s, d), c) for s in ("rec1", "spare1", "rec2", "rec4")
            for d in drives for c in cams}


def test_add_server_then_move_with_footage(prefect_api: None, make_farm: Callable[..., MVFarm],
                                           http_receiver: HttpReceiver) -> None:
    farm = make_farm([camera("cam-a"), camera("cam-b", storage_path="D:\\Data;*E:\\Data"), camera("cam-c")],
                     notify=[http_receiver.url])
    a_d = write_footage(farm.share("rec1", "D"), "cam-a", 10, size=200 << 10)
    a_spare = write_footage(farm.share("spare1", "D"), "cam-a", 3, start=datetime(2026, 11, 21, tzinfo=UTC), seed=3)
    b_d = write_footage(farm.share("rec1", "D"), "cam-b", 4, seed=1)
    b_e = write_footage(farm.share("rec1", "E"), "cam-b", 5, seed=2)
    c_d = write_footage(farm.share("rec1", "D"), "cam-c", 4, seed=4)

    # adding rec4 to the farm file: apply validates the redundancy group with it first
    farm.add_server("rec4")
    code, out = cli("apply", str(farm.path))
    assert code == 0, out
    assert "all SAN failover requirements met" in flat(out) and "created: server rec4" in out
    assert "rec4" in _servers()

    # the dry run shows the plan per source volume and the target's space, and changes nothing
    before = _all_footage(farm, ("cam-a", "cam-b"))
    code, out = cli("move", "cam-a", "cam-b", "--to", "rec4", "--footage", "move", "--dry-run", "--json")
    assert code == 0, out
    plan = parse_json(out)
    assert plan["state"] == "dry run" and plan["fits"] and plan["refused"] is None
    per_source = {(r["camera"], r["volume"]): r["files"] for r in plan["sources"]}
    assert per_source == {("cam-a", "\\\\rec1\\DATAD"): len(a_d), ("cam-a", "\\\\spare1\\DATAD"): len(a_spare),
                          ("cam-b", "\\\\rec1\\DATAD"): len(b_d), ("cam-b", "\\\\rec1\\DATAE"): len(b_e)}
    space = {d["drive"]: d for d in plan["space"]}
    assert space["D"]["needed"] == sum((farm.share(s, "D") / p).stat().st_size
                                       for s, files in (("rec1", a_d), ("spare1", a_spare), ("rec1", b_d))
                                       for p in files)
    assert space["D"]["free"] > 0 and space["D"]["fits"]
    assert _all_footage(farm, ("cam-a", "cam-b")) == before and _camera("cam-a").current == "rec1"
    assert _rows(CopyJob) == []

    code, out = cli("move", "cam-a", "cam-b", "--to", "rec4", "--footage", "move", "--verify", "hash", "--json")
    assert code == 0, out
    result = parse_json(out)
    n = len(a_d) + len(a_spare) + len(b_d) + len(b_e)
    assert result["state"] == "done" and result["copied"] == n and result["removed"] == n, result
    # byte-identical on rec4 (same drive letter, same path), sources gone, cam-c untouched
    assert tree_hashes(farm.share("rec4", "D"), "cam-a") == a_d | a_spare
    assert tree_hashes(farm.share("rec4", "D"), "cam-b") == b_d
    assert tree_hashes(farm.share("rec4", "E"), "cam-b") == b_e
    for server in ("rec1", "spare1"):
        for drive in "DE":
            assert tree_hashes(farm.share(server, drive), "cam-a") == {}
            assert tree_hashes(farm.share(server, drive), "cam-b") == {}
    assert tree_hashes(farm.share("rec1", "D"), "cam-c") == c_d
    for cam in ("cam-a", "cam-b"):
        row = _camera(cam)
        assert (row.current, row.home, row.pinned_home, row.pin_reason) == ("rec4", "rec4", "rec4", "move")
    assert _camera("cam-c").current == "rec1"
    changes = _rows(OwnershipChange, OwnershipChange.reason == "move")
    assert sorted((c.camera_id, c.from_server, c.to_server) for c in changes) == [
        ("cam-a", "rec1", "rec4"), ("cam-b", "rec1", "rec4")]
    (event,) = _rows(ServerEvent, ServerEvent.kind == "cameras-moved")
    assert event.server == "rec4" and event.detail["cameras"] == ["cam-a", "cam-b"]
    (job,) = _rows(CopyJob)
    assert job.kind == "move" and job.target == "rec4" and job.state == "done"
    audits = _rows(DeletionAudit, DeletionAudit.rule == "source_copied")
    assert len(audits) == n and {a.server for a in audits} == {"rec1", "spare1"}
    started = http_receiver.wait_for(lambda m: "move to rec4 started" in m.get("title", ""))
    assert "cam-a" in started["message"]
    finished = http_receiver.wait_for(lambda m: "move to rec4 finished" in m.get("title", ""))
    assert f"{n} copied" in finished["message"]

    # ownership agrees with the move: the home stays on rec4 and the move pin is released
    from flows.recompute_ownership import RecomputeOwnershipParams, recompute_ownership

    recompute_ownership(RecomputeOwnershipParams(notify=False))
    for cam in ("cam-a", "cam-b"):
        row = _camera(cam)
        assert (row.home, row.pinned_home, row.pin_reason) == ("rec4", None, None), cam
    assert _camera("cam-c").home == "rec1"
    # a second move has nothing left to copy
    code, out = cli("move", "cam-a", "cam-b", "--to", "rec4", "--footage", "move", "--json")
    assert code == 0, out
    again = parse_json(out)
    assert again["copied"] == 0 and again["remaining"] == 0


def test_move_keep_leaves_footage_found(prefect_api: None, make_farm: Callable[..., MVFarm],
                                        http_receiver: HttpReceiver) -> None:
    farm = make_farm([camera("cam-k", max_storage_days=10)], notify=[http_receiver.url],
                     storage={"limit_storage_days": True})
    now = datetime.now(UTC).replace(microsecond=0)
    old = write_footage(farm.share("rec1", "D"), "cam-k", 4, start=now - timedelta(days=40), meta=False)
    recent = write_footage(farm.share("rec1", "D"), "cam-k", 6, start=now - timedelta(hours=3), meta=False, seed=1)
    farm.add_server("rec4")
    code, out = cli("apply", str(farm.path))
    assert code == 0, out

    code, out = cli("move", "cam-k", "--to", "rec4", "--footage", "keep", "--json")
    assert code == 0, out
    result = parse_json(out)
    assert result["footage"] == "keep" and result["kept_files"] == len(old) + len(recent)
    assert tree_hashes(farm.share("rec1", "D"), "cam-k") == old | recent      # nothing copied or removed
    assert tree_hashes(farm.share("rec4", "D"), "cam-k") == {}
    row = _camera("cam-k")
    assert (row.current, row.home, row.pinned_home, row.pin_reason) == ("rec4", "rec4", "rec4", "move")
    assert _rows(CopyJob) == []
    http_receiver.wait_for(lambda m: "cameras moved to rec4" in m.get("title", ""))

    # ownership counts the footage left on rec1 but the move pin keeps the home on rec4
    from flows.recompute_ownership import RecomputeOwnershipParams, recompute_ownership

    recompute_ownership(RecomputeOwnershipParams(notify=False))
    row = _camera("cam-k")
    assert (row.home, row.pinned_home) == ("rec4", "rec4")
    counts = {c.server: c.files for c in _rows(OwnershipCount, OwnershipCount.camera_id == "cam-k")}
    assert counts == {"rec1": len(old) + len(recent)}

    # retention still sweeps the footage that stayed on rec1: the 40-day-old files go, the recent stay
    from flows.retention_sweep import RetentionSweepParams, retention_sweep

    retention_sweep(RetentionSweepParams(notify=False))
    assert tree_hashes(farm.share("rec1", "D"), "cam-k") == recent
    deleted = _rows(DeletionAudit, DeletionAudit.camera_id == "cam-k", col(DeletionAudit.rule) == "age")
    assert sorted(a.path for a in deleted) == sorted(old) and {a.server for a in deleted} == {"rec1"}


def _file(farm: MVFarm, servers: tuple[str, ...], cameras: list[dict[str, Any]]) -> None:
    farm.data["servers"] = [server_entry(farm.samba, name, farm.drives) for name in servers]
    farm.data["cameras"] = cameras
    farm.write()


def test_removing_a_busy_server_is_refused(prefect_api: None, make_farm: Callable[..., MVFarm]) -> None:
    cams = [camera("cam-a"), camera("cam-x", home="rec2")]
    farm = make_farm(cams, servers=("rec1", "spare1", "rec2", "rec4"))
    # rec4 records nothing but still holds footage of cam-a (e.g. from an earlier failover)
    left = write_footage(farm.share("rec4", "E"), "cam-a", 3)
    snapshot = (_inventory(), _all_footage(farm, ("cam-a", "cam-x")))

    # rec2 still records cam-x (the file moved its home, the camera did not move)
    _file(farm, ("rec1", "spare1", "rec4"), [camera("cam-a"), camera("cam-x")])
    code, out = cli("apply", str(farm.path))
    assert code == 1
    assert "server rec2 still has cameras (cam-x)" in flat(out) and "farmkeeper move" in flat(out)
    assert (_inventory(), _all_footage(farm, ("cam-a", "cam-x"))) == snapshot

    # rec4 holds footage: refused, even with --force
    _file(farm, ("rec1", "spare1", "rec2"), cams)
    for args in (("apply", str(farm.path)), ("apply", "--force", str(farm.path))):
        code, out = cli(*args)
        assert code == 1
        text = flat(out)
        assert "server rec4 still holds footage (\\\\rec4\\DATAE: cam-a (6 files))" in text, text
        assert "farmkeeper move cam-a --to" in text and "nothing changed" in text
        assert (_inventory(), _all_footage(farm, ("cam-a", "cam-x"))) == snapshot

    # spare1 is the only redundant server
    _file(farm, ("rec1", "rec2", "rec4"), cams)
    code, out = cli("apply", str(farm.path))
    assert code == 1 and "only redundant server" in flat(out)
    assert (_inventory(), _all_footage(farm, ("cam-a", "cam-x"))) == snapshot

    # moving the footage off (to the server recording cam-a) makes rec4 removable
    code, out = cli("move", "cam-a", "--to", "rec1", "--footage", "move", "--json")
    assert code == 0, out
    assert tree_hashes(farm.share("rec1", "E"), "cam-a") == left
    assert tree_hashes(farm.share("rec4", "E"), "cam-a") == {}
    _file(farm, ("rec1", "spare1", "rec2"), cams)
    code, out = cli("apply", str(farm.path))
    assert code == 0, out
    assert "removed: server rec4" in out and "rec4" not in _servers()


def test_target_too_small_is_refused(prefect_api: None, make_farm: Callable[..., MVFarm]) -> None:
    farm = make_farm([camera("cam-g", storage_path="G:\\Data")], drives="DG")
    want = write_footage(farm.share("rec1", "G"), "cam-g", 12, size=1 << 20, meta=False)   # ~12 MiB > 8 MiB tmpfs
    farm.add_server("rec4")
    code, out = cli("apply", str(farm.path))
    assert code == 0, out
    snapshot = (_inventory(), _all_footage(farm, ("cam-g",), "DG"))

    code, out = cli("move", "cam-g", "--to", "rec4", "--footage", "move", "--dry-run", "--json")
    assert code == 1, out
    plan = parse_json(out)
    space = {d["drive"]: d for d in plan["space"]}
    assert not plan["fits"] and not space["G"]["fits"] and space["D"]["fits"]
    assert space["G"]["needed"] > space["G"]["free"]
    assert "does not fit on rec4" in plan["refused"]

    code, out = cli("move", "cam-g", "--to", "rec4", "--footage", "move")
    assert code == 1
    assert "refused" in flat(out) and "DOES NOT FIT" in flat(out)
    assert (_inventory(), _all_footage(farm, ("cam-g",), "DG")) == snapshot
    assert tree_hashes(farm.share("rec1", "G"), "cam-g") == want


def test_new_server_failing_validation(prefect_api: None, make_farm: Callable[..., MVFarm]) -> None:
    farm = make_farm([camera("cam-a")], drives="DEH")
    write_footage(farm.share("rec1", "D"), "cam-a", 3)
    # rec4 lacks drive E, has no share DATAH, and SAN failover mode is off
    farm.add_server("rec4", drives="DH", san_failover_mode=False)
    snapshot = (_inventory(), _all_footage(farm, ("cam-a",)))
    code, out = cli("apply", str(farm.path))
    assert code == 1, out
    text = flat(out)
    assert "rec4: 2 SAN LUN(s)" in text                                   # LUN count
    assert "drive E: missing" in text                                     # drive letters
    assert "SAN failover mode is off" in text                             # the flag
    assert "\\\\rec4\\DATAH is not shared" in text                        # the share
    assert "--force" in text and "nothing changed" in text
    assert _inventory() == snapshot[0] and "rec4" not in _servers()

    code, out = cli("apply", "--force", str(farm.path))
    assert code == 0, out
    assert "rec4" in _servers()
    snapshot = (_inventory(), _all_footage(farm, ("cam-a",)))
    # the move's validation gate refuses too, and changes nothing
    code, out = cli("move", "cam-a", "--to", "rec4", "--footage", "move")
    assert code == 1
    assert "SAN failover requirements are not met" in flat(out)
    assert (_inventory(), _all_footage(farm, ("cam-a",))) == snapshot


def test_simulator_records_on_the_new_server(prefect_api: None, make_farm: Callable[..., MVFarm],
                                             inventory_url: str, tmp_path: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Recorders (the farm simulator) on the Samba share folders: after the move cam-a records on rec4."""
    import time

    from farmkeeper.models import ServerState
    from farmkeeper.sim import SimOptions, start_farm

    monkeypatch.setenv("FARMKEEPER_STORAGE__PREFER", "smb")      # volumes have a local path: force SMB
    farm = make_farm([camera("cam-a")], drives="D", local=True)
    farm.add_server("rec4", local=True)
    code, out = cli("apply", str(farm.path))
    assert code == 0, out
    with session_scope(ensure_schema(get_engine())) as session:
        for srv in session.exec(select(Server)):
            srv.state = ServerState.up
            session.add(srv)
    procs = start_farm(farm.path, SimOptions(database_url=inventory_url, state_dir=tmp_path / "sim", segment_s=1.0,
                                             bitrates=(400_000, 100_000)))
    try:
        time.sleep(3)                                            # rec1 records cam-a
        assert any(p.suffix == ".mkv" for p in (farm.share("rec1") / "video" / "cam-a").rglob("*"))
        code, out = cli("move", "cam-a", "--to", "rec4", "--footage", "move", "--json")
        assert code == 0, out
        res = parse_json(out)
        assert res["state"] == "done" and res["copied"] > 0 and res["remaining"] == 0
        moved_at = time.time()
        deadline = time.monotonic() + 30
        fresh: list[Any] = []
        while not fresh and time.monotonic() < deadline:
            time.sleep(0.5)
            fresh = [p for p in (farm.share("rec4") / "video" / "cam-a").rglob("*.mkv")
                     if p.stat().st_mtime > moved_at]
        assert fresh, "the simulator did not record cam-a on rec4 within 30 s"
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(10)

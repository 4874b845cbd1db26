"""recompute-ownership against real Samba shares: homes follow file counts, margin, pin, dry run."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from farmkeeper import inventory
from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.models import OwnershipChange, OwnershipCount
from farmkeeper.ownership import count_footage
from farmkeeper.volumes import server_volumes
from tests.ownership.conftest import PASSWORD_ENV, Farm

runner = CliRunner()


def homes() -> dict[str, tuple[str, int]]:
    with session_scope(ensure_schema(get_engine())) as session:
        return {c.id: (c.home, c.version) for c in inventory.list_cameras(session)}


def changes() -> list[OwnershipChange]:
    with session_scope(get_engine()) as session:
        return list(session.exec(select(OwnershipChange).order_by(OwnershipChange.id)).all())  # type: ignore[arg-type]


def recompute(dry_run: bool = False) -> object:
    from flows.recompute_ownership import RecomputeOwnershipParams, recompute_ownership

    return recompute_ownership(RecomputeOwnershipParams(dry_run=dry_run))


def test_count_over_smb_equals_local(farm: Farm) -> None:
    farm.footage("rec1", "cam-1", 120, stream=0)
    farm.footage("rec1", "cam-1", 30, stream=1, drive="E")
    farm.footage("spare1", "cam-1", 40)
    (farm.root("rec1") / "video" / "cam-1" / "0" / "notes.txt").write_text("not footage")
    (farm.root("rec1") / "meta" / "cam-1" / "2026-01-05" / "00").mkdir(parents=True)
    (farm.root("rec1") / "meta" / "cam-1" / "2026-01-05" / "00" / "20260105T000000Z.json").touch()
    with session_scope(get_engine()) as session:
        vols = server_volumes(session, lambda s: inventory.resolve_password(s))
    smb = count_footage(vols, prefer="smb")
    local = count_footage(vols, prefer="local")
    assert not smb.errors and smb.totals() == local.totals()
    assert smb.totals() == {"cam-1": {"rec1": 150, "spare1": 40}}


def test_ownership_follows_counts_after_failover(farm: Farm, prefect_api: None) -> None:
    farm.footage("rec1", "cam-1", 100)
    farm.footage("rec1", "cam-2", 50)
    farm.footage("rec2", "cam-3", 80)
    outcome = recompute()
    assert not outcome.changes  # type: ignore[attr-defined]
    assert homes()["cam-1"] == ("rec1", 1)
    # a long failover: spare1 recorded cam-1 and now holds more than (1 + 0.1) x rec1's files
    farm.footage("spare1", "cam-1", 120, day=farm_day(1))
    farm.footage("spare1", "cam-2", 54, day=farm_day(1))  # within the margin: 54 <= 55
    outcome = recompute()
    h = homes()
    assert h["cam-1"] == ("spare1", 2) and h["cam-2"] == ("rec1", 1) and h["cam-3"] == ("rec2", 1)
    [change] = changes()
    assert (change.camera_id, change.from_server, change.to_server) == ("cam-1", "rec1", "spare1")
    assert change.counts == {"rec1": 100, "rec2": 0, "spare1": 120} and change.reason == "file count"
    table = {r["camera"]: r for r in outcome.table()}  # type: ignore[attr-defined]
    assert table["cam-1"]["spare1"] == 120 and table["cam-1"]["changed"] == "yes"
    with session_scope(get_engine()) as session:
        rows = {(r.camera_id, r.server): r for r in session.exec(select(OwnershipCount))}
    assert rows["cam-1", "spare1"].files == 120 and rows["cam-1", "rec1"].streams == {"0": 100}


def farm_day(n: int):  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from tests.ownership.conftest import DAY

    return DAY + timedelta(days=n)


def test_pin_wins_and_dry_run_changes_nothing(farm: Farm, prefect_api: None) -> None:
    farm.footage("rec2", "cam-1", 500)
    farm.footage("rec2", "cam-2", 500)
    with session_scope(get_engine()) as session:
        inventory.pin_camera(session, "cam-2", "rec1")
    before = homes()
    outcome = recompute(dry_run=True)
    assert [(d.camera, d.new_home) for d in outcome.changes] == [("cam-1", "rec2")]  # type: ignore[attr-defined]
    assert homes() == before
    assert [c.reason for c in changes()] == []  # pinning to the current home records nothing
    recompute()
    h = homes()
    assert h["cam-1"][0] == "rec2" and h["cam-2"][0] == "rec1"


def test_uncountable_home_keeps_its_cameras(farm: Farm, prefect_api: None, monkeypatch: pytest.MonkeyPatch) -> None:
    farm.footage("rec2", "cam-3", 10)
    farm.footage("spare1", "cam-3", 100)
    monkeypatch.setenv("FARMKEEPER_STORAGE__PREFER", "smb")
    farm.srv_spec("rec2")["smb"]["password_env"] = "FK_OWN_WRONG"
    farm.apply()
    monkeypatch.setenv("FK_OWN_WRONG", "not-the-password")
    outcome = recompute()
    assert "rec2" in outcome.unknown_servers  # type: ignore[attr-defined]
    assert "not-the-password" not in json.dumps(outcome.table())  # type: ignore[attr-defined]
    assert homes()["cam-3"][0] == "rec2"


def test_explain_cli(farm: Farm) -> None:
    from farmkeeper.cli import app

    farm.footage("rec1", "cam-1", 30, stream=0)
    farm.footage("rec1", "cam-1", 20, stream=1)
    farm.footage("rec2", "cam-1", 52)
    result = runner.invoke(app, ["ownership", "--explain", "cam-1"])
    assert result.exit_code == 0, result.output
    assert "rec1: 50 files (stream 0: 30, stream 1: 20; 1 days 2026-01-05..2026-01-05)" in result.output
    assert "rec2 has 52 video files, not more than (1+0.1)× the 50 on rec1" in result.output
    result = runner.invoke(app, ["ownership", "--explain", "cam-1", "--recorded", "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["source"] == "no recorded counts yet"
    result = runner.invoke(app, ["ownership", "--explain", "nope"])
    assert result.exit_code == 1 and "unknown camera 'nope'" in result.output
    assert PASSWORD_ENV


def test_cli_run_recompute_dry_run(farm: Farm, prefect_api: None) -> None:
    from farmkeeper.cli import app

    farm.footage("rec2", "cam-2", 20)
    result = runner.invoke(app, ["run", "recompute-ownership", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    cams = {c["camera"]: c for c in data["cameras"]}
    assert cams["cam-2"]["home"] == "rec2" and cams["cam-2"]["changed"] == "yes" and data["dry_run"] is True
    assert homes()["cam-2"][0] == "rec1"
    result = runner.invoke(app, ["run", "validate-farm", "--server", "rec1"])
    assert result.exit_code == 0, result.output

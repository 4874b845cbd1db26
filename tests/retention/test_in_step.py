"""Redundant availability: a floor's deletions on one write path are mirrored on the camera's other write paths.

A camera with ``storage_path: 'D:\\Data;*E:\\Data'`` under ``availability: redundant`` has every recording on
D: and E: of its server. When a free-space floor deletes recordings from D:, the retention sweep deletes
their copies on E: in the same run (rule ``in_step``, audited), except held copies; under failover
availability E: is never touched.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from farmkeeper import inventory
from farmkeeper.db import get_engine, session_scope
from farmkeeper.layout import parse_footage
from farmkeeper.models import Availability, Camera, DeletionAudit, StorageSettings
from farmkeeper.retention import HoldRange, in_step_targets, plan_in_step, redundant_write_drives
from flows.retention_sweep import RetentionSweepParams, in_step_work, retention_sweep
from tests.retention.conftest import RetentionFarm
from tests.retention.helpers import NOW, days_back, files_under, listing_of, policy, series, write

FLOOR = 6 * 2**20
CAMERAS = [{"id": "cam-001", "home": "rec1", "storage_path": "D:\\Data;*E:\\Data"},
           {"id": "cam-002", "home": "rec1", "storage_path": "D:\\Data"}]


def audit() -> list[DeletionAudit]:
    with session_scope(get_engine()) as session:
        return list(session.exec(select(DeletionAudit)))


def of(camera: str, paths: set[str]) -> set[str]:
    return {p for p in paths if p.startswith(f"video/{camera}/0/")}


def vol(result: dict[str, Any], label: str) -> dict[str, Any]:
    return next(v for v in result["volumes"] if v["volume"] == label)


def setup(farm: RetentionFarm, tmpfs: Path, availability: str) -> tuple[Path, Path, list[str]]:
    """D: a 16 MiB tmpfs below its 6 MiB floor (cam-001 and cam-002, 6 days hourly); E: cam-001's copies."""
    farm.apply(storage={"min_free": "6MiB", "limit_storage_days": False, "availability": availability},
               volumes={"rec1": ["D", "E"]}, paths={("rec1", "D"): tmpfs}, cameras=CAMERAS)
    d, e = farm.root("rec1", "D"), farm.root("rec1", "E")
    t = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    redundant = days_back("cam-001", 0, 6, step=timedelta(hours=1), now=t)
    write(d, redundant, size=40 * 1024)
    write(d, days_back("cam-002", 0, 6, step=timedelta(hours=1), now=t), size=40 * 1024)
    write(e, redundant, size=40 * 1024)
    (e / "video" / "cam-001" / "README.txt").write_text("not footage: never deleted")
    return d, e, redundant


@pytest.mark.usefixtures("prefect_api")
def test_a_floor_on_one_write_path_deletes_the_copies_on_the_other_in_step(retention_farm: RetentionFarm,
                                                                          tmpfs_volume: Path) -> None:
    d, e, redundant = setup(retention_farm, tmpfs_volume, "redundant")
    held = redundant[2]                                           # among the oldest: the floor would take it
    start = parse_footage(held).start
    with session_scope(get_engine()) as session:
        inventory.add_hold(session, "cam-001", start + timedelta(minutes=10), start + timedelta(minutes=20),
                           "incident 7")
    e_before = files_under(e)

    # dry run of every volume: E:'s own plan (nothing) carries the planned in-step deletions; nothing changes
    dry = retention_sweep(RetentionSweepParams(dry_run=True))
    planned_e = vol(dry, "\\\\rec1\\DATAE")
    assert planned_e["rules"]["in_step"]["files"] > 0 and planned_e["in_step"]["from"] == ["D"]
    assert files_under(e) == e_before and audit() == []

    # the health check's floor sweep: only D: is below its floor and swept; E: is listed for the copies
    result = retention_sweep(RetentionSweepParams(volumes=["rec1:D"]))
    assert result["errors"] == []
    assert vol(result, "\\\\rec1\\DATAD")["free_after"] >= FLOOR
    gone_d = of("cam-001", set(redundant) - files_under(d))
    assert gone_d and held not in gone_d                          # the floor took cam-001's oldest on D:
    assert of("cam-001", files_under(d)) == of("cam-001", files_under(e))   # D: and E: hold the same recordings
    assert held in files_under(e) and held in files_under(d)
    assert e_before - files_under(e) == gone_d                    # nothing else on E: (README stays)
    assert planned_e["rules"]["in_step"]["files"] == len(gone_d)

    rows = audit()
    in_step = {r.path for r in rows if r.rule == "in_step"}
    assert in_step == gone_d
    assert {(r.server, r.drive, r.outcome, r.run_id) for r in rows if r.rule == "in_step"} == {
        ("rec1", "E", "deleted", result["run_id"])}
    assert {r.rule for r in rows if r.drive == "D"} == {"min_free"}
    report_e = vol(result, "\\\\rec1\\DATAE")
    assert report_e["deleted"]["in_step"]["files"] == len(gone_d) and report_e["in_step"]["from"] == ["D"]

    again = retention_sweep(RetentionSweepParams(volumes=["rec1:D"]))
    assert sum(v.get("deleted_files", 0) for v in again["volumes"]) == 0


@pytest.mark.usefixtures("prefect_api")
def test_failover_availability_never_touches_the_other_write_path(retention_farm: RetentionFarm,
                                                                 tmpfs_volume: Path) -> None:
    d, e, redundant = setup(retention_farm, tmpfs_volume, "failover")
    e_before = files_under(e)
    result = retention_sweep(RetentionSweepParams())
    assert result["errors"] == []
    assert of("cam-001", set(redundant) - files_under(d))        # the floor on D: took some of cam-001
    assert files_under(e) == e_before
    assert {r.rule for r in audit()} == {"min_free"}
    assert "in_step" not in vol(result, "\\\\rec1\\DATAE")


def test_in_step_targets_are_the_other_write_drives_of_the_same_server() -> None:
    cams = [Camera(id="a", storage_path="D:\\Data;*E:\\Data;F:\\Data", declared_home="r", home="r"),
            Camera(id="b", storage_path="D:\\Data", declared_home="r", home="r"),
            Camera(id="c", declared_home="r", home="r"),                            # default path: one drive
            Camera(id="x", storage_path="D:\\Data;D:\\Other", declared_home="r", home="r")]
    redundant = StorageSettings(availability=Availability.redundant)
    drives = redundant_write_drives(redundant, cams)
    assert drives == {"a": ("D", "E", "F")}
    assert redundant_write_drives(StorageSettings(availability=Availability.failover), cams) == {}
    ra = "video/a/0/2024-06-01/10/20240601T100000Z.mp4"
    rb = "video/b/0/2024-06-01/10/20240601T100000Z.mp4"
    sources = {"D": {"a": [ra, "video/a/notes.txt", rb], "b": [rb]}, "E": {"a": ["meta/a/2024-06-01/10/"
                                                                                "20240601T100000Z.json"]}}
    # F: is not a volume of this server: nothing there; a path of another camera or outside the layout: never
    assert in_step_targets(sources, drives, ["D", "E"]) == {
        "E": {"a": {ra}}, "D": {"a": {"meta/a/2024-06-01/10/20240601T100000Z.json"}}}
    # the flow: each sibling volume of the same server gets the source paths of the cameras writing to it
    work = in_step_work([{"server": "r", "drive": "D", "floor_paths": {"a": [ra]}, "write_drives": {"a": ["D", "E"]}},
                         {"server": "q", "drive": "D", "floor_paths": {}, "write_drives": {}}])
    assert work == {("r", "E"): {"D": {"a": [ra]}}}


def test_a_held_copy_or_one_a_copy_job_uses_stays() -> None:
    cam = Camera(id="a", storage_path="D:\\Data;*E:\\Data", declared_home="r", home="r")
    paths = series("a", 0, NOW - timedelta(days=3), 4, step=timedelta(hours=1))
    start = parse_footage(paths[1]).start
    plan = plan_in_step(listing_of(paths), {"a": set(paths[:3]), "ghost": {paths[3]}}, policy([cam]), space=None,
                        now=NOW.timestamp(), server="r", drive="E", sources=["D"],
                        holds=[HoldRange("a", start.timestamp() + 60, start.timestamp() + 120)],
                        protected={paths[2]})
    assert list(plan.deletions["relpath"]) == [paths[0]] and set(plan.deletions["rule"]) == {"in_step"}
    assert plan.kept["held"]["files"] == 1 and plan.kept["in_flight"]["files"] == 1


@pytest.mark.usefixtures("prefect_api")
def test_central_storage_is_a_write_path_like_any_other(retention_farm: RetentionFarm, tmpfs_volume: Path,
                                                        tmp_path: Path) -> None:
    """D: local and below its floor, N: a NAS share both servers list (swept once, through rec1)."""
    nas = tmp_path / "nas"
    nas.mkdir()
    servers = [{"name": name, "host": f"127.0.0.{20 + i}", "role": "primary", "master": i == 0, "health": "smb",
                "volumes": [{"drive": "D", "path": str(tmpfs_volume if name == "rec1" else tmp_path / "d2")},
                            {"drive": "N", "unc": "\\\\nas01\\cctv", "path": str(nas)}]}
               for i, name in enumerate(["rec1", "rec2"])]
    (tmp_path / "d2").mkdir()
    retention_farm.apply(storage={"min_free": "6MiB", "limit_storage_days": False, "availability": "redundant"},
                         servers=servers,
                         cameras=[{"id": "cam-001", "home": "rec1", "storage_path": "D:\\Data;*N:\\Data"},
                                  {"id": "cam-002", "home": "rec1", "storage_path": "D:\\Data"}])
    t = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    redundant = days_back("cam-001", 0, 6, step=timedelta(hours=1), now=t)
    write(tmpfs_volume, redundant, size=40 * 1024)
    write(tmpfs_volume, days_back("cam-002", 0, 6, step=timedelta(hours=1), now=t), size=40 * 1024)
    write(nas, redundant, size=40 * 1024)

    result = retention_sweep(RetentionSweepParams())
    assert result["errors"] == []
    gone = of("cam-001", set(redundant) - files_under(tmpfs_volume))
    assert gone and of("cam-001", files_under(nas)) == of("cam-001", files_under(tmpfs_volume))
    assert {(r.server, r.drive) for r in audit() if r.rule == "in_step"} == {("rec1", "N")}
    assert vol(result, "\\\\rec1\\DATAN")["deleted"]["in_step"]["files"] == len(gone)
    assert vol(result, "\\\\nas01\\cctv (N: of rec2)")["skipped"].startswith("central storage")


@pytest.mark.usefixtures("prefect_api")
def test_a_sibling_another_sweep_works_on_is_left_and_the_sweep_says_so(retention_farm: RetentionFarm,
                                                                        tmpfs_volume: Path) -> None:
    from farmkeeper.retention import claim_volume

    _d, e, _redundant = setup(retention_farm, tmpfs_volume, "redundant")
    e_before = files_under(e)
    with session_scope(get_engine()) as session:
        assert claim_volume(session, "rec1", "E", "other-run") is None
    result = retention_sweep(RetentionSweepParams(volumes=["rec1:D"], notify=False))
    assert files_under(e) == e_before
    assert any("not deleted in step" in a and "other-run" in a for a in result["alerts"])


@pytest.mark.usefixtures("prefect_api")
def test_both_write_paths_below_their_floors_end_with_the_same_recordings(retention_farm: RetentionFarm,
                                                                          tmpfs_volume: Path,
                                                                          tmp_path: Path) -> None:
    """D: and E: both swept in the run: each floor takes a different share of cam-001 (D: has older footage
    of cam-002 to take first, E:'s other camera is newer); the step deletes on each the copies the other's
    floor took."""
    e = tmp_path / "tmpfs-e"
    e.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(e)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {e} (run the tests as root): {mounted.stderr.strip()}", pytrace=False)
    try:
        retention_farm.apply(storage={"min_free": "6MiB", "limit_storage_days": False,
                                      "availability": "redundant"},
                             volumes={"rec1": ["D", "E"]}, paths={("rec1", "D"): tmpfs_volume, ("rec1", "E"): e},
                             cameras=[*CAMERAS, {"id": "cam-003", "home": "rec1", "storage_path": "E:\\Data"}])
        t = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        hourly = timedelta(hours=1)
        redundant = days_back("cam-001", 0, 6, step=hourly, now=t)
        for root in (tmpfs_volume, e):
            write(root, redundant, size=40 * 1024)
        write(tmpfs_volume, days_back("cam-002", 0, 8, step=hourly, now=t), size=40 * 1024)
        write(e, days_back("cam-003", 0, 3, step=hourly, now=t), size=80 * 1024)   # newer: E: takes cam-001

        result = retention_sweep(RetentionSweepParams())
        assert result["errors"] == []
        rows = audit()
        floors = {d: {r.path for r in rows if r.drive == d and r.rule == "min_free"
                      and r.path.startswith("video/cam-001/")} for d in "DE"}
        in_step = {d: {r.path for r in rows if r.drive == d and r.rule == "in_step"} for d in "DE"}
        assert floors["D"] and floors["E"] and floors["D"] != floors["E"]
        assert of("cam-001", files_under(tmpfs_volume)) == of("cam-001", files_under(e))
        assert of("cam-001", set(redundant) - files_under(e)) == floors["D"] | floors["E"]
        assert in_step["D"] == floors["E"] - floors["D"] and in_step["E"] == floors["D"] - floors["E"]
        assert in_step["D"]                                       # E:'s floor took more of cam-001 than D:'s
        for drive in "DE":
            v = vol(result, f"\\\\rec1\\DATA{drive}")
            assert v["deleted"]["min_free"]["files"] > 0
            assert v["deleted"]["in_step"]["files"] == len(in_step[drive])
    finally:
        subprocess.run(["umount", "-l", str(e)], capture_output=True)

"""Carrying out plans on real volumes: audit rows match deletions, interrupted sweeps settle, leases."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from farmkeeper import audit
from farmkeeper.db import get_engine, session_scope
from farmkeeper.models import DeletionAudit, utcnow
from farmkeeper.retention import (
    claim_volume,
    execute_plan,
    plan_volume,
    read_listing,
    reconcile_pending,
    release_volume,
)
from farmkeeper.storage import VolumeAccess, open_volume
from farmkeeper.storage.base import Space
from tests.retention.helpers import NOW, camera, days_back, files_under, policy, series, write

T = NOW.timestamp()


def sessions() -> Any:
    return session_scope(get_engine())


def audit_paths() -> dict[str, str]:
    with sessions() as s:
        return {r.path: r.outcome for r in s.exec(select(DeletionAudit))}


def sweep(access: VolumeAccess, pol: Any, *, prefer: str = "auto", before: Any = None, **kw: Any) -> Any:
    with open_volume(access, prefer=prefer) as volume:  # type: ignore[arg-type]
        listing = read_listing(volume.walk())
        plan = plan_volume(listing, pol, space=volume.space(), now=T, server=access.server, drive=access.drive,
                           **kw)
        if before:
            before(plan)
        return plan, execute_plan(volume, plan, sessions=sessions, run_id="run-1", batch_size=50)


def test_failed_deletes_are_audited_as_failed(tmp_path: Path, inventory_url: str) -> None:
    root = tmp_path / "D"
    paths = write(root, days_back("cam-1", 0, 10))
    access = VolumeAccess(server="rec1", drive="D", local_path=str(root))
    stuck: list[str] = []

    def sabotage(plan: Any) -> None:  # a planned file turns into a non-empty folder: unlink fails
        rel = sorted(plan.deletions["relpath"])[7]
        (root / rel).unlink()
        (root / rel).mkdir()
        (root / rel / "inner").write_text("x")
        stuck.append(rel)

    plan, done = sweep(access, policy([camera("cam-1")]), before=sabotage)
    planned = set(plan.deletions["relpath"])
    assert set(done.failed) == set(stuck)
    got = audit_paths()
    assert {p: o for p, o in got.items() if p not in stuck} == {p: "deleted" for p in planned - set(stuck)}
    assert got[stuck[0]].startswith("failed: ")
    assert files_under(root) == (set(paths) - planned) | {stuck[0] + "/inner"}
    assert done.files == len(planned) - 1 and done.bytes == 100 * (len(planned) - 1)


def test_vanished_files_count_as_missing(tmp_path: Path, inventory_url: str) -> None:
    root = tmp_path / "D"
    write(root, days_back("cam-1", 0, 10))
    access = VolumeAccess(server="rec1", drive="D", local_path=str(root))
    plan, done = sweep(access, policy([camera("cam-1")]),
                       before=lambda plan: (root / sorted(plan.deletions["relpath"])[0]).unlink())
    assert done.missing == 1 and not done.failed


def test_interrupted_sweep_is_settled_on_the_next_run(tmp_path: Path, inventory_url: str) -> None:
    root = tmp_path / "D"
    paths = write(root, series("cam-1", 0, NOW - timedelta(days=9), 4))
    (root / paths[0]).unlink()                 # deleted before the crash
    with sessions() as s:
        for p in paths[:2]:
            s.add(DeletionAudit(at=utcnow(), server="rec1", drive="D", path=p, size=100, rule="age",
                                camera_id="cam-1", run_id="crashed", outcome="pending"))
    access = VolumeAccess(server="rec1", drive="D", local_path=str(root))
    with open_volume(access) as volume, sessions() as s:
        assert reconcile_pending(s, "rec1", "D", read_listing(volume.walk())) == 2
    assert audit_paths() == {paths[0]: "deleted", paths[1]: audit.INTERRUPTED}
    sweep(access, policy([camera("cam-1")]), force=True)
    assert audit_paths() == {p: "deleted" for p in paths}     # paths[1]: the interrupted row and the new one
    assert files_under(root) == set()


def test_lease_keeps_two_sweeps_off_one_volume(inventory_url: str) -> None:
    with sessions() as s:
        assert claim_volume(s, "rec1", "D", "a") is None
    with sessions() as s:
        assert claim_volume(s, "rec1", "D", "b") == "a"
        assert claim_volume(s, "rec1", "D", "a") is None       # renewing is fine
    with sessions() as s:
        release_volume(s, "rec1", "D", "a")
    with sessions() as s:
        assert claim_volume(s, "rec1", "D", "b") is None


@pytest.mark.samba
def test_age_and_audit_over_samba(samba_farm: Any, inventory_url: str) -> None:
    server = samba_farm.servers[0]
    share = server.share_path("DATAD")
    try:
        paths = write(share, days_back("cam-s1", 0, 10) + days_back("cam-s1", None, 10))
        junk = write(share, ["video/cam-s1/0/notes.txt", "other/file.bin"])
        access = server.access("D")
        plan, done = sweep(access, policy([camera("cam-s1")], meta_days=30), prefer="smb")
        planned = set(plan.deletions["relpath"])
        assert planned and {p for p in planned if p.startswith("meta/")}
        assert not done.failed and done.files == len(planned)
        assert files_under(share) == (set(paths) - planned) | set(junk)
        assert set(audit_paths()) == planned
        # empty day folders pruned over SMB
        days = {p.split("/")[3] for p in set(paths) - planned if p.startswith("video/")}
        assert {d.name for d in (share / "video" / "cam-s1" / "0").iterdir() if d.is_dir()} == days
    finally:
        for sub in ("video", "meta", "other"):
            shutil.rmtree(share / sub, ignore_errors=True)


@pytest.mark.samba
def test_floors_over_samba_on_a_full_share(samba_full_share: Any, inventory_url: str) -> None:
    server, _, path = samba_full_share
    try:
        write(path, days_back("cam-f", 0, 1, step=timedelta(minutes=15)), size=64 * 1024)  # 96 x 64 KiB = 6 MiB
        access = server.access("F")
        with open_volume(access, prefer="smb") as volume:
            before = volume.space()
        floor = before.free + 1024 * 1024
        plan, done = sweep(access, policy([camera("cam-f")], limit=False, min_free=floor), prefer="smb")
        assert plan.floor_rule == "min_free" and plan.floors_met and not done.failed
        with open_volume(access, prefer="smb") as volume:
            assert volume.space().free >= floor
        assert done.files == len(plan.deletions) and 16 <= done.files <= 18
    finally:
        for sub in ("video", "meta"):
            shutil.rmtree(path / sub, ignore_errors=True)


def test_only_floor_deletions_feed_the_in_step_step(tmp_path: Path, inventory_url: str) -> None:
    """What the in-step step deletes on the other write paths comes from the floors' deletions only: an age
    deletion is each volume's own sweep's (with its own purge guard), never carried over in step."""
    root = tmp_path / "D"
    paths = write(root, days_back("cam-1", 0, 10))
    pol = policy([camera("cam-1")], default_days=7, min_free=10**6 + 100 * 600)
    with open_volume(VolumeAccess(server="rec1", drive="D", local_path=str(root)), prefer="local") as volume:
        plan = plan_volume(read_listing(volume.walk()), pol, space=Space(10**9, 10**6), now=T, server="rec1",
                           drive="D")
        rules = dict(zip(plan.deletions["relpath"], plan.deletions["rule"], strict=True))
        floor = {p for p, r in rules.items() if r == "min_free"}
        assert floor and {p for p, r in rules.items() if r == "age"} and not plan.blocked
        done = execute_plan(volume, plan, sessions=sessions, run_id="run-1", batch_size=200)
    assert set(rules) == set(paths) - files_under(root)
    assert {cam: set(rels) for cam, rels in done.floor_deleted.items()} == {"cam-1": floor}

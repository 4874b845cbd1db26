"""One flow at a time on a camera's footage on a volume: retention against swap-back, driven step by step.

Issue 19, points 1-2: retention deleted files a swap-back had planned (it read the protected set once,
before its walk), and settled a live copy job's ``pending`` audit rows as if a sweep had been interrupted.
Every interleaving is driven at the exact step by the core's pause points (``farmkeeper.hooks``).
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from farmkeeper import claims, hooks
from farmkeeper import retention as core
from farmkeeper.copyjobs import (
    BatchKey,
    FootageBusyError,
    JobOptions,
    SourceVolume,
    claim_job,
    finish_job,
    plan_job,
    run_batch,
    scan_sources,
)
from farmkeeper.models import DeletionAudit, utcnow
from farmkeeper.storage import VolumeAccess, open_volume
from farmkeeper.storage.base import Volume
from tests.concurrency.conftest import Inventory, Pause, Worker, apply_spec, farm_spec
from tests.helpers import write_footage

FILES = 7            # segments of cam-1 on spare1 (each a video file and a metadata file): 14 files, all expired


def volume(tmp_path: Path, server: str) -> Volume:
    return open_volume(VolumeAccess(server, "D", local_path=str(tmp_path / "vol" / server / "D")), prefer="local")


@pytest.fixture
def farm(inv: Inventory, tmp_path: Path) -> dict[str, str]:
    """cam-1 recorded 14 files on spare1 long ago (30-day rule: expired) and 6 yesterday; rec1 is its home.
    cam-2's recent footage there keeps the sweep plausible (retention's purge guards)."""
    apply_spec(inv, farm_spec(tmp_path, keep_days=30))
    root = tmp_path / "vol" / "spare1" / "D"
    yesterday = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    write_footage(root, "cam-2", 20, size=4096, start=yesterday)
    return write_footage(root, "cam-1", FILES, size=4096) | write_footage(root, "cam-1", 3, size=4096,
                                                                         start=yesterday, seed=1)


def expired(farm: dict[str, str]) -> set[str]:
    return {p for p in farm if "/2026-03-01/" in p}


def retention_plan(inv: Inventory, vol: Volume) -> core.VolumePlan:
    """What a sweep of spare1 decides after its walk (the protected set read then)."""
    from farmkeeper import inventory

    with inv.session() as s:
        policy = core.build_policy(inventory.storage_settings(s), inventory.farm_settings(s),
                                   inventory.list_cameras(s))
        protected = core.in_flight_paths(s, "spare1", "D")
    return core.plan_volume(core.read_listing(vol.walk()), policy, space=None, now=time.time(),
                            protected=protected, server="spare1", drive="D")


def sweep(inv: Inventory, vol: Volume, plan: core.VolumePlan, run: str = "retention-r1") -> core.Execution:
    return core.execute_plan(vol, plan, sessions=inv.session, run_id=run)


def swap_back(inv: Inventory, tmp_path: Path) -> int:
    """A swap-back's plan of cam-1: scan spare1, then the job, its claims and its items in one transaction."""
    scanned_at = utcnow()
    src = volume(tmp_path, "spare1")
    files, scan = scan_sources([(SourceVolume("spare1", "D", r"\\spare1\DATAD"), src)], ["cam-1"], "rec1", ["D"])
    with inv.session() as s:
        job, _ = claim_job(s, kind="swap-back", cameras=["cam-1"], target="rec1", options=JobOptions(),
                           volumes=[("rec1", "D"), ("spare1", "D")], scanned_at=scanned_at)
        plan_job(s, job, files, scan)
        assert job.id is not None
        return job.id


def copy(inv: Inventory, tmp_path: Path, job_id: int) -> None:
    run_batch(inv.session, job_id, BatchKey("spare1", "D", "rec1", "D"), volume(tmp_path, "spare1"),
              volume(tmp_path, "rec1"), JobOptions())
    with inv.session() as s:
        finish_job(s, job_id)


def audit_rows(inv: Inventory) -> list[tuple[str, str | None, str]]:
    with inv.session() as s:
        return [(p, o, r) for p, o, r in s.execute(sa.select(DeletionAudit.path, DeletionAudit.run_id,  # type: ignore[call-overload]
                                                              DeletionAudit.outcome))]


def on_spare1(tmp_path: Path) -> set[str]:
    """cam-1's files on spare1."""
    root = tmp_path / "vol" / "spare1" / "D"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and "cam-1" in p.parts}


def test_retention_keeps_the_files_of_a_swap_back_planned_during_its_walk(
        inv: Inventory, tmp_path: Path, farm: dict[str, str]) -> None:
    vol = volume(tmp_path, "spare1")
    plan = retention_plan(inv, vol)                    # the walk: all 14 files expired, nothing protected yet
    assert plan.totals()["age"]["files"] + plan.totals()["metadata_age"]["files"] == 2 * FILES
    job_id = swap_back(inv, tmp_path)                  # the swap-back plans them while retention walks
    done = sweep(inv, vol, plan)
    assert done.files == 0 and done.claimed == 2 * FILES and done.claimed_by == {f"copy-job-{job_id}"}
    assert on_spare1(tmp_path) == set(farm), "retention deleted footage a swap-back holds"
    assert audit_rows(inv) == []
    copy(inv, tmp_path, job_id)
    rows = audit_rows(inv)
    assert sorted(p for p, _o, _r in rows) == sorted(farm), "every deletion has exactly one audit row"
    assert {(o, r) for _p, o, r in rows} == {(f"copy-job-{job_id}", "deleted")}
    with inv.session() as s:
        assert claims.live_owners(s) == set(), "the job's claims end with it"


def test_retention_keeps_a_running_jobs_files_when_its_worker_died_during_the_walk(
        inv: Inventory, tmp_path: Path, farm: dict[str, str]) -> None:
    """The claims of a swap-back planned during the walk are dead (its worker was killed) and taken over at
    once: the protected set read again right before the batch still keeps the files of the running job."""
    from farmkeeper.models import FootageClaim
    from tests.concurrency.test_claims import dead_pid

    vol = volume(tmp_path, "spare1")
    plan = retention_plan(inv, vol)                    # the walk: all 14 files expired, nothing protected yet
    job_id = swap_back(inv, tmp_path)
    with inv.session() as s:                           # its worker dies: the job stays running, its claims die
        s.execute(sa.update(FootageClaim).where(FootageClaim.owner == f"copy-job-{job_id}")  # type: ignore[arg-type]
                  .values(pid=dead_pid()))
    done = sweep(inv, vol, plan)
    assert done.files == 0 and done.claimed == 2 * FILES and done.claimed_by == {"a running copy job"}
    assert on_spare1(tmp_path) == set(farm), "retention deleted footage of a running copy job"
    assert audit_rows(inv) == []


def test_a_swap_back_waits_for_the_batch_retention_is_deleting(
        inv: Inventory, tmp_path: Path, farm: dict[str, str]) -> None:
    vol = volume(tmp_path, "spare1")
    plan = retention_plan(inv, vol)
    pause = Pause()
    with hooks.installed("retention.batch-claimed", pause):
        sweeping = Worker(lambda: sweep(inv, vol, plan), "retention")
        sweeping.start()
        pause.wait()                                    # retention holds cam-1 on spare1, about to delete
        with pytest.raises(FootageBusyError, match="being deleted by retention-r1"):
            swap_back(inv, tmp_path)
        pause.release()
        done = sweeping.join_ok()
    assert done.files == 2 * FILES and on_spare1(tmp_path) == set(farm) - expired(farm)
    job_id = swap_back(inv, tmp_path)                   # the retry scans again: the expired files are gone
    with inv.session() as s:
        summary = finish_job(s, job_id)
    assert summary.files_total == len(farm) - 2 * FILES
    assert Counter(r for _p, _o, r in audit_rows(inv)) == {"deleted": 2 * FILES}


def test_a_scan_older_than_a_deletion_is_refused(inv: Inventory, tmp_path: Path, farm: dict[str, str]) -> None:
    """The swap-back scanned while retention (not yet holding cam-1) was about to delete: its claim sees the
    deletions since its scan and refuses, so it never plans from a stale view."""
    vol = volume(tmp_path, "spare1")
    plan = retention_plan(inv, vol)
    scanned_at = utcnow()                                 # the swap-back's scan
    sweep(inv, vol, plan)                                 # retention deletes before the swap-back claims
    with pytest.raises(FootageBusyError, match="deleted during the scan"), inv.session() as s:
        claim_job(s, kind="swap-back", cameras=["cam-1"], target="rec1", options=JobOptions(),
                  volumes=[("spare1", "D")], scanned_at=scanned_at)
    with inv.session() as s:
        assert claims.live_owners(s) == set(), "the refused claim rolled back with its job"


def test_retention_leaves_a_live_copy_jobs_pending_rows_to_it(
        inv: Inventory, tmp_path: Path, farm: dict[str, str]) -> None:
    """The swap-back is stopped between writing its pending audit rows and deleting the sources; a retention
    sweep's reconciliation must not settle them; the job then deletes and settles each row once."""
    job_id = swap_back(inv, tmp_path)
    pause = Pause()
    with hooks.installed("audit.pending-written", pause):
        copying = Worker(lambda: copy(inv, tmp_path, job_id), "swap-back")
        copying.start()
        pause.wait()
        assert Counter(r for _p, _o, r in audit_rows(inv)) == {"pending": len(farm)}
        vol = volume(tmp_path, "spare1")
        with inv.session() as s:
            assert core.reconcile_pending(s, "spare1", "D", core.read_listing(vol.walk()), owner="retention-r2") == 0
        pause.release()
        copying.join_ok()
    rows = audit_rows(inv)
    assert sorted(p for p, _o, _r in rows) == sorted(farm)
    assert {(o, r) for _p, o, r in rows} == {(f"copy-job-{job_id}", "deleted")}


def test_a_dead_owners_pending_rows_are_settled_by_the_next_sweep(
        inv: Inventory, tmp_path: Path, farm: dict[str, str]) -> None:
    from tests.concurrency.test_claims import dead_pid

    dead = claims.Owner("copy-job-99", claims.Owner.here("x").host, dead_pid())
    gone, kept = sorted(farm)[:3], sorted(farm)[3:6]
    with inv.session() as s:
        claims.take(s, dead, [("cam-1", "spare1", "D")])
        s.execute(sa.insert(DeletionAudit), [
            {"at": utcnow(), "server": "spare1", "drive": "D",
             "path": p, "size": 1, "rule": "source_copied", "camera_id": "cam-1", "run_id": "copy-job-99",
             "outcome": "pending"} for p in gone + kept])
    root = tmp_path / "vol" / "spare1" / "D"
    for p in gone:                                        # the killed job deleted these before it could settle
        (root / p).unlink()
    with inv.session() as s:
        assert core.reconcile_pending(s, "spare1", "D", core.read_listing(volume(tmp_path, "spare1").walk()),
                                      owner="retention-r3") == len(gone) + len(kept)
    settled = {p: r for p, _o, r in audit_rows(inv)}
    assert {p: settled[p] for p in gone} == dict.fromkeys(gone, "deleted")
    assert all(settled.get(p, "failed: not deleted").startswith("failed") for p in kept), settled

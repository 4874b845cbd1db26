"""Copy-job invariants on SQLite and local volumes: a crash anywhere leaves every file somewhere, verified.

Crash points: after the copy but before its result is recorded; after verification but before the delete
(pending audit rows); after the delete but before the rows are settled.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from farmkeeper import audit, copyjobs
from farmkeeper.models import CopyItem, CopyItemState, DeletionAudit
from farmkeeper.storage import CopyItem as StorageItem
from farmkeeper.storage import DeleteResult, Volume, copy_files
from tests.copyjobs.conftest import LocalFarm, sessions
from tests.helpers import write_footage

OPTIONS = copyjobs.JobOptions(connections=2)


def plan(farm: LocalFarm, options: copyjobs.JobOptions = OPTIONS) -> copyjobs.PlanReport:
    with farm.volume("rec2") as src:
        files, scan = copyjobs.scan_sources([(copyjobs.SourceVolume("rec2", "D", r"\\rec2\DATAD"), src)],
                                            ["cam-1"], "rec1", ["D"])
    with sessions() as s:
        job, _ = copyjobs.claim_job(s, kind="swap-back", cameras=["cam-1"], target="rec1", options=options)
        return copyjobs.plan_job(s, job, files, scan)


def run(farm: LocalFarm, report: copyjobs.PlanReport, *, patch: Callable[[Volume, Volume], None] | None = None,
        options: copyjobs.JobOptions = OPTIONS) -> copyjobs.BatchResult:
    assert report.job_id is not None and len(report.batches) == 1
    with farm.volume("rec2") as src, farm.volume("rec1") as dst:
        if patch is not None:
            patch(src, dst)
        return copyjobs.run_batch(sessions, report.job_id, report.batches[0], src, dst, options)


def item_states() -> dict[str, CopyItemState]:
    with sessions() as s:
        return {i.relpath: i.state for i in s.exec(select(CopyItem))}


def audit_rows() -> list[tuple[str, str]]:
    with sessions() as s:
        return sorted((r.path, r.outcome) for r in s.exec(select(DeletionAudit)))


def digest(root: Path, rels: Any) -> dict[str, str]:
    return {r: hashlib.sha256((root / r).read_bytes()).hexdigest() for r in rels if (root / r).is_file()}


def test_crash_between_copy_and_record_finds_the_copy_identical(local_farm: Any) -> None:
    farm = local_farm()
    src_files = write_footage(farm.share("rec2"), "cam-1", 5, size=4096)
    report = plan(farm)
    with farm.volume("rec2") as src, farm.volume("rec1") as dst:   # copied, then the process died
        copy_files(src, dst, [StorageItem(p, (farm.share("rec2") / p).stat().st_size,
                                          (farm.share("rec2") / p).stat().st_mtime) for p in src_files])
    assert set(item_states().values()) == {CopyItemState.pending}
    result = run(farm, report)
    assert result.skipped == len(src_files) and result.copied == 0 and result.removed == len(src_files)
    assert digest(farm.share("rec1"), src_files) == src_files
    assert not digest(farm.share("rec2"), src_files)
    assert audit_rows() == sorted((p, "deleted") for p in src_files)


@pytest.mark.parametrize("when", ["before the delete", "after the delete"])
def test_crash_around_the_delete_is_settled_by_the_next_run(local_farm: Any, when: str) -> None:
    farm = local_farm()
    src_files = write_footage(farm.share("rec2"), "cam-1", 5, size=4096)
    report = plan(farm)

    def die(src: Volume, dst: Volume) -> None:
        real = src.delete_files

        def killed(relpaths: Any, prune_dirs: bool = True) -> DeleteResult:
            if when == "after the delete":
                real(relpaths, prune_dirs=prune_dirs)
            raise KeyboardInterrupt("process killed")

        src.delete_files = killed  # type: ignore[method-assign]

    with pytest.raises(KeyboardInterrupt):
        run(farm, report, patch=die)
    # verified copies at home, items still "copied", audit rows pending; sources there unless deleted
    assert digest(farm.share("rec1"), src_files) == src_files
    assert set(item_states().values()) == {CopyItemState.copied}
    assert {o for _, o in audit_rows()} == {"pending"}
    assert bool(digest(farm.share("rec2"), src_files)) == (when == "before the delete")
    with sessions() as s:       # the job's worker died: the next claim resumes it
        copyjobs.fail_job(s, report.job_id or 0, "killed")
    result = run(farm, plan(farm))
    assert result.removed == len(src_files) and not result.failed
    assert set(item_states().values()) == {CopyItemState.removed}
    assert audit_rows() == sorted((p, "deleted") for p in src_files)   # one row per file, its true outcome
    assert digest(farm.share("rec1"), src_files) == src_files and not digest(farm.share("rec2"), src_files)


def test_a_failed_source_delete_is_audited_as_failed_and_retried(local_farm: Any) -> None:
    farm = local_farm()
    src_files = write_footage(farm.share("rec2"), "cam-1", 3, size=4096, meta=False)
    stuck = sorted(src_files)[0]
    report = plan(farm)

    def refuse_one(src: Volume, dst: Volume) -> None:
        real = src.delete_files

        def partly(relpaths: Any, prune_dirs: bool = True) -> DeleteResult:
            rels = list(relpaths)
            out = real([r for r in rels if r != stuck], prune_dirs=prune_dirs)
            out.failed[stuck] = "access denied"
            return out

        src.delete_files = partly  # type: ignore[method-assign]

    result = run(farm, report, patch=refuse_one)
    assert result.removed == 2 and list(result.failed) == [stuck]
    assert dict(audit_rows())[stuck] == "failed: access denied"
    assert (farm.share("rec2") / stuck).exists()
    with sessions() as s:
        left = s.exec(select(CopyItem).where(col(CopyItem.relpath) == stuck)).one()
        assert left.state == CopyItemState.copied and "source not deleted" in (left.error or "")
    result = run(farm, report)
    assert result.removed == 1 and audit_rows() == sorted((p, audit.DELETED) for p in src_files)


def at_verification_listing(action: Callable[[], None]) -> Callable[[Volume, Volume], None]:
    """A ``run`` patch: ``action`` runs when the job lists the destination to verify (the copies are done)."""
    def patch(src: Volume, dst: Volume) -> None:
        real_walk = dst.walk

        def walk(*args: Any, **kwargs: Any) -> Any:
            action()
            return real_walk(*args, **kwargs)

        dst.walk = walk  # type: ignore[method-assign]

    return patch


@pytest.mark.parametrize("change", ["appended", "rewritten same size"])
def test_a_source_changed_after_its_copy_is_not_deleted_and_is_copied_again(local_farm: Any, change: str) -> None:
    farm = local_farm()
    src_files = write_footage(farm.share("rec2"), "cam-1", 4, size=4096, meta=False)
    changed = sorted(src_files)[0]
    report = plan(farm)

    def write_after_copy() -> None:
        path = farm.share("rec2") / changed
        if change == "appended":
            with path.open("ab") as f:
                f.write(b"written after the copy")
        else:                                         # same size, new bytes, a later mtime
            st = path.stat()
            path.write_bytes(path.read_bytes()[:-22] + b"written after the copy")
            os.utime(path, (st.st_atime, st.st_mtime + 10))

    result = run(farm, report, patch=at_verification_listing(write_after_copy))
    assert changed in result.failed and "source changed after its copy" in result.failed[changed]
    assert (farm.share("rec2") / changed).is_file(), "a source changed after its copy is never deleted"
    assert item_states()[changed] == CopyItemState.pending
    assert changed not in {p for p, _ in audit_rows()}
    assert result.removed == len(src_files) - 1
    with sessions() as s:
        copyjobs.fail_job(s, report.job_id or 0, "incomplete")
    again = run(farm, plan(farm))
    assert again.removed == 1 and not again.failed
    home = (farm.share("rec1") / changed).parent      # the new bytes at home (a conflict copy beside the first)
    assert any(f.read_bytes().endswith(b"written after the copy") for f in home.iterdir() if f.is_file())
    assert not (farm.share("rec2") / changed).exists()


def test_a_copy_that_shrank_at_the_destination_before_the_delete_keeps_its_source(local_farm: Any) -> None:
    """The destination is listed again right before the sources go: a copy no longer whole there (truncated,
    replaced) fails verification and its source stays."""
    farm = local_farm()
    src_files = write_footage(farm.share("rec2"), "cam-1", 3, size=4096, meta=False)
    shrunk = sorted(src_files)[0]
    report = plan(farm)

    def truncate_after_copy() -> None:
        with (farm.share("rec1") / shrunk).open("r+b") as f:
            f.truncate(100)

    result = run(farm, report, patch=at_verification_listing(truncate_after_copy))
    assert shrunk in result.failed and "verification failed" in result.failed[shrunk]
    assert (farm.share("rec2") / shrunk).is_file(), "the source of a copy not whole at the destination was deleted"
    assert item_states()[shrunk] == CopyItemState.failed and shrunk not in {p for p, _ in audit_rows()}
    assert result.removed == len(src_files) - 1


def test_a_job_taken_away_before_the_delete_deletes_nothing(local_farm: Any) -> None:
    """Every delete chunk starts with the job's heartbeat in the transaction that writes its audit rows: a
    job cancelled or failed elsewhere after its copies (an operator, another run) deletes no source."""
    farm = local_farm()
    src_files = write_footage(farm.share("rec2"), "cam-1", 3, size=4096, meta=False)
    report = plan(farm)

    def fail_after_copy(src: Volume, dst: Volume) -> None:
        real_walk = dst.walk

        def walk(*args: Any, **kwargs: Any) -> Any:     # the verification listing: the copies are done
            with sessions() as s:
                copyjobs.fail_job(s, report.job_id or 0, "cancelled by the operator")
            return real_walk(*args, **kwargs)

        dst.walk = walk  # type: ignore[method-assign]

    with pytest.raises(copyjobs.JobGoneError, match="no longer running"):
        run(farm, report, patch=fail_after_copy)
    assert digest(farm.share("rec2"), src_files) == src_files and audit_rows() == []

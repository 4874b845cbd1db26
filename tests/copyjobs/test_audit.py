"""The one audited delete: pending rows before, true outcomes after, crashes settled by the next run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from farmkeeper import audit
from farmkeeper.models import DeletionAudit
from farmkeeper.storage import DeleteResult, VolumeAccess, open_volume
from tests.copyjobs.conftest import sessions
from tests.helpers import write_footage


def rows() -> list[tuple[str | None, str, str]]:
    with sessions() as s:
        return sorted((r.run_id, r.path, r.outcome) for r in s.exec(select(DeletionAudit)))


def volume(root: Path) -> Any:
    return open_volume(VolumeAccess(server="rec1", drive="D", local_path=str(root)), prefer="local")


def doomed(paths: list[str]) -> list[audit.Doomed]:
    return [audit.Doomed(p, 10, "age", "cam-1") for p in paths]


def test_each_row_settles_to_its_true_outcome(tmp_path: Path, inventory_url: str) -> None:
    root = tmp_path / "D"
    paths = sorted(write_footage(root, "cam-1", 4, size=100, meta=False))
    (root / paths[1]).unlink()                                   # already gone: missing
    (root / paths[2]).unlink()
    (root / paths[2]).mkdir()                                    # a folder with content: cannot be unlinked
    (root / paths[2] / "x").write_text("x")
    with volume(root) as vol:
        done = audit.audited_delete(vol, doomed(paths), sessions=sessions, owner="run-a", server="rec1", drive="D")
    assert done.deleted == [paths[0], paths[3]] and done.missing == [paths[1]] and list(done.failed) == [paths[2]]
    got = {p: o for _, p, o in rows()}
    assert got[paths[0]] == got[paths[3]] == "deleted" and got[paths[1]] == "missing"
    assert got[paths[2]].startswith("failed: ") and (root / paths[2]).is_dir()


def test_a_crash_between_pending_and_settle_is_reconciled(tmp_path: Path, inventory_url: str) -> None:
    root = tmp_path / "D"
    paths = sorted(write_footage(root, "cam-1", 4, size=100, meta=False))
    with volume(root) as vol:
        real = vol.delete_files

        def delete_half_then_die(relpaths: Any, prune_dirs: bool = True) -> DeleteResult:
            real(list(relpaths)[:2], prune_dirs=prune_dirs)
            raise KeyboardInterrupt("process killed")

        vol.delete_files = delete_half_then_die
        with pytest.raises(KeyboardInterrupt):
            audit.audited_delete(vol, doomed(paths), sessions=sessions, owner="run-a", server="rec1", drive="D")
        assert {o for _, _, o in rows()} == {"pending"}
        with sessions() as s:       # another owner's reconcile leaves these rows to their owner
            assert audit.reconcile_pending(s, "rec1", "D", audit.stat_exists(vol),
                                           may_settle=lambda o: o == "run-b") == 0
        with sessions() as s:
            assert audit.reconcile_pending(s, "rec1", "D", audit.stat_exists(vol)) == 4
        got = {p: o for _, p, o in rows()}
        assert got[paths[0]] == got[paths[1]] == "deleted"
        assert got[paths[2]] == got[paths[3]] == audit.INTERRUPTED
        del vol.delete_files
        audit.audited_delete(vol, doomed(paths), sessions=sessions, owner="run-a", server="rec1", drive="D")
    # one row per (owner, path): re-deleting re-opens the interrupted rows; a deletion stays "deleted"
    assert rows() == [("run-a", p, "deleted") for p in paths]
    assert not any((root / p).exists() for p in paths)


def test_nothing_outside_footage_is_deleted_and_nothing_is_audited_as_deleted(tmp_path: Path,
                                                                             inventory_url: str) -> None:
    root = tmp_path / "D"
    (root / "other").mkdir(parents=True)
    (root / "other" / "keep.bin").write_text("x")
    with volume(root) as vol, pytest.raises(OSError, match="only files under video"):
        audit.audited_delete(vol, doomed(["other/keep.bin"]), sessions=sessions, owner="r", server="rec1",
                             drive="D")
    assert (root / "other" / "keep.bin").exists()
    assert rows() == []          # refused before any row is written

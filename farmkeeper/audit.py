"""The one audited delete: every footage file farmkeeper deletes goes through ``audited_delete``.

Retention (age rules, floors), swap-back and move-cameras (sources of verified copies) all call it, so
the trail is written the same way everywhere:

1. one ``DeletionAudit`` row per file with ``outcome = 'pending'`` is committed *before* the delete;
2. the files are deleted (``Volume.delete_files``: only ``video/`` and ``meta/``);
3. each row is settled to its true outcome: ``deleted``, ``missing`` (already gone when we came) or
   ``failed: <reason>`` (still there).

A crash between 1 and 3 leaves ``pending`` rows; ``reconcile_pending`` settles them on the next run by
looking at the volume: a file that is gone was ``deleted``, one still there becomes
``failed: interrupted ...`` (it was not deleted).

**Owner.** ``DeletionAudit.run_id`` is the *owner* of a row: the run or job that wrote it and is the
only one entitled to settle it while it works (``retention-<flow run id>``, ``copy-job-<job id>``...).
``(owner, server, drive, path)`` identifies a row: deleting the same file again under the same owner
(a re-run of a copy job after a failed delete) re-opens that row instead of adding a second one.
``reconcile_pending`` settles only rows its ``may_settle(owner)`` accepts, so a caller that knows
which owners are still alive (their claim not expired) can leave those runs' rows to them; by default
every pending row of the volume is settled (the callers hold the volume's lease or the cameras' job).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Final

import sqlalchemy as sa
from sqlmodel import Session

from farmkeeper import hooks
from farmkeeper.models import DeletionAudit, utcnow
from farmkeeper.storage.base import Volume, check_deletable

log = logging.getLogger(__name__)

SessionFactory = Callable[[], AbstractContextManager[Session]]

PENDING: Final = "pending"
DELETED: Final = "deleted"
MISSING: Final = "missing"
FAILED_PREFIX: Final = "failed: "
INTERRUPTED: Final = FAILED_PREFIX + "interrupted before the delete was confirmed; the file is still there"
CHUNK: Final = 1000
_REASON_MAX: Final = 500

_TABLE = DeletionAudit.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Doomed:
    """One file to delete and why (``rule``: age | metadata_age | min_free | min_free_percent | in_step |
    source_copied)."""

    path: str
    size: int
    rule: str
    camera: str | None = None


@dataclass
class AuditedResult:
    """What ``audited_delete`` did: the paths per outcome (``failed``: path -> reason)."""

    deleted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    pruned_dirs: int = 0

    @property
    def gone(self) -> list[str]:
        """Paths that no longer exist (deleted now, or already missing)."""
        return [*self.deleted, *self.missing]


def is_failed(outcome: str) -> bool:
    return outcome.startswith(FAILED_PREFIX)


def _failed(reason: str) -> str:
    return (FAILED_PREFIX + reason)[:_REASON_MAX]


def _where(owner: str, server: str, drive: str) -> list[sa.ColumnElement[bool]]:
    return [_TABLE.c.run_id == owner, _TABLE.c.server == server, _TABLE.c.drive == drive]


def audited_delete(volume: Volume, doomed: Iterable[Doomed], *, sessions: SessionFactory, owner: str,
                   server: str, drive: str, prune_dirs: bool = True, chunk: int = CHUNK,
                   before_chunk: Callable[[Session], None] | None = None,
                   on_chunk: Callable[[AuditedResult, Sequence[Doomed]], None] | None = None) -> AuditedResult:
    """Delete ``doomed`` from ``volume`` (``server``/``drive``) with an audit row each, settled to its outcome.

    Per chunk: commit ``pending`` rows (``before_chunk(session)`` runs in that transaction first, e.g. a
    job heartbeat that raises if the job was taken away: then nothing of the chunk is deleted), delete,
    settle every row. ``on_chunk(result_so_far, chunk)`` is called after each chunk is settled.
    """
    result = AuditedResult()
    todo = list(doomed)
    check_deletable(volume, [d.path for d in todo])   # a path outside video/ and meta/ refuses the whole call
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        paths = [d.path for d in part]
        with sessions() as session:
            if before_chunk is not None:
                before_chunk(session)
            _write_pending(session, part, owner=owner, server=server, drive=drive)
        hooks.reached("audit.pending-written", owner=owner, server=server, drive=drive, paths=paths)
        outcome = volume.delete_files(paths, prune_dirs=prune_dirs)
        missing = set(outcome.missing_paths)
        with sessions() as session:
            _settle(session, owner, server, drive, paths, missing, outcome.failed)
        for p in paths:
            if p in outcome.failed:
                result.failed[p] = outcome.failed[p]
            elif p in missing:
                result.missing.append(p)
            else:
                result.deleted.append(p)
        result.pruned_dirs += outcome.pruned_dirs
        if on_chunk is not None:
            on_chunk(result, part)
    return result


def _write_pending(session: Session, part: Sequence[Doomed], *, owner: str, server: str, drive: str) -> None:
    """Insert the chunk's rows as ``pending``; a row of the same owner and path is re-opened, not duplicated
    (one already settled ``deleted`` stays so: the file is gone because of that deletion)."""
    at = utcnow()
    paths = [d.path for d in part]
    existing = {r.path: r.outcome for r in session.execute(
        sa.select(_TABLE.c.path, _TABLE.c.outcome).where(*_where(owner, server, drive), _TABLE.c.path.in_(paths)))}
    reopen = [p for p, outcome in existing.items() if outcome != DELETED]   # a deletion stays on record as such
    if reopen:
        session.execute(sa.update(_TABLE).where(*_where(owner, server, drive), _TABLE.c.path.in_(reopen))
                        .values(outcome=PENDING, at=at))
    rows = [{"at": at, "server": server, "drive": drive, "path": d.path, "size": int(d.size), "rule": d.rule,
             "camera_id": d.camera, "run_id": owner, "outcome": PENDING} for d in part if d.path not in existing]
    if rows:
        session.execute(sa.insert(_TABLE), rows)


def _settle(session: Session, owner: str, server: str, drive: str, paths: Sequence[str], missing: Collection[str],
            failed: dict[str, str]) -> None:
    pending = [*_where(owner, server, drive), _TABLE.c.outcome == PENDING]
    for path, reason in failed.items():
        session.execute(sa.update(_TABLE).where(*pending, _TABLE.c.path == path).values(outcome=_failed(reason)))
    if missing:
        session.execute(sa.update(_TABLE).where(*pending, _TABLE.c.path.in_(list(missing))).values(outcome=MISSING))
    session.execute(sa.update(_TABLE).where(*pending, _TABLE.c.path.in_(list(paths))).values(outcome=DELETED))


def reconcile_pending(session: Session, server: str, drive: str, exists: Callable[[Sequence[str]], Collection[str]],
                      *, may_settle: Callable[[str | None], bool] | None = None) -> int:
    """Settle the ``pending`` rows of one volume that an interrupted run left; returns how many.

    ``exists(paths)`` returns those of ``paths`` still on the volume (a listing, or stats): a gone file
    was ``deleted``, a present one is ``failed: interrupted ...``. Only rows whose owner ``may_settle``
    accepts are touched (default: all).
    """
    rows = list(session.execute(sa.select(_TABLE.c.id, _TABLE.c.path, _TABLE.c.run_id)
                                .where(_TABLE.c.server == server, _TABLE.c.drive == drive,
                                       _TABLE.c.outcome == PENDING)))
    rows = [r for r in rows if may_settle is None or may_settle(r.run_id)]
    if not rows:
        return 0
    present = set(exists([r.path for r in rows]))
    still = [r.id for r in rows if r.path in present]
    gone = [r.id for r in rows if r.path not in present]
    if still:
        session.execute(sa.update(_TABLE).where(_TABLE.c.id.in_(still)).values(outcome=INTERRUPTED))
    if gone:
        session.execute(sa.update(_TABLE).where(_TABLE.c.id.in_(gone)).values(outcome=DELETED))
    log.info("\\\\%s\\DATA%s: settled %d pending deletion audit row(s) of an interrupted run (%d deleted, "
             "%d still there)", server, drive, len(rows), len(gone), len(still))
    return len(rows)


def stat_exists(volume: Volume) -> Callable[[Sequence[str]], set[str]]:
    """An ``exists`` for ``reconcile_pending`` that stats each path on ``volume``."""
    def exists(paths: Sequence[str]) -> set[str]:
        return {p for p in paths if volume.stat(p) is not None}
    return exists


__all__ = ["DELETED", "FAILED_PREFIX", "INTERRUPTED", "MISSING", "PENDING", "AuditedResult", "Doomed",
           "audited_delete", "is_failed", "reconcile_pending", "stat_exists"]

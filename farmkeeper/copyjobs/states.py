"""Copy-job states and the live-job checks retention, swap-back and the inventory rely on.

"Is this copy job live" is answered here only (``live_jobs``/``job_is_live``): a planned job, or a running
one whose owner (host + pid, or a heartbeat younger than ``STALE_AFTER_S``) is still working on it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlmodel import Session, col, select

from farmkeeper.errors import InventoryError
from farmkeeper.models import CopyItem, CopyItemState, CopyJob, CopyJobState, utcnow

Verify = Literal["size", "hash"]
SessionFactory = Callable[[], AbstractContextManager[Session]]

ACTIVE = (CopyJobState.planned, CopyJobState.running)
UNFINISHED = (CopyJobState.planned, CopyJobState.running, CopyJobState.failed)
COPIED = (CopyItemState.copied, CopyItemState.skipped, CopyItemState.conflict)   # verified, source still there
FINISHED = (*COPIED, CopyItemState.removed)
TODO = (CopyItemState.pending, CopyItemState.failed)
STALE_AFTER_S = 90.0          # a running job whose owner has not touched it for this long is abandoned


class CameraBusyError(InventoryError):
    """A camera already belongs to another live copy job (``job_id``, ``kind``): the run is refused, not failed."""

    def __init__(self, message: str, job_id: int | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.job_id, self.kind = job_id, kind

    def __reduce__(self) -> tuple[object, ...]:  # keep pickling (Prefect task results) working
        return (type(self), (str(self), self.job_id, self.kind))


def doing(kind: str) -> str:
    """What a copy job of ``kind`` is doing to its cameras, for messages: "swapped back", "moved"."""
    return {"swap-back": "swapped back", "move": "moved"}.get(kind, f"copied ({kind})")


class FootageBusyError(InventoryError):
    """Another flow (a retention sweep) holds or just changed a camera's footage on a volume: retry in seconds."""

    transient = True


def job_owner(job_id: int | None) -> str:
    """The owner of a copy job's footage claims and of its deletion audit rows."""
    return f"copy-job-{job_id}"


class JobGoneError(InventoryError):
    """The copy job was cancelled or taken over while this run worked on it."""


@dataclass(frozen=True)
class JobOptions:
    """How a job copies: kept in ``CopyJob.params`` so a resume uses the same settings."""

    delete_source: bool = True
    verify: Verify = "hash"             # hash: read back + BLAKE2b (default); size: size and mtime (opt-out)
    max_mbps: float | None = None       # megabits per second over the whole job, None = no cap
    connections: int = 4
    checkpoint_every: int = 32 << 20    # record a partial file's acknowledged length this often (bytes)
    chunk_size: int = 8 << 20           # bytes per read/write of a copy

    @property
    def max_bytes_per_s(self) -> float | None:
        return self.max_mbps * 1_000_000 / 8 if self.max_mbps else None

    def as_params(self) -> dict[str, Any]:
        return {"delete_source": self.delete_source, "verify": self.verify, "max_mbps": self.max_mbps,
                "connections": self.connections}



def owner() -> dict[str, Any]:
    """This process as a job's owner (kept in ``CopyJob.params['owner']``)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def owner_alive(job: CopyJob, now: datetime) -> bool:
    """Is the run that owns this running job still working on it?"""
    owner = (job.params or {}).get("owner") or {}
    if owner.get("host") == socket.gethostname() and owner.get("pid"):
        pid = int(owner["pid"])
        if pid == os.getpid():
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return (now - job.updated_at).total_seconds() < STALE_AFTER_S


def live_jobs(session: Session, cameras: Iterable[str] | None = None) -> list[CopyJob]:
    """Planned/running jobs (touching any of ``cameras`` when given) whose owner is alive."""
    now = utcnow()
    wanted = set(cameras) if cameras is not None else None
    out = []
    for job in session.exec(select(CopyJob).where(col(CopyJob.state).in_(ACTIVE)).order_by(col(CopyJob.id))):
        if wanted is not None and not wanted & set(job.cameras):
            continue
        if job.state == CopyJobState.planned or owner_alive(job, now):
            out.append(job)
    return out


def busy_message(job: CopyJob, cameras: Iterable[str]) -> str:
    both = sorted(set(cameras) & set(job.cameras))
    return (f"camera{'s' if len(both) != 1 else ''} {', '.join(both)} already being {doing(job.kind)} by job "
            f"#{job.id} (to {job.target}, {job.state.value}, {job.files_done}/{job.files_total} files); "
            "a camera is never in two copy jobs: wait for it to finish (`farmkeeper status`)")


def check_cameras_free(session: Session, cameras: Sequence[str], *, kind: str, target: str) -> None:
    """Raise ``CameraBusyError`` if a live job (other than the same job being resumed) touches a camera."""
    for job in live_jobs(session, cameras):
        same = job.kind == kind and job.target == target and set(job.cameras) == set(cameras)
        if not same or owner_alive(job, utcnow()) and job.state == CopyJobState.running:
            raise CameraBusyError(busy_message(job, cameras), job.id, job.kind)



def select_items(*columns: str, extra: Sequence[Any] = ()) -> Any:
    """SELECT of some ``CopyItem`` columns: plain rows, no ORM objects (jobs have tens of thousands of items)."""
    return sa.select(*(getattr(CopyItem, c) for c in columns), *extra)


def refresh_counters(session: Session, job: CopyJob) -> None:
    rows = session.exec(select(CopyItem.state, sa.func.count(), sa.func.coalesce(sa.func.sum(CopyItem.size), 0))
                        .where(CopyItem.job_id == job.id).group_by(CopyItem.state)).all()
    job.files_total = sum(int(n) for _s, n, _b in rows)
    job.bytes_total = sum(int(b) for _s, _n, b in rows)
    job.files_done = sum(int(n) for s, n, _b in rows if s in FINISHED)
    job.bytes_done = sum(int(b) for s, _n, b in rows if s in FINISHED)
    session.add(job)


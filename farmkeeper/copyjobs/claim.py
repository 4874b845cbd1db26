"""Claiming a copy job: resume the unfinished job of (kind, cameras, target) or create one; heartbeat."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from farmkeeper import claims, hooks, inventory
from farmkeeper.copyjobs.states import (
    ACTIVE,
    UNFINISHED,
    FootageBusyError,
    JobGoneError,
    JobOptions,
    check_cameras_free,
    job_owner,
    owner,
    owner_alive,
)
from farmkeeper.errors import InventoryError
from farmkeeper.models import CopyItem, CopyItemState, CopyJob, CopyJobState, DeletionAudit, utcnow


def claim_job(session: Session, *, kind: str, cameras: Sequence[str], target: str, options: JobOptions,
              flow_run_id: str | None = None, volumes: Sequence[tuple[str, str]] = (),
              scanned_at: datetime | None = None) -> tuple[CopyJob, bool]:
    """Resume the unfinished job of (kind, cameras, target) or create one; returns (job, resumed).

    Locks the camera rows (sorted, so two claims never deadlock), then refuses with ``CameraBusyError``
    when a live job of another run touches one of the cameras. Abandoned running jobs (their worker
    died) become ``failed`` so they can be resumed. Other unfinished jobs over some of the same cameras
    are ``cancelled`` (superseded): their finished files are found identical at the target.
    """
    cams = sorted(set(cameras))
    if not cams:
        raise InventoryError("a copy job needs at least one camera")
    inventory.get_server(session, target)
    for cam in cams:
        inventory.get_camera(session, cam, for_update=True)
    now = utcnow()
    for job in session.exec(select(CopyJob).where(col(CopyJob.state).in_(ACTIVE))):
        if set(job.cameras) & set(cams) and job.state == CopyJobState.running and not owner_alive(job, now):
            job.state, job.error, job.updated_at = CopyJobState.failed, "interrupted: its worker stopped", now
            session.add(job)
    session.flush()
    check_cameras_free(session, cams, kind=kind, target=target)
    resumed: CopyJob | None = None
    for job in session.exec(select(CopyJob).where(col(CopyJob.state).in_(UNFINISHED))
                            .order_by(col(CopyJob.id).desc())):
        if not set(job.cameras) & set(cams):
            continue
        if resumed is None and job.kind == kind and job.target == target and sorted(job.cameras) == cams:
            resumed = job
            continue
        if job.state == CopyJobState.failed:
            job.state, job.updated_at = CopyJobState.cancelled, now
            job.error = f"{job.error or 'failed'}; superseded by a new {kind} job"
            session.add(job)
    params = {**options.as_params(), "owner": owner()}
    if resumed is not None:
        job = resumed
        job.state, job.error, job.finished_at, job.updated_at = CopyJobState.running, None, None, now
        job.params = {**options.as_params(), **params}
        job.flow_run_id = flow_run_id or job.flow_run_id
        session.execute(sa.update(CopyItem).where(col(CopyItem.job_id) == job.id,
                                                  col(CopyItem.state) == CopyItemState.failed)
                        .values(state=CopyItemState.pending))
    else:
        job = CopyJob(kind=kind, state=CopyJobState.running, created_at=now, updated_at=now, cameras=cams,
                      target=target, params=params, flow_run_id=flow_run_id)
    session.add(job)
    session.flush()
    claim_footage(session, job, volumes, scanned_at)
    return job, resumed is not None


def claim_footage(session: Session, job: CopyJob, volumes: Sequence[tuple[str, str]],
                  scanned_at: datetime | None) -> None:
    """Take the claims of the job's cameras on ``volumes`` (server, drive) for the whole job, all or none.

    Refuses with ``FootageBusyError`` (the transaction, job included, rolls back; a retry rescans) when a
    retention sweep holds one of them now, or deleted footage of the cameras there since ``scanned_at``
    (the scan the plan comes from would be stale).
    """
    keys = [(cam, server, drive.upper()) for cam in job.cameras for server, drive in volumes]
    me = claims.Owner.here(job_owner(job.id))
    busy = claims.take(session, me, keys)
    hooks.reached("copyjob.footage-claimed", job_id=job.id, busy=busy)
    if busy:
        (cam, server, drive), other = next(iter(sorted(busy.items())))
        raise FootageBusyError(f"footage of {cam} on \\\\{server}\\DATA{drive} is being deleted by {other}; "
                               "the copy job waits for it and scans again")
    if scanned_at is not None and keys:
        audit = DeletionAudit.__table__  # type: ignore[attr-defined]
        changed = session.execute(sa.select(audit.c.server, audit.c.drive, audit.c.camera_id).where(
            audit.c.at >= scanned_at, audit.c.camera_id.in_(list(job.cameras)),
            sa.or_(audit.c.run_id.is_(None), audit.c.run_id != me.id)).limit(50)).all()
        hit = next(((s, d, c) for s, d, c in changed if (c, s, d) in set(keys)), None)
        if hit is not None:
            raise FootageBusyError(f"footage of {hit[2]} on \\\\{hit[0]}\\DATA{hit[1]} was deleted during the "
                                   "scan; the copy job scans again")


def touch_job(session: Session, job_id: int) -> None:
    """Heartbeat: the owner is still working on the job (raises ``JobGoneError`` if it was taken away)."""
    job = session.get(CopyJob, job_id)
    if job is None or job.state != CopyJobState.running:
        raise JobGoneError(f"copy job #{job_id} is no longer running (cancelled or finished elsewhere)")
    holder = (job.params or {}).get("owner") or {}
    if holder and holder != owner():
        raise JobGoneError(f"copy job #{job_id} was taken over by another run ({holder.get('host')})")
    job.updated_at = utcnow()
    session.add(job)
    claims.renew(session, claims.Owner.here(job_owner(job_id)))


"""Claiming a copy job: resume the unfinished job of (kind, cameras, target) or create one; heartbeat."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlmodel import Session, col, select

from farmkeeper import inventory
from farmkeeper.copyjobs.states import (
    ACTIVE,
    UNFINISHED,
    JobGoneError,
    JobOptions,
    check_cameras_free,
    owner,
    owner_alive,
)
from farmkeeper.errors import InventoryError
from farmkeeper.models import CopyItem, CopyItemState, CopyJob, CopyJobState, utcnow


def claim_job(session: Session, *, kind: str, cameras: Sequence[str], target: str, options: JobOptions,
              flow_run_id: str | None = None) -> tuple[CopyJob, bool]:
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
    return job, resumed is not None


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


"""Copy jobs: bring cameras' footage from other servers' volumes to one target server, verified and resumable.

A copy job (one ``CopyJob`` row, one ``CopyItem`` row per file) is the machinery swap-back and
move-cameras share. For ``(kind, cameras, target)``:

1. ``claim_job`` (``claim.py``; camera rows locked): resume the unfinished job of the same kind, cameras and
   target, or create one; refuse (``CameraBusyError``) when a live job touches one of the cameras.
2. ``plan_job`` (``plan.py``): walk ``video/<cam>`` and ``meta/<cam>`` on every source volume; every footage
   file becomes an item to the volume with the same drive letter on the target, same relative path. A source
   drive the target lacks is reported (``PlanReport.unmapped``), never copied. Re-planning adds new files
   and drops unfinished items whose source vanished; finished items are kept as they are.
3. ``run_batch`` (``batch.py``) per (source volume → target volume): ``copy_files`` (temp name, resume,
   verification, bandwidth cap, several connections); item states recorded as results arrive (throttled);
   a listing of the destination folders re-checks every copied file; then the verified sources are deleted
   through the audited delete.
4. ``finish_job`` (``report.py``): ``done`` when every item is finished, else ``failed`` with what remains;
   ``job_report`` turns it into the texts a run reports.

States and the live-job checks (``states.py``) are what retention, swap-back and the inventory use.

Items in state copied/skipped/conflict/removed are never copied again; a crash between copy and
recording leaves a verified file at the destination that the next run finds identical (``skipped``).
"""

from farmkeeper.copyjobs.batch import DELETE_CHUNK, BatchResult, JobProgress, run_batch
from farmkeeper.copyjobs.claim import claim_job, touch_job
from farmkeeper.copyjobs.plan import (
    BatchKey,
    PlannedFile,
    PlanReport,
    SourceVolume,
    camera_files,
    plan_job,
    scan_sources,
)
from farmkeeper.copyjobs.report import (
    CameraSummary,
    JobReport,
    JobSummary,
    RunWording,
    blocked_cameras,
    duration_text,
    fail_job,
    finish_job,
    job_report,
    job_summary,
)
from farmkeeper.copyjobs.states import (
    ACTIVE,
    COPIED,
    FINISHED,
    STALE_AFTER_S,
    TODO,
    UNFINISHED,
    CameraBusyError,
    FootageBusyError,
    JobGoneError,
    JobOptions,
    SessionFactory,
    Verify,
    busy_message,
    check_cameras_free,
    doing,
    job_owner,
    live_jobs,
)

__all__ = ["ACTIVE", "COPIED", "DELETE_CHUNK", "FINISHED", "STALE_AFTER_S", "TODO", "UNFINISHED", "BatchKey",
           "BatchResult", "CameraBusyError", "CameraSummary", "FootageBusyError", "JobGoneError", "JobOptions",
           "JobProgress", "JobReport", "JobSummary", "PlanReport", "PlannedFile", "RunWording", "SessionFactory",
           "SourceVolume", "Verify", "blocked_cameras", "busy_message", "camera_files",
           "check_cameras_free", "claim_job", "doing", "duration_text", "fail_job", "finish_job", "job_owner",
           "job_report", "job_summary", "live_jobs", "plan_job", "run_batch", "scan_sources", "touch_job"]

"""Copy-job tasks (swap-back, move-cameras): thin, retried, one task per batch of files, never per file.

``copy_batch`` handles every file of one (source volume → target volume) pair with ``copy_files``' own
connection pool; a lost connection (``StorageUnavailable``) is retried, a full volume is not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Literal, TypeVar, cast
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from farmkeeper import copyjobs, swapback
from farmkeeper.errors import InventoryError
from farmkeeper.models import utcnow
from farmkeeper.specs import human_size
from farmkeeper.storage import Volume, open_volume
from farmkeeper.volumes import ServerVolume, not_on_storage_of
from tasks import events
from tasks.common import Tag, farm_volumes, inventory_session, retry_transient, send_notification, storage_prefer

R = TypeVar("R")
COPY_LIMIT = "farmkeeper-copy-jobs"
DEFAULT_COPY_LIMIT = 2


def _open(sv: ServerVolume) -> Volume:
    return open_volume(sv.access, prefer=cast(Literal["auto", "local", "smb"], storage_prefer()))


def _volumes(servers: list[str]) -> dict[tuple[str, str], ServerVolume]:
    return {(sv.server, sv.drive.upper()): sv for sv in farm_volumes(servers)}


@task(name="select-swap-back-cameras", retries=2, retry_delay_seconds=[1, 3], tags=[Tag.uses_db],
      cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def select_swap_back(server: str | None, cameras: list[str]) -> swapback.Selection:
    with inventory_session() as session:
        return swapback.select_cameras(session, server=server, cameras=cameras)


@task(name="check-cameras-free", retries=2, retry_delay_seconds=[1, 3], tags=[Tag.uses_db], cache_policy=NO_CACHE,
      retry_condition_fn=retry_transient)
def check_cameras_free(kind: str, cameras: list[str], target: str) -> None:
    """Refuse (``CameraBusyError``) when a live copy job of another run touches one of the cameras."""
    with inventory_session() as session:
        copyjobs.check_cameras_free(session, cameras, kind=kind, target=target)


@task(name="move-cameras-home", retries=3, retry_delay_seconds=[1, 2, 5], tags=[Tag.uses_db], cache_policy=NO_CACHE,
      retry_condition_fn=retry_transient)
def move_cameras_home(cameras: list[str]) -> list[swapback.MovedHome]:
    """``current = home`` for each camera (row locks, version bump); the recorders follow within seconds."""
    with inventory_session() as session:
        moved = swapback.move_home(session, cameras)
    for m in moved:
        get_run_logger().info("%s: recording moves %s -> %s (home)", m.camera, m.from_server, m.to_server)
    return moved


@task(name="wait-segments-closed", retries=2, retry_delay_seconds=[2, 5], tags=[Tag.uses_smb],
      cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def wait_segments_closed(cameras: list[str], servers: list[str], timeout_s: float = 120.0,
                         poll_s: float = 1.0) -> dict[str, list[str]]:
    """Wait until no camera segment is still being written on the servers' volumes; returns what stayed open."""
    logger = get_run_logger()
    vols = [(sv, _open(sv)) for sv in farm_volumes(servers)] if servers else []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            still = {sv.label: found for sv, vol in vols if (found := swapback.open_segments(vol, cameras))}
            if not still or time.monotonic() >= deadline:
                break
            logger.info("waiting for %d open segment(s) to close: %s", sum(map(len, still.values())),
                        ", ".join(sorted(still)))
            time.sleep(poll_s)
    finally:
        for _sv, vol in vols:
            vol.close()
    if still:
        logger.warning("segments still open after %.0f s (not copied this time): %s", timeout_s,
                       "; ".join(f"{k}: {len(v)}" for k, v in still.items()))
    return still


def _scan(cameras: list[str], target: str, sources: list[str]) -> tuple[list[copyjobs.PlannedFile],
                                                                         copyjobs.PlanReport]:
    target_vols = farm_volumes([target])
    target_drives = [sv.drive for sv in target_vols]
    opened: list[tuple[copyjobs.SourceVolume, Volume]] = []
    try:
        for sv in not_on_storage_of(farm_volumes([s for s in sources if s != target]), target_vols)[0]:
            opened.append((copyjobs.SourceVolume(sv.server, sv.drive, sv.label), _open(sv)))
        return copyjobs.scan_sources(opened, cameras, target, target_drives)
    finally:
        for _src, vol in opened:
            vol.close()


@task(name="scan-copy-sources", retries=2, retry_delay_seconds=[2, 5], tags=[Tag.uses_smb], cache_policy=NO_CACHE,
      retry_condition_fn=retry_transient)
def scan_copy_sources(cameras: list[str], target: str, sources: list[str]) -> copyjobs.PlanReport:
    """What a copy job would copy (read-only: dry runs)."""
    return _scan(cameras, target, sources)[1]


@task(name="plan-copy-job", retries=3, retry_delay_seconds=[2, 5, 15], tags=[Tag.uses_smb, Tag.uses_db],
      cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def plan_copy_job(kind: str, cameras: list[str], target: str, sources: list[str], options: copyjobs.JobOptions,
                  flow_run_id: str | None = None) -> copyjobs.PlanReport:
    """Scan the sources, then claim (resume or create) the job and record its items in one short transaction."""
    logger = get_run_logger()
    scanned_at = utcnow()
    files, scan = _scan(cameras, target, sources)
    volumes = sorted({(sv.server, sv.drive.upper()) for sv in farm_volumes(sorted({target, *sources}))})
    with inventory_session() as session:   # the job, its footage claims (all or none) and its items at once
        job, resumed = copyjobs.claim_job(session, kind=kind, cameras=cameras, target=target, options=options,
                                          flow_run_id=flow_run_id, volumes=volumes, scanned_at=scanned_at)
        report = copyjobs.plan_job(session, job, files, scan)
    logger.info("copy job #%s (%s): %d files, %d new, %d to do, %s", report.job_id,
                "resumed" if resumed else "new", report.files, report.new_files, report.todo_files,
                human_size(report.todo_bytes))
    for line in report.unmapped:
        logger.warning("%s", line)
    if report.job_id is not None:
        events.copy_job_started(report.job_id, kind=kind, target=target, cameras=cameras, files=report.todo_files,
                                nbytes=report.todo_bytes)
    return report


@task(name="copy-batch", retries=3, retry_delay_seconds=[2, 5, 15], tags=[Tag.uses_smb, Tag.copies, Tag.deletes],
      cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def copy_batch(job_id: int, key: copyjobs.BatchKey, options: copyjobs.JobOptions,
               progress_artifact: UUID | None = None) -> copyjobs.BatchResult:
    """Copy, verify and (delete_source) remove the sources of every pending file of one volume pair."""
    logger = get_run_logger()
    vols = _volumes([key.src_server, key.dst_server])
    src_sv, dst_sv = vols.get((key.src_server, key.src_drive)), vols.get((key.dst_server, key.dst_drive))
    if src_sv is None or dst_sv is None:
        missing = key.src_server if src_sv is None else key.dst_server
        raise InventoryError(f"{key.label}: {missing} no longer has that volume in the inventory")
    last_log = [0.0]

    def on_progress(p: copyjobs.JobProgress) -> None:
        if progress_artifact is not None:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(progress_artifact, p.percent, description=f"Copy job #{job_id}: {p.describe()}")
        now = time.monotonic()
        if now - last_log[0] >= 5.0:
            last_log[0] = now
            logger.info("copy job #%s: %s", job_id, p.describe())

    with _open(src_sv) as src, _open(dst_sv) as dst:
        result = copyjobs.run_batch(inventory_session, job_id, key, src, dst, options, on_progress=on_progress)
    logger.info("%s: %d copied, %d skipped (identical), %d conflicts (both kept), %d sources removed, %d failed "
                "in %.1f s", key.label, result.copied, result.skipped, len(result.conflicts), result.removed,
                len(result.failed), result.seconds)
    return result


@task(name="finish-copy-job", retries=3, retry_delay_seconds=[1, 2, 5], tags=[Tag.uses_db], cache_policy=NO_CACHE,
      retry_condition_fn=retry_transient)
def finish_copy_job(job_id: int, error: str | None = None) -> copyjobs.JobSummary:
    with inventory_session() as session:
        return copyjobs.finish_job(session, job_id, error=error)


@task(name="fail-copy-job", retries=3, retry_delay_seconds=[1, 2, 5], tags=[Tag.uses_db], cache_policy=NO_CACHE,
      retry_condition_fn=retry_transient)
def fail_copy_job(job_id: int, error: str) -> None:
    """The run gives up on the job: ``failed``, so the next run resumes it at once."""
    with inventory_session() as session:
        copyjobs.fail_job(session, job_id, error)


@task(name="end-failover-events", retries=3, retry_delay_seconds=[1, 2, 5], tags=[Tag.uses_db],
      cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def end_failover_events(cameras: list[str]) -> list[str]:
    """``ended_at`` on the open failover events of cameras whose footage is home; returns those cameras."""
    with inventory_session() as session:
        ended = swapback.end_failovers(session, cameras)
    return sorted({e.camera_id for e in ended})


def run_copy_job(job: copyjobs.PlanReport, options: copyjobs.JobOptions, *, progress_key: str,
                 progress_description: str) -> tuple[copyjobs.JobSummary, list[copyjobs.BatchResult]]:
    """Copy the planned job's batches in order (one progress artifact), stop at the first that fails, close the job.

    A batch error is recorded in the job (``failed``, resumable); anything that escapes (a cancelled or
    crashed run) marks the job failed before it propagates.
    """
    from prefect.artifacts import create_progress_artifact

    assert job.job_id is not None
    logger = get_run_logger()
    progress: UUID = create_progress_artifact(  # type: ignore[assignment]  # sync in a sync flow
        0.0, key=progress_key, description=progress_description)
    results: list[copyjobs.BatchResult] = []
    error: str | None = None
    try:
        for key in job.batches:
            try:
                results.append(copy_batch(job.job_id, key, options, progress))
            except Exception as exc:  # noqa: BLE001 - recorded in the job, reported by the flow
                error = f"{key.label}: {exc}"
                logger.error("copy job #%s stopped: %s", job.job_id, error)
                break
        summary = finish_copy_job(job.job_id, error)
    except BaseException as exc:
        fail_copy_job(job.job_id, f"{type(exc).__name__}: {exc}")
        events.copy_job_failed(job.job_id, kind="copy", target=job.target, cameras=list(job.per_camera),
                               error=f"{type(exc).__name__}: {exc}")
        raise
    return summary, results


def publish_job_report(report: copyjobs.JobReport, *, table_key: str, report_key: str, rows: list[dict[str, Any]],
                       result: dict[str, Any], notify: bool, error: type[Exception]) -> dict[str, Any]:
    """Table and report artifacts, then the finished/FAILED notification; returns ``result`` or raises ``error``."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    what, title, summary = report.wording.what, report.wording.title, report.summary
    create_table_artifact(rows, key=table_key,
                          description=f"{title}, copy job #{summary.job_id}: {summary.state.value}")
    create_markdown_artifact(report.markdown, key=report_key, description=title)
    cameras = list(summary.cameras)
    if report.ok:
        events.copy_job_finished(summary.job_id, kind=summary.kind, target=summary.target, cameras=cameras,
                                 state=summary.state.value, files_done=summary.files_done,
                                 bytes_done=summary.bytes_done, seconds=report.result.get("seconds"))
    else:
        events.copy_job_failed(summary.job_id, kind=summary.kind, target=summary.target, cameras=cameras,
                               error=report.failure or summary.error or summary.state.value)
    if report.ok:
        get_run_logger().info("%s", report.body)
        if notify:
            send_notification(f"{what} finished", report.message, "warning" if report.notes else "success")
        return result
    if notify:
        send_notification(f"{what} FAILED", report.message, "failure")
    raise error(report.failure)


def ensure_copy_limit(limit: int = DEFAULT_COPY_LIMIT) -> int:
    """Create the global concurrency limit of copy flows (``farmkeeper-copy-jobs``) if it does not exist yet.

    An operator-set limit is never changed; returns the limit in force. Without a Prefect API the flow still
    runs (Prefect then skips acquiring a missing limit with a warning), so failures here only warn.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    logger = get_run_logger()
    try:
        with get_client(sync_client=True) as client:
            try:
                return int(client.read_global_concurrency_limit_by_name(COPY_LIMIT).limit)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=COPY_LIMIT, limit=limit))
                    logger.info("created global concurrency limit %r = %d (copy flows at once per farm)",
                                COPY_LIMIT, limit)
                except ObjectAlreadyExists:
                    pass
    except Exception as exc:  # noqa: BLE001 - the limit is a safeguard, never a reason to fail
        logger.warning("cannot check the global concurrency limit %r: %s", COPY_LIMIT, exc)
    return limit


SLOT_LEASE_S = 60        # Prefect's shortest lease on a concurrency slot
SLOT_WAIT_S = 5.0


@contextmanager
def copy_slot(limit: int, wait_s: float = SLOT_WAIT_S) -> Iterator[None]:
    """Hold one slot of the copy-jobs limit while the body runs.

    Prefect keeps a dead run's slot until its lease runs out (60 s at the shortest). So when no slot frees
    within ``wait_s``, the inventory decides: with fewer live copy jobs (owners alive) than ``limit``, a
    slot is held by a dead run and this job goes on without one (the footage claims in the inventory still
    keep two jobs off one camera); otherwise it waits for a slot again.
    """
    from prefect.concurrency.sync import concurrency

    logger = get_run_logger()
    stack = ExitStack()
    while True:
        try:
            stack.enter_context(concurrency(COPY_LIMIT, occupy=1, lease_duration=SLOT_LEASE_S,
                                            timeout_seconds=wait_s))
            break
        except TimeoutError:
            with inventory_session() as session:
                live = len(copyjobs.live_jobs(session))
            if live < limit:
                logger.info("no copy slot free after %.0f s but only %d of %d copy jobs are alive: a slot is "
                            "held by a dead run (its lease expires within %d s); going on without it",
                            wait_s, live, limit, SLOT_LEASE_S)
                break
    with stack:
        yield


def refuse_busy(what: str, exc: copyjobs.CameraBusyError, *, notify: bool,
                error: type[Exception]) -> Exception:
    """A refusal, not a failure: another live copy job has the cameras; nothing was moved, copied or deleted."""
    message = f"{what} not started: {exc}. Nothing was moved, copied or deleted by this run."
    get_run_logger().warning("%s", message)
    if notify:
        by = f" by job #{exc.job_id}" if exc.job_id is not None else ""
        send_notification(f"{what} not started: already being {copyjobs.doing(exc.kind or 'swap-back')}{by}",
                          message, "info")
    return error(message)


def run_copy_flow(wording: copyjobs.RunWording, job: Callable[[], R], *, notify: bool,
                  error: type[Exception]) -> R:
    """The one runner of the copy flows after their gate: a copy slot, the job, and what ends it.

    ``error`` (the flow's own, already reported) passes through; cameras claimed meanwhile by another run are
    a refusal (``refuse_busy``); anything else is a crash: one FAILED notification with the resume command,
    raised as ``error``.
    """
    limit = ensure_copy_limit()
    try:
        with copy_slot(limit):
            return job()
    except error:
        raise
    except copyjobs.CameraBusyError as exc:   # claimed by another run between the check and this run's claim
        raise refuse_busy(wording.what, exc, notify=notify, error=error) from None
    except Exception as exc:
        message = wording.crashed(exc)
        if notify:
            send_notification(f"{wording.what} FAILED", message, "failure")
        raise error(message) from exc

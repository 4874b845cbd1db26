"""Copy jobs: bring cameras' footage from other servers' volumes to one target server, verified and resumable.

A copy job (one ``CopyJob`` row, one ``CopyItem`` row per file) is the machinery swap-back and
move-cameras share. For ``(kind, cameras, target)``:

1. ``claim_job`` (camera rows locked): resume the unfinished job of the same kind, cameras and target,
   or create one; refuse (``CameraBusyError``) when a live job touches one of the cameras.
2. ``plan_job``: walk ``video/<cam>`` and ``meta/<cam>`` on every source volume; every footage file
   becomes an item to the volume with the same drive letter on the target, same relative path. A source
   drive the target lacks is reported (``PlanReport.unmapped``), never copied. Re-planning adds new files
   and drops unfinished items whose source vanished; finished items are kept as they are.
3. ``run_batch`` per (source volume → target volume): ``copy_files`` (temp name, resume, verification,
   bandwidth cap, several connections); item states recorded as results arrive (throttled); a listing of
   the destination folders re-checks every copied file; then ``DeletionAudit`` rows (rule
   ``source_copied``) are written and only then the verified sources deleted.
4. ``finish_job``: ``done`` when every item is finished, else ``failed`` with what remains.

Items in state copied/skipped/conflict/removed are never copied again; a crash between copy and
recording leaves a verified file at the destination that the next run finds identical (``skipped``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlmodel import Session, col, select

from farmkeeper import inventory
from farmkeeper.errors import InventoryError, StorageError
from farmkeeper.layout import camera_roots, try_parse_footage
from farmkeeper.models import (
    CopyItem,
    CopyItemState,
    CopyJob,
    CopyJobState,
    DeletionAudit,
    utcnow,
)
from farmkeeper.specs import human_size
from farmkeeper.storage import CopyItem as StorageItem
from farmkeeper.storage import CopyReport, CopyResult, Entry, Progress, Volume, copy_files
from farmkeeper.storage.copy import MTIME_TOLERANCE

log = logging.getLogger(__name__)

Verify = Literal["size", "hash"]
SessionFactory = Callable[[], AbstractContextManager[Session]]

ACTIVE = (CopyJobState.planned, CopyJobState.running)
UNFINISHED = (CopyJobState.planned, CopyJobState.running, CopyJobState.failed)
COPIED = (CopyItemState.copied, CopyItemState.skipped, CopyItemState.conflict)   # verified, source still there
FINISHED = (*COPIED, CopyItemState.removed)
TODO = (CopyItemState.pending, CopyItemState.failed)
STALE_AFTER_S = 90.0          # a running job whose owner has not touched it for this long is abandoned
DELETE_CHUNK = 1000
# DeletionAudit.outcome ('pending' before the delete, 'deleted' after) when the inventory has it.
_AUDIT_HAS_OUTCOME = "outcome" in DeletionAudit.__table__.c  # type: ignore[attr-defined]


class CameraBusyError(InventoryError):
    """A camera already belongs to another live copy job."""


class JobGoneError(InventoryError):
    """The copy job was cancelled or taken over while this run worked on it."""


@dataclass(frozen=True)
class JobOptions:
    """How a job copies: kept in ``CopyJob.params`` so a resume uses the same settings."""

    delete_source: bool = True
    verify: Verify = "size"
    max_mbps: float | None = None       # megabits per second over the whole job, None = no cap
    connections: int = 4

    @property
    def max_bytes_per_s(self) -> float | None:
        return self.max_mbps * 1_000_000 / 8 if self.max_mbps else None

    def as_params(self) -> dict[str, Any]:
        return {"delete_source": self.delete_source, "verify": self.verify, "max_mbps": self.max_mbps,
                "connections": self.connections}


@dataclass(frozen=True)
class SourceVolume:
    """A volume to read footage from (server, drive) and how to open it."""

    server: str
    drive: str
    label: str                          # \\server\DATAX, for messages


@dataclass(frozen=True, order=True)
class BatchKey:
    """One copy task's worth of items: every file from one source volume to one target volume."""

    src_server: str
    src_drive: str
    dst_server: str
    dst_drive: str

    @property
    def label(self) -> str:
        return f"\\\\{self.src_server}\\DATA{self.src_drive} -> \\\\{self.dst_server}\\DATA{self.dst_drive}"


@dataclass
class PlannedFile:
    camera: str
    src_server: str
    src_drive: str
    relpath: str
    size: int
    mtime: float


@dataclass
class PlanReport:
    """What ``plan_job`` (or ``scan_sources`` for a dry run) found."""

    job_id: int | None
    target: str
    files: int = 0                                      # items of the job (all states)
    bytes: int = 0
    new_files: int = 0
    vanished: int = 0                                   # unfinished items whose source disappeared
    todo_files: int = 0                                 # still to copy or to delete
    todo_bytes: int = 0
    per_camera: dict[str, dict[str, int]] = field(default_factory=dict)   # cam -> {files, bytes}
    unmapped: list[str] = field(default_factory=list)   # "\\rec2\DATAE: rec1 has no drive E: 3 files (cam-1)"
    unmapped_cameras: list[str] = field(default_factory=list)
    batches: list[BatchKey] = field(default_factory=list)


@dataclass(frozen=True)
class JobProgress:
    """A snapshot for the progress bar: counters over the whole job, rate over the last seconds."""

    job_id: int
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    rate_bps: float
    elapsed_s: float
    batch: str = ""

    @property
    def percent(self) -> float:
        if self.bytes_total:
            return min(100.0, 100.0 * self.bytes_done / self.bytes_total)
        return 100.0 if not self.files_total else min(100.0, 100.0 * self.files_done / self.files_total)

    @property
    def eta_s(self) -> float | None:
        left = self.bytes_total - self.bytes_done
        if left <= 0:
            return 0.0
        return left / self.rate_bps if self.rate_bps > 0 else None

    def describe(self) -> str:
        eta = self.eta_s
        eta_text = "unknown" if eta is None else _duration(eta)
        return (f"{human_size(self.bytes_done)} of {human_size(self.bytes_total)} ({self.percent:.1f}%), "
                f"{self.files_done}/{self.files_total} files, {human_size(self.rate_bps)}/s, ETA {eta_text}")


@dataclass
class BatchResult:
    key: BatchKey
    copied: int = 0
    skipped: int = 0
    conflicts: list[str] = field(default_factory=list)   # destination names of kept-both copies
    failed: dict[str, str] = field(default_factory=dict)  # relpath -> why
    removed: int = 0
    bytes_copied: int = 0
    seconds: float = 0.0
    error: str | None = None                              # fatal error that stopped the batch


@dataclass
class CameraSummary:
    camera: str
    files: int = 0
    bytes: int = 0
    copied: int = 0
    skipped: int = 0
    conflicts: int = 0
    removed: int = 0
    remaining: int = 0
    failed: int = 0

    @property
    def complete(self) -> bool:
        return self.remaining == 0 and self.failed == 0


@dataclass
class JobSummary:
    job_id: int
    kind: str
    target: str
    state: CopyJobState
    cameras: dict[str, CameraSummary]
    files_total: int
    bytes_total: int
    files_done: int
    bytes_done: int
    error: str | None = None
    failures: list[str] = field(default_factory=list)    # a few "path: why" lines

    @property
    def remaining(self) -> int:
        return sum(c.remaining + c.failed for c in self.cameras.values())

    def rows(self) -> list[dict[str, Any]]:
        return [{"camera": c.camera, "files": c.files, "bytes": human_size(c.bytes), "copied": c.copied,
                 "skipped (identical)": c.skipped, "conflicts (both kept)": c.conflicts,
                 "sources removed": c.removed, "remaining": c.remaining + c.failed}
                for c in self.cameras.values()]


# --- claiming a job -------------------------------------------------------------------------------

def _owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _owner_alive(job: CopyJob, now: datetime) -> bool:
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
        if job.state == CopyJobState.planned or _owner_alive(job, now):
            out.append(job)
    return out


def busy_message(job: CopyJob, cameras: Iterable[str]) -> str:
    both = sorted(set(cameras) & set(job.cameras))
    return (f"camera{'s' if len(both) != 1 else ''} {', '.join(both)} already in copy job #{job.id} "
            f"({job.kind} to {job.target}, {job.state.value}, {job.files_done}/{job.files_total} files); "
            "a camera is never in two copy jobs: wait for it to finish (`farmkeeper status`) or re-run that job")


def check_cameras_free(session: Session, cameras: Sequence[str], *, kind: str, target: str) -> None:
    """Raise ``CameraBusyError`` if a live job (other than the same job being resumed) touches a camera."""
    for job in live_jobs(session, cameras):
        same = job.kind == kind and job.target == target and set(job.cameras) == set(cameras)
        if not same or _owner_alive(job, utcnow()) and job.state == CopyJobState.running:
            raise CameraBusyError(busy_message(job, cameras))


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
        if set(job.cameras) & set(cams) and job.state == CopyJobState.running and not _owner_alive(job, now):
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
    params = {**options.as_params(), "owner": _owner()}
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
    owner = (job.params or {}).get("owner") or {}
    if owner and owner != _owner():
        raise JobGoneError(f"copy job #{job_id} was taken over by another run ({owner.get('host')})")
    job.updated_at = utcnow()
    session.add(job)


# --- planning ---------------------------------------------------------------------------------------

def camera_files(volume: Volume, camera: str) -> Iterable[tuple[str, int, float]]:
    """Closed footage files of ``camera`` on ``volume`` (open segments and temporary files are not footage)."""
    for root in camera_roots(camera):
        for entry in volume.walk(root):
            fp = try_parse_footage(entry.relpath)
            if fp is not None and fp.camera == camera:
                yield entry.relpath, entry.size, entry.mtime


def scan_sources(sources: Sequence[tuple[SourceVolume, Volume]], cameras: Sequence[str],
                 target: str, target_drives: Iterable[str]) -> tuple[list[PlannedFile], PlanReport]:
    """Every closed footage file of ``cameras`` on the source volumes (read-only; used by dry runs too)."""
    drives = {d.upper() for d in target_drives}
    report = PlanReport(None, target)
    files: list[PlannedFile] = []
    for src, volume in sources:
        if src.server == target:
            continue
        unmapped: dict[str, int] = {}
        for cam in cameras:
            for relpath, size, mtime in camera_files(volume, cam):
                if src.drive.upper() not in drives:
                    unmapped[cam] = unmapped.get(cam, 0) + 1
                    continue
                files.append(PlannedFile(cam, src.server, src.drive.upper(), relpath, size, mtime))
        if unmapped:
            n = sum(unmapped.values())
            report.unmapped.append(f"{src.label}: {target} has no drive {src.drive.upper()}: {n} file"
                                   f"{'s' if n != 1 else ''} of {', '.join(sorted(unmapped))} not copied "
                                   f"(add a volume {src.drive.upper()} to {target}, the seed's same-drive-letter "
                                   "rule, or move them by hand)")
            report.unmapped_cameras.extend(c for c in unmapped if c not in report.unmapped_cameras)
    for f in files:
        pc = report.per_camera.setdefault(f.camera, {"files": 0, "bytes": 0})
        pc["files"] += 1
        pc["bytes"] += f.size
    report.files = report.todo_files = len(files)
    report.bytes = report.todo_bytes = sum(f.size for f in files)
    report.batches = sorted({BatchKey(f.src_server, f.src_drive, target, f.src_drive) for f in files})
    return files, report


def plan_job(session: Session, job: CopyJob, files: Sequence[PlannedFile], scan: PlanReport) -> PlanReport:
    """Record ``files`` (from ``scan_sources``) as items of ``job``; unfinished items whose source vanished go."""
    assert job.id is not None
    existing = {(i.src_server, i.src_drive, i.relpath): i for i in session.execute(
        _select_items("id", "src_server", "src_drive", "relpath", "size", "mtime", "state")
        .where(CopyItem.job_id == job.id))}
    seen = set()
    new_rows = []
    changed = []
    for f in files:
        key = (f.src_server, f.src_drive, f.relpath)
        seen.add(key)
        item = existing.get(key)
        if item is None:
            new_rows.append({"job_id": job.id, "camera_id": f.camera, "src_server": f.src_server,
                             "src_drive": f.src_drive, "dst_server": job.target, "dst_drive": f.src_drive,
                             "relpath": f.relpath, "size": f.size, "mtime": f.mtime,
                             "state": CopyItemState.pending})
        elif item.state in TODO and (item.size != f.size or abs(item.mtime - f.mtime) > MTIME_TOLERANCE):
            changed.append({"id": item.id, "size": f.size, "mtime": f.mtime})
    vanished = [i.id for k, i in existing.items() if k not in seen and i.state in TODO]
    if changed:
        session.execute(sa.update(CopyItem), changed)
    if new_rows:
        session.execute(sa.insert(CopyItem), new_rows)
    if vanished:
        log.warning("copy job #%s: %d planned files no longer exist at their source; dropped", job.id,
                    len(vanished))
        session.execute(sa.delete(CopyItem).where(col(CopyItem.id).in_(vanished)))
    session.flush()
    report = PlanReport(job.id, job.target, new_files=len(new_rows), vanished=len(vanished),
                        unmapped=list(scan.unmapped), unmapped_cameras=list(scan.unmapped_cameras))
    _refresh_counters(session, job)
    report.files, report.bytes = job.files_total, job.bytes_total
    delete_source = bool((job.params or {}).get("delete_source", True))
    batches = set()
    for cam, state, src_server, src_drive, dst_server, dst_drive, n, nbytes in session.execute(
            _select_items("camera_id", "state", "src_server", "src_drive", "dst_server", "dst_drive",
                          extra=(sa.func.count(), sa.func.coalesce(sa.func.sum(CopyItem.size), 0)))
            .where(CopyItem.job_id == job.id)
            .group_by(CopyItem.camera_id, CopyItem.state, CopyItem.src_server, CopyItem.src_drive,
                      CopyItem.dst_server, CopyItem.dst_drive)):
        pc = report.per_camera.setdefault(cam, {"files": 0, "bytes": 0})
        pc["files"] += int(n)
        pc["bytes"] += int(nbytes)
        if state in TODO or (delete_source and state in COPIED):
            report.todo_files += int(n)
            report.todo_bytes += int(nbytes) if state in TODO else 0
            batches.add(BatchKey(src_server, src_drive, dst_server, dst_drive))
    report.batches = sorted(batches)
    job.updated_at = utcnow()
    session.add(job)
    return report


def _select_items(*columns: str, extra: Sequence[Any] = ()) -> Any:
    """SELECT of some ``CopyItem`` columns: plain rows, no ORM objects (jobs have tens of thousands of items)."""
    return sa.select(*(getattr(CopyItem, c) for c in columns), *extra)


def _refresh_counters(session: Session, job: CopyJob) -> None:
    rows = session.exec(select(CopyItem.state, sa.func.count(), sa.func.coalesce(sa.func.sum(CopyItem.size), 0))
                        .where(CopyItem.job_id == job.id).group_by(CopyItem.state)).all()
    job.files_total = sum(int(n) for _s, n, _b in rows)
    job.bytes_total = sum(int(b) for _s, _n, b in rows)
    job.files_done = sum(int(n) for s, n, _b in rows if s in FINISHED)
    job.bytes_done = sum(int(b) for s, _n, b in rows if s in FINISHED)
    session.add(job)


# --- copying one batch ----------------------------------------------------------------------------

class _Recorder:
    """Writes copy results and job counters to the inventory from one thread, at most every ``interval``."""

    def __init__(self, session_factory: SessionFactory, job_id: int, key: BatchKey, base_bytes: int,
                 base_files: int, totals: tuple[int, int], on_progress: Callable[[JobProgress], None] | None,
                 db_interval: float, publish_interval: float) -> None:
        self.sessions, self.job_id, self.key = session_factory, job_id, key
        self.base_bytes, self.base_files = base_bytes, base_files
        self.bytes_total, self.files_total = totals
        self.on_progress = on_progress
        self.db_interval, self.publish_interval = db_interval, publish_interval
        self.lock = threading.Lock()
        self.results: list[tuple[int, CopyResult]] = []
        self.snapshot = Progress(0, 0, 0, 0)
        self.started = time.monotonic()
        self.samples: deque[tuple[float, int]] = deque([(self.started, 0)])
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name=f"fk-job{job_id}-recorder", daemon=True)

    def add_result(self, item_id: int, result: CopyResult) -> None:
        with self.lock:
            self.results.append((item_id, result))

    def progress(self, snap: Progress) -> None:
        with self.lock:
            self.snapshot = snap

    def _loop(self) -> None:
        last_publish = 0.0
        while not self.stop.wait(self.db_interval):
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - a progress write must not kill the copy; retried next tick
                log.warning("copy job #%s: cannot record progress yet: %s", self.job_id, exc)
            now = time.monotonic()
            if now - last_publish >= self.publish_interval:
                last_publish = now
                self.publish()

    def current(self) -> JobProgress:
        with self.lock:
            snap = self.snapshot
        now = time.monotonic()
        done = snap.bytes_done
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > 10.0:
            self.samples.popleft()
        t0, b0 = self.samples[0]
        rate = (done - b0) / (now - t0) if now > t0 else 0.0
        return JobProgress(self.job_id, self.base_bytes + done, self.bytes_total, self.base_files + snap.files_done,
                           self.files_total, max(rate, 0.0), now - self.started, self.key.label)

    def publish(self) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(self.current())
        except Exception as exc:  # noqa: BLE001 - the progress bar never fails a copy
            log.warning("copy job #%s: progress update failed: %s", self.job_id, exc)

    def flush(self) -> None:
        with self.lock:
            results, self.results = self.results, []
        prog = self.current()
        try:
            with self.sessions() as session:
                if results:
                    session.execute(sa.update(CopyItem), [_item_update(i, r) for i, r in results])
                session.execute(sa.update(CopyJob).where(col(CopyJob.id) == self.job_id)
                                .values(bytes_done=min(prog.bytes_done, self.bytes_total),
                                        files_done=min(prog.files_done, self.files_total), updated_at=utcnow()))
        except BaseException:
            with self.lock:
                self.results[:0] = results
            raise

    def __enter__(self) -> _Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.flush()
        self.publish()


def _item_update(item_id: int, result: CopyResult) -> dict[str, Any]:
    state = {"copied": CopyItemState.copied, "skipped": CopyItemState.skipped,
             "conflict": CopyItemState.conflict}.get(result.status, CopyItemState.failed)
    # dst_relpath records the outcome for good (see ``job_summary``): None = skipped (already identical)
    dst = None if state in (CopyItemState.skipped, CopyItemState.failed) else result.dst_relpath or result.relpath
    return {"id": item_id, "state": state, "error": result.error, "dst_relpath": dst}


def run_batch(session_factory: SessionFactory, job_id: int, key: BatchKey, src: Volume, dst: Volume,
              options: JobOptions, *, on_progress: Callable[[JobProgress], None] | None = None,
              db_interval: float = 1.0, publish_interval: float = 1.5) -> BatchResult:
    """Copy, verify and (with ``delete_source``) remove the sources of one batch of ``job_id``.

    Safe to re-run: items already copied are not copied again; a partial file resumes. Raises
    ``StorageFull`` / ``StorageUnavailable`` after recording what finished (the source is untouched
    for every file not verified at the destination).
    """
    started = time.monotonic()
    with session_factory() as session:
        touch_job(session, job_id)
        job = session.get(CopyJob, job_id)
        assert job is not None
        _refresh_counters(session, job)
        base_bytes, base_files = job.bytes_done, job.files_done
        totals = (job.bytes_total, job.files_total)
        todo = list(session.execute(_select_items("id", "relpath", "size", "mtime", "dst_relpath")
                                 .where(*_batch_where(job_id, key), col(CopyItem.state).in_(TODO))
                                 .order_by(col(CopyItem.relpath))))
    result = BatchResult(key)
    ids = {i.relpath: i.id for i in todo if i.id is not None}
    items = [StorageItem(i.relpath, i.size, i.mtime, i.dst_relpath if i.dst_relpath != i.relpath else None)
             for i in todo]
    report: CopyReport | None = None
    fatal: BaseException | None = None
    if items:
        log.info("copy job #%s: %s: %d files, %s", job_id, key.label, len(items), human_size(sum(i.size for i in todo)))
        with _Recorder(session_factory, job_id, key, base_bytes, base_files, totals, on_progress, db_interval,
                       publish_interval) as recorder:
            def on_result(r: CopyResult) -> None:
                item_id = ids.get(r.relpath)
                if item_id is not None:
                    recorder.add_result(item_id, r)
                    _count(result, r)
            try:
                report = copy_files(src, dst, items, connections=options.connections, verify=options.verify,
                                    max_bytes_per_s=options.max_bytes_per_s, progress=recorder.progress,
                                    on_result=on_result)
            except StorageError as exc:
                fatal = exc
                result.error = str(exc)
    if report is not None:
        result.bytes_copied = report.bytes_copied
    if fatal is None:
        _verify_and_delete(session_factory, job_id, key, dst, src, options, result)
    result.seconds = time.monotonic() - started
    with session_factory() as session:
        job = session.get(CopyJob, job_id)
        if job is not None:
            _refresh_counters(session, job)
            job.updated_at = utcnow()
    if fatal is not None:
        raise fatal
    return result


def _count(result: BatchResult, r: CopyResult) -> None:
    if r.status == "copied":
        result.copied += 1
    elif r.status == "skipped":
        result.skipped += 1
    elif r.status == "conflict":
        result.conflicts.append(r.dst_relpath or r.relpath)
    else:
        result.failed[r.relpath] = r.error or "failed"


def _batch_where(job_id: int, key: BatchKey) -> list[Any]:
    return [CopyItem.job_id == job_id, CopyItem.src_server == key.src_server, CopyItem.src_drive == key.src_drive,
            CopyItem.dst_server == key.dst_server, CopyItem.dst_drive == key.dst_drive]


def _verify_and_delete(session_factory: SessionFactory, job_id: int, key: BatchKey, dst: Volume, src: Volume,
                       options: JobOptions, result: BatchResult) -> None:
    """Re-check every copied item against a listing of the destination; then audit and delete the sources."""
    with session_factory() as session:
        done = list(session.execute(_select_items("id", "relpath", "dst_relpath", "size", "mtime", "camera_id", "state")
                                 .where(*_batch_where(job_id, key), col(CopyItem.state).in_(COPIED))))
    if not done:
        return
    folders = sorted({(i.dst_relpath or i.relpath).rpartition("/")[0] for i in done})
    listing: dict[str, Entry] = {}
    for folder in folders:
        for found in dst.walk(folder):
            listing[found.relpath] = found
    good: list[Any] = []   # rows (id, relpath, dst_relpath, size, mtime, camera_id, state)
    bad: list[dict[str, Any]] = []
    for item in done:
        entry = listing.get(item.dst_relpath or item.relpath)
        if entry is None or entry.size != item.size or (
                options.verify == "size" and abs(entry.mtime - item.mtime) > MTIME_TOLERANCE):
            why = "missing at the destination" if entry is None else (
                f"destination has size {entry.size}, mtime {entry.mtime:.3f}; source {item.size}, {item.mtime:.3f}")
            bad.append({"id": item.id, "state": CopyItemState.failed, "error": f"verification failed: {why}"})
            result.failed[item.relpath] = f"verification failed: {why}"
        else:
            good.append(item)
    if bad:
        with session_factory() as session:
            session.execute(sa.update(CopyItem), bad)
    if not options.delete_source:
        return
    run_id = f"copy-job-{job_id}"
    for start in range(0, len(good), DELETE_CHUNK):
        chunk = good[start:start + DELETE_CHUNK]
        with session_factory() as session:
            touch_job(session, job_id)
            now = utcnow()
            extra = {"outcome": "pending"} if _AUDIT_HAS_OUTCOME else {}
            session.execute(sa.insert(DeletionAudit), [
                {"at": now, "server": key.src_server, "drive": key.src_drive, "path": i.relpath, "size": i.size,
                 "rule": "source_copied", "camera_id": i.camera_id, "run_id": run_id, **extra} for i in chunk])
        deleted = src.delete_files([i.relpath for i in chunk])
        updates: list[dict[str, Any]] = []
        for item in chunk:
            failure = deleted.failed.get(item.relpath)
            if failure is None:
                updates.append({"id": item.id, "state": CopyItemState.removed, "error": None})
            else:
                updates.append({"id": item.id, "state": item.state, "error": f"source not deleted: {failure}"})
                result.failed[item.relpath] = f"source not deleted: {failure}"
        result.removed += len(chunk) - len(deleted.failed)
        with session_factory() as session:
            session.execute(sa.update(CopyItem), updates)
            if _AUDIT_HAS_OUTCOME:
                audit = DeletionAudit.__table__  # type: ignore[attr-defined]
                session.execute(sa.update(audit).where(audit.c.run_id == run_id, audit.c.outcome == "pending",
                                                       audit.c.path.in_([i.relpath for i in chunk]))
                                .values(outcome="deleted"))


# --- finishing ------------------------------------------------------------------------------------

def job_summary(session: Session, job: CopyJob) -> JobSummary:
    """Per-camera counts of the job's items.

    An item's outcome survives the removal of its source through ``dst_relpath``: ``None`` = it was
    already identical at the destination (skipped), equal to ``relpath`` = copied, else the conflict name.
    """
    assert job.id is not None
    delete_source = bool((job.params or {}).get("delete_source", True))
    cams = {c: CameraSummary(c) for c in job.cameras}
    failures: list[str] = []
    for item in session.execute(_select_items("camera_id", "size", "state", "relpath", "dst_relpath", "error",
                                              "src_server", "src_drive")
                                .where(CopyItem.job_id == job.id).order_by(col(CopyItem.relpath))):
        cs = cams.setdefault(item.camera_id, CameraSummary(item.camera_id))
        cs.files += 1
        cs.bytes += item.size
        finished = item.state in FINISHED
        conflict = finished and item.dst_relpath is not None and item.dst_relpath != item.relpath
        cs.conflicts += conflict
        cs.skipped += finished and item.dst_relpath is None
        cs.copied += finished and item.dst_relpath == item.relpath
        cs.removed += item.state == CopyItemState.removed
        if item.state == CopyItemState.failed or (item.error is not None and item.state in COPIED):
            cs.failed += 1
            if len(failures) < 10:
                failures.append(f"\\\\{item.src_server}\\DATA{item.src_drive}\\{item.relpath}: {item.error}")
        elif item.state == CopyItemState.pending or (delete_source and item.state in COPIED):
            cs.remaining += 1
    _refresh_counters(session, job)
    return JobSummary(job.id, job.kind, job.target, job.state, cams, job.files_total, job.bytes_total,
                      job.files_done, job.bytes_done, job.error, failures)


def finish_job(session: Session, job_id: int, *, error: str | None = None) -> JobSummary:
    """Close the job: ``done`` if every item is finished (and no ``error``), else ``failed`` saying what remains."""
    job = session.get(CopyJob, job_id)
    if job is None:
        raise InventoryError(f"no copy job #{job_id}")
    summary = job_summary(session, job)
    now = utcnow()
    if error is None and summary.remaining == 0:
        job.state, job.error, job.finished_at = CopyJobState.done, None, now
    else:
        job.state = CopyJobState.failed
        left = f"{summary.remaining} of {summary.files_total} files remain"
        job.error = f"{error}; {left}" if error else left
    job.updated_at = now
    session.add(job)
    session.flush()
    summary.state, summary.error = job.state, job.error
    return summary


def fail_job(session: Session, job_id: int, error: str) -> None:
    """Mark a job failed (the worker gave up); a re-run resumes it."""
    job = session.get(CopyJob, job_id)
    if job is not None and job.state in ACTIVE:
        job.state, job.error, job.updated_at = CopyJobState.failed, error[:2000], utcnow()
        session.add(job)


def inflight_files(session: Session) -> set[tuple[str, str, str]]:
    """(server, drive, relpath) of every file (both ends) of live jobs' unfinished items: retention keeps them."""
    out: set[tuple[str, str, str]] = set()
    ids = [j.id for j in session.exec(select(CopyJob).where(col(CopyJob.state).in_(ACTIVE)))]
    if not ids:
        return out
    for item in session.exec(select(CopyItem).where(col(CopyItem.job_id).in_(ids),
                                                    col(CopyItem.state) != CopyItemState.removed)):
        out.add((item.src_server, item.src_drive, item.relpath))
        out.add((item.dst_server, item.dst_drive, item.dst_relpath or item.relpath))
    return out


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def duration_text(seconds: float) -> str:
    return _duration(seconds)


# --- reporting a run --------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunWording:
    """The words a copy flow's messages use for one run: swap-back and move-cameras differ only in these."""

    what: str                 # "move to rec4", "swap-back to rec1": starts every title and message
    where: str                # where the copies are verified: "on rec4", "at home"
    resume: str               # the command that resumes the run
    rerun: str                # what to run once servers that were down are back: "re-run", "re-run `...`"
    still_open: str           # what becomes of segments still open: "re-run to move them"
    intro: str = ""           # a first line of the report and of the notification (may be empty)

    @property
    def title(self) -> str:
        return self.what[:1].upper() + self.what[1:]

    def crashed(self, exc: BaseException) -> str:
        """The message of a run stopped by an unexpected error."""
        return (f"{self.what} failed: {type(exc).__name__}: {exc}.\nNo source file was deleted unless verified "
                f"{self.where} (see the copy job in `farmkeeper status`).\nResume with: {self.resume}")


@dataclass
class JobReport:
    """A finished copy job as its run reports it: the numbers for the flow result and the texts for people."""

    wording: RunWording
    summary: JobSummary
    result: dict[str, Any]    # copied, skipped, ..., resume: the part of the flow result every copy flow has
    notes: list[str]
    body: str                 # one paragraph: counts, bytes transferred, time
    markdown: str             # the report artifact
    message: str              # the notification
    failure: str | None       # what went wrong and how to resume; None when the job is done

    @property
    def ok(self) -> bool:
        return self.failure is None


def blocked_cameras(cameras: Sequence[str], unmapped_cameras: Iterable[str],
                    still_open: dict[str, list[str]]) -> set[str]:
    """Cameras with footage left behind on purpose: on a drive the target lacks, or in a segment still open."""
    return set(unmapped_cameras) | {cam for paths in still_open.values() for cam in cameras
                                    if any(p.split("/")[1] == cam for p in paths)}


def job_report(summary: JobSummary, results: Sequence[BatchResult], wording: RunWording, *, verify: str,
               seconds: float, unmapped: list[str], unreachable: Sequence[str],
               still_open: dict[str, list[str]], failover_ended: list[str]) -> JobReport:
    """Totals, notes (unmapped drives, servers down, open segments, name collisions) and the report texts."""
    cams = summary.cameras.values()
    copied, skipped = sum(c.copied for c in cams), sum(c.skipped for c in cams)
    conflicts, removed = sum(c.conflicts for c in cams), sum(c.removed for c in cams)
    moved_bytes = sum(r.bytes_copied for r in results)
    notes = [*unmapped]
    if unreachable:
        notes.append(f"not read (server down): {', '.join(unreachable)}; {wording.rerun} when they are back")
    if still_open:
        notes.append(f"segments still open ({wording.still_open}): "
                     + "; ".join(f"{k}: {len(v)}" for k, v in still_open.items()))
    if conflicts:
        notes.append(f"{conflicts} name collision(s) with different content: both files kept "
                     "(the copy is named <stamp>~<source server>.<ext>)")
    ok = summary.state == CopyJobState.done
    body = (f"copy job #{summary.job_id}: {copied} copied, {skipped} skipped (already identical {wording.where}), "
            f"{conflicts} conflicts, {removed} sources removed after verification ({verify}); "
            f"{human_size(moved_bytes)} transferred in {duration_text(seconds)}")
    lines = [f"# {wording.title}: {'done' if ok else 'FAILED'}", ""]
    if wording.intro:
        lines += [f"{wording.intro[:1].upper()}{wording.intro[1:]}.", ""]
    lines += [body, "", *[f"- {n}" for n in notes]]
    if not ok:
        lines += [f"\n**Error:** {summary.error}", "", f"Resume with `{wording.resume}`"]
    markdown = "\n".join(lines)
    intro = [wording.intro] if wording.intro else []
    result = {"copied": copied, "skipped": skipped, "conflicts": conflicts, "removed": removed,
              "remaining": summary.remaining, "bytes_transferred": moved_bytes, "seconds": round(seconds, 3),
              "failover_ended": failover_ended, "unmapped": unmapped, "still_open": still_open,
              "error": summary.error, "resume": wording.resume}
    if ok:
        return JobReport(wording, summary, result, notes, body, markdown, "\n".join([*intro, body, *notes]), None)
    detail = "\n".join(summary.failures[:5])
    failure = (f"{wording.what} failed: {summary.error or 'some files failed'}.\nSources of unfinished files were "
               f"not deleted. {summary.remaining} of {summary.files_total} files remain"
               f"{' (' + detail + ')' if detail else ''}.\nResume with: {wording.resume}")
    return JobReport(wording, summary, result, notes, body, markdown, "\n".join([failure, body, *notes]), failure)

"""Copying one batch (one source volume -> one target volume): copy, record, verify, audit, delete."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from farmkeeper import audit
from farmkeeper.copyjobs.claim import touch_job
from farmkeeper.copyjobs.plan import BatchKey
from farmkeeper.copyjobs.report import duration_text
from farmkeeper.copyjobs.states import (
    COPIED,
    TODO,
    JobOptions,
    SessionFactory,
    job_owner,
    refresh_counters,
    select_items,
)
from farmkeeper.errors import StorageError
from farmkeeper.models import CopyItem, CopyItemState, CopyJob, utcnow
from farmkeeper.samestorage import prove_distinct
from farmkeeper.specs import human_size
from farmkeeper.storage import CopyItem as StorageItem
from farmkeeper.storage import CopyReport, CopyResult, Entry, Progress, Volume, copy_files
from farmkeeper.storage.copy import MTIME_TOLERANCE

log = logging.getLogger(__name__)

DELETE_CHUNK = 1000


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
        eta_text = "unknown" if eta is None else duration_text(eta)
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
        self.checkpoints: dict[int, dict[str, Any]] = {}
        self.snapshot = Progress(0, 0, 0, 0)
        self.started = time.monotonic()
        self.samples: deque[tuple[float, int]] = deque([(self.started, 0)])
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name=f"fk-job{job_id}-recorder", daemon=True)

    def add_result(self, item_id: int, result: CopyResult) -> None:
        with self.lock:
            self.results.append((item_id, result))

    def add_checkpoint(self, item_id: int, tmp: str, acked: int, origin: str) -> None:
        """A partial file's acknowledged length (recorded so a later run may resume it, see ``origin_of``)."""
        with self.lock:
            self.checkpoints[item_id] = {"id": item_id, "partial_path": tmp, "partial_bytes": acked,
                                         "partial_origin": origin}

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
            checkpoints, self.checkpoints = self.checkpoints, {}
        prog = self.current()
        try:
            with self.sessions() as session:
                if checkpoints:      # before the results: a result (which clears the checkpoint) comes later
                    session.execute(sa.update(CopyItem), list(checkpoints.values()))
                if results:
                    session.execute(sa.update(CopyItem), [_item_update(i, r) for i, r in results])
                session.execute(sa.update(CopyJob).where(col(CopyJob.id) == self.job_id)
                                .values(bytes_done=min(prog.bytes_done, self.bytes_total),
                                        files_done=min(prog.files_done, self.files_total), updated_at=utcnow()))
        except BaseException:
            with self.lock:
                self.results[:0] = results
                self.checkpoints = {**checkpoints, **self.checkpoints}
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
    return {"id": item_id, "state": state, "error": result.error, "dst_relpath": dst, "partial_path": None,
            "partial_bytes": 0, "partial_origin": None}


def origin_of(item: Any) -> str:
    """Where an item's bytes come from: source server, drive, path, size and mtime (a partial file written
    from another origin, or from this file before it changed, is never resumed)."""
    return f"{item.src_server}|{item.src_drive}|{item.relpath}|{item.size}|{item.mtime!r}"


def _resumable(item: Any) -> tuple[str, int] | None:
    if item.partial_path and item.partial_bytes > 0 and item.partial_origin == origin_of(item):
        return item.partial_path, int(item.partial_bytes)
    return None


def run_batch(session_factory: SessionFactory, job_id: int, key: BatchKey, src: Volume, dst: Volume,
              options: JobOptions, *, on_progress: Callable[[JobProgress], None] | None = None,
              db_interval: float = 1.0, publish_interval: float = 1.5) -> BatchResult:
    """Copy, verify and (with ``delete_source``) remove the sources of one batch of ``job_id``.

    Refuses (``SameStorageError``) before touching anything when ``src`` and ``dst`` are the same storage.
    Safe to re-run: items already copied are not copied again; a partial file resumes. Raises
    ``StorageFull`` / ``StorageUnavailable`` after recording what finished (the source is untouched
    for every file not verified at the destination).
    """
    started = time.monotonic()
    prove_distinct(src, dst)      # the same storage twice: SameStorageError, nothing copied or deleted
    with session_factory() as session:
        touch_job(session, job_id)
        owner = job_owner(job_id)   # deletions a crash of this job left pending are settled first
        audit.reconcile_pending(session, key.src_server, key.src_drive, audit.stat_exists(src),
                                may_settle=lambda o: o == owner)
        job = session.get(CopyJob, job_id)
        assert job is not None
        refresh_counters(session, job)
        base_bytes, base_files = job.bytes_done, job.files_done
        totals = (job.bytes_total, job.files_total)
        todo = list(session.execute(select_items("id", "relpath", "size", "mtime", "dst_relpath", "src_server",
                                                 "src_drive", "partial_path", "partial_bytes", "partial_origin")
                                 .where(*_batch_where(job_id, key), col(CopyItem.state).in_(TODO))
                                 .order_by(col(CopyItem.relpath))))
    result = BatchResult(key)
    ids = {i.relpath: i.id for i in todo if i.id is not None}
    origins = {i.relpath: origin_of(i) for i in todo}
    items = [StorageItem(i.relpath, i.size, i.mtime, i.dst_relpath if i.dst_relpath != i.relpath else None,
                         _resumable(i)) for i in todo]
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

            def on_checkpoint(relpath: str, tmp: str, acked: int) -> None:
                item_id = ids.get(relpath)
                if item_id is not None:
                    recorder.add_checkpoint(item_id, tmp, acked, origins[relpath])
            try:
                report = copy_files(src, dst, items, connections=options.connections, verify=options.verify,
                                    max_bytes_per_s=options.max_bytes_per_s, progress=recorder.progress,
                                    on_result=on_result, on_checkpoint=on_checkpoint,
                                    checkpoint_every=options.checkpoint_every, chunk_size=options.chunk_size)
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
            refresh_counters(session, job)
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


def _sources_unchanged(session_factory: SessionFactory, src: Volume, items: list[Any],
                       result: BatchResult) -> list[Any]:
    """The items whose source is, right before its deletion, still the file that was copied (size, mtime).

    A source changed since its copy (written to again, replaced) is not deleted: the item goes back to
    ``pending`` so the next run copies it again. A source already gone passes on (audited as ``missing``).
    """
    listing: dict[str, Entry] = {}
    for folder in sorted({i.relpath.rpartition("/")[0] for i in items}):
        for found in src.walk(folder):
            listing[found.relpath] = found
    keep: list[Any] = []
    changed: list[dict[str, Any]] = []
    for item in items:
        entry = listing.get(item.relpath)
        if entry is not None and (entry.size != item.size or abs(entry.mtime - item.mtime) > MTIME_TOLERANCE):
            why = (f"source changed after its copy (now size {entry.size}, mtime {entry.mtime:.3f}; copied "
                   f"{item.size}, {item.mtime:.3f}): not deleted, copied again by the next run")
            changed.append({"id": item.id, "state": CopyItemState.pending, "error": why})
            result.failed[item.relpath] = why
        else:
            keep.append(item)
    if changed:
        with session_factory() as session:
            session.execute(sa.update(CopyItem), changed)
    return keep


def _batch_where(job_id: int, key: BatchKey) -> list[Any]:
    return [CopyItem.job_id == job_id, CopyItem.src_server == key.src_server, CopyItem.src_drive == key.src_drive,
            CopyItem.dst_server == key.dst_server, CopyItem.dst_drive == key.dst_drive]


def _verify_and_delete(session_factory: SessionFactory, job_id: int, key: BatchKey, dst: Volume, src: Volume,
                       options: JobOptions, result: BatchResult) -> None:
    """Re-check every copied item against a listing of the destination; then audit and delete the sources."""
    with session_factory() as session:
        done = list(session.execute(select_items("id", "relpath", "dst_relpath", "size", "mtime", "camera_id", "state")
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
    good = _sources_unchanged(session_factory, src, good, result)
    by_path = {i.relpath: i for i in good}

    def settle(done: audit.AuditedResult, part: Sequence[audit.Doomed]) -> None:
        updates: list[dict[str, Any]] = []
        for d in part:
            item = by_path[d.path]
            failure = done.failed.get(d.path)
            if failure is None:
                updates.append({"id": item.id, "state": CopyItemState.removed, "error": None})
                result.removed += 1
            else:
                updates.append({"id": item.id, "state": item.state, "error": f"source not deleted: {failure}"})
                result.failed[d.path] = f"source not deleted: {failure}"
        with session_factory() as session:
            session.execute(sa.update(CopyItem), updates)

    audit.audited_delete(src, [audit.Doomed(i.relpath, i.size, "source_copied", i.camera_id) for i in good],
                         sessions=session_factory, owner=job_owner(job_id), server=key.src_server,
                         drive=key.src_drive, chunk=DELETE_CHUNK, before_chunk=lambda s: touch_job(s, job_id),
                         on_chunk=settle)


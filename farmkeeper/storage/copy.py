"""Copy footage between volumes: resumable, verified, parallel, bandwidth-capped.

Each file is written to ``.<name>.fkpart`` next to its destination, given the source mtime, verified and
then renamed into place; an existing different destination is never overwritten (the copy goes to
``<stem>~<source server>.<ext>`` and the result says ``conflict``).

A partial file is resumed only when the caller proves it is this item's own: ``CopyItem.partial`` names the
temporary file and the length the destination acknowledged (``FileWriter.acked``, reported through
``on_checkpoint`` while copying and recorded by the caller), and the source still has the size and mtime
the item was planned with. Any other partial is truncated and rewritten from the start.

Verification (``verify``): ``hash`` (the default) reads the destination back and compares its BLAKE2b with
the BLAKE2b of the source bytes computed while they were read for the copy; ``size`` compares size and
mtime only (an explicit opt-out for trusted storage).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from farmkeeper.errors import StorageError, StorageExists, StorageFull, StorageUnavailable, VerificationError
from farmkeeper.layout import conflict_name
from farmkeeper.storage.base import Entry, Volume

log = logging.getLogger(__name__)

Status = Literal["copied", "skipped", "conflict", "failed"]
MTIME_TOLERANCE = 1e-3
SMALL_FILE = 1 << 20   # files up to this size skip the destination pre-check and the partial-file resume
CHECKPOINT_EVERY = 32 << 20   # report the acknowledged length of a partial file at most this often (bytes)
Checkpoint = Callable[[str, str, int], None]   # (source relpath, temporary file, acknowledged length)


@dataclass(frozen=True)
class _Done:
    tmp: str      # the verified temporary file
    bytes: int    # bytes transferred


@dataclass(frozen=True)
class CopyItem:
    """One file to copy; ``partial``: (temporary file, acknowledged length) this item's earlier run recorded."""

    relpath: str
    size: int
    mtime: float
    dst_relpath: str | None = None
    partial: tuple[str, int] | None = None


@dataclass
class CopyResult:
    relpath: str
    status: Status
    bytes: int = 0
    error: str | None = None
    dst_relpath: str | None = None


@dataclass(frozen=True)
class Progress:
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int


@dataclass
class CopyReport:
    results: list[CopyResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def bytes_copied(self) -> int:
        return sum(r.bytes for r in self.results)

    @property
    def ok(self) -> bool:
        return all(r.status != "failed" for r in self.results)


class TokenBucket:
    """A bandwidth cap shared by every connection of one copy."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(rate / 4, 1 << 20)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= min(n, self.capacity):
                    self.tokens -= n
                    return
                wait = (min(n, self.capacity) - self.tokens) / self.rate
            time.sleep(min(wait, 1.0))


class _Tracker:
    def __init__(self, total_bytes: int, total_files: int, progress: Callable[[Progress], None] | None,
                 interval: float = 0.5) -> None:
        self.bytes_total, self.files_total = total_bytes, total_files
        self.bytes_done = self.files_done = 0
        self.progress = progress
        self.interval = interval
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def add(self, nbytes: int = 0, files: int = 0) -> None:
        with self.lock:
            self.bytes_done += nbytes
            self.files_done += files
            now = time.monotonic()
            if self.progress is None or now - self.last < self.interval:
                return
            self.last = now
            snap = Progress(self.bytes_done, self.bytes_total, self.files_done, self.files_total)
        self.progress(snap)

    def final(self) -> None:
        if self.progress is not None:
            self.progress(Progress(self.bytes_done, self.bytes_total, self.files_done, self.files_total))


def temp_name(relpath: str) -> str:
    head, _, name = relpath.rpartition("/")
    return f"{head}/.{name}.fkpart" if head else f".{name}.fkpart"


def _same(a: Entry, size: int, mtime: float) -> bool:
    return a.size == size and abs(a.mtime - mtime) <= MTIME_TOLERANCE


def _hash_file(vol: Volume, relpath: str, chunk_size: int) -> tuple[str, int]:
    reader = vol.open_reader(relpath)
    try:
        h = hashlib.blake2b(digest_size=32)
        for data in reader.chunks(0, reader.size, chunk_size):
            h.update(data)
        return h.hexdigest(), reader.size
    finally:
        reader.close()


class _Copier:
    def __init__(self, src: Volume, dst: Volume, verify: Literal["size", "hash"], chunk_size: int,
                 bucket: TokenBucket | None, tracker: _Tracker, on_checkpoint: Checkpoint | None = None,
                 checkpoint_every: int = CHECKPOINT_EVERY) -> None:
        self.src, self.dst, self.verify, self.chunk = src, dst, verify, chunk_size
        self.bucket, self.tracker = bucket, tracker
        self.on_checkpoint, self.checkpoint_every = on_checkpoint, checkpoint_every
        self.abort = threading.Event()

    def copy(self, item: CopyItem) -> CopyResult:
        src_rel = self.src.rel(item.relpath)
        dst_rel = self.dst.rel(item.dst_relpath or item.relpath)
        if self.abort.is_set():
            return CopyResult(src_rel, "failed", 0, "copy aborted (an earlier file hit a fatal error)", dst_rel)
        try:
            return self._copy(src_rel, dst_rel, item)
        except (StorageFull, StorageUnavailable):
            self.abort.set()
            raise
        except StorageError as exc:
            return CopyResult(src_rel, "failed", 0, str(exc), dst_rel)

    def _copy(self, src_rel: str, dst_rel: str, item: CopyItem) -> CopyResult:
        if item.size <= SMALL_FILE:
            return self._copy_small(src_rel, dst_rel, item)
        existing = self.dst.stat(dst_rel)
        status: Status = "copied"
        if existing is not None:
            if self._matches(existing, src_rel, dst_rel, item):
                self.tracker.add(item.size, 1)
                return CopyResult(src_rel, "skipped", 0, None, dst_rel)
            status = "conflict"
            dst_rel = conflict_name(dst_rel, self.src.server)
            other = self.dst.stat(dst_rel)
            if other is not None and self._matches(other, src_rel, dst_rel, item):
                self.tracker.add(item.size, 1)
                return CopyResult(src_rel, "conflict", 0, None, dst_rel)
            if other is not None:
                return CopyResult(src_rel, "failed", 0, "destination and its conflict name both exist with "
                                  "different content", dst_rel)
        tmp = self._transfer(src_rel, dst_rel, item)
        try:
            nbytes = self._place(tmp, dst_rel)
        except StorageExists:
            self._drop(tmp)
            raise
        self.tracker.add(0, 1)
        return CopyResult(src_rel, status, nbytes, None, dst_rel)

    def _copy_small(self, src_rel: str, dst_rel: str, item: CopyItem) -> CopyResult:
        """A small file: copied and verified first, the destination looked at only if the rename finds it
        taken (then the same rules: identical → skipped, different → the conflict name), so a new file
        costs no stat at all and the whole copy is a few round trips."""
        tmp = self._transfer(src_rel, dst_rel, None)
        try:
            nbytes = self._place(tmp, dst_rel)
            self.tracker.add(0, 1)
            return CopyResult(src_rel, "copied", nbytes, None, dst_rel)
        except StorageExists:
            pass
        existing = self.dst.stat(dst_rel)
        if existing is not None and self._matches(existing, src_rel, dst_rel, item):
            self._drop(tmp)
            self.tracker.add(0, 1)
            return CopyResult(src_rel, "skipped", 0, None, dst_rel)
        dst_rel = conflict_name(dst_rel, self.src.server)
        other = self.dst.stat(dst_rel)
        if other is not None:
            self._drop(tmp)
            if self._matches(other, src_rel, dst_rel, item):
                self.tracker.add(0, 1)
                return CopyResult(src_rel, "conflict", 0, None, dst_rel)
            return CopyResult(src_rel, "failed", 0, "destination and its conflict name both exist with "
                              "different content", dst_rel)
        try:
            nbytes = self._place(tmp, dst_rel)
        except StorageExists:
            self._drop(tmp)
            raise
        self.tracker.add(0, 1)
        return CopyResult(src_rel, "conflict", nbytes, None, dst_rel)

    def _matches(self, entry: Entry, src_rel: str, dst_rel: str, item: CopyItem) -> bool:
        if self.verify == "hash":
            if entry.size != item.size:
                return False
            return _hash_file(self.src, src_rel, self.chunk)[0] == _hash_file(self.dst, dst_rel, self.chunk)[0]
        return _same(entry, item.size, item.mtime)

    def _resume_at(self, tmp: str, item: CopyItem | None, size: int, mtime: float) -> int:
        """Where to resume ``tmp``: the recorded acknowledged length when the partial is provably this item's
        (recorded for this temporary file, source unchanged, file at least that long), else 0 (restart)."""
        if item is None or item.partial is None:
            return 0
        path, acked = item.partial
        if path != tmp or not 0 < acked <= size or not _same(Entry(tmp, size, mtime), item.size, item.mtime):
            return 0
        partial = self.dst.stat(tmp)
        return acked if partial is not None and partial.size >= acked else 0

    def _transfer(self, src_rel: str, dst_rel: str, item: CopyItem | None) -> _Done:
        """Copy ``src_rel`` to the temporary name of ``dst_rel`` (resumed only as ``_resume_at`` allows; any
        other partial is truncated) and verify it there; the caller renames it into place."""
        tmp = temp_name(dst_rel)
        reader = self.src.open_reader(src_rel)
        copied = 0
        try:
            size, mtime = reader.size, reader.mtime
            start = self._resume_at(tmp, item, size, mtime)
            writer = self.dst.open_writer(tmp, truncate_to=start)
            h = hashlib.blake2b(digest_size=32) if self.verify == "hash" else None
            checkpoint = self.on_checkpoint if item is not None else None
            try:
                if h is not None and start:
                    for data in reader.chunks(0, start, self.chunk):
                        h.update(data)
                pos = start
                next_mark = start + self.checkpoint_every
                for data in reader.chunks(start, size, self.chunk):
                    if self.bucket is not None:
                        self.bucket.take(len(data))
                    writer.write(pos, data)
                    if h is not None:
                        h.update(data)
                    pos += len(data)
                    copied += len(data)
                    self.tracker.add(len(data))
                    if checkpoint is not None and pos >= next_mark:
                        next_mark = pos + self.checkpoint_every
                        acked = writer.acked()
                        if acked is not None and acked > start:
                            checkpoint(src_rel, tmp, acked)
                done = writer.finish(mtime)
            except StorageFull:
                writer.abort()
                self._drop(tmp)
                raise
            except BaseException:
                writer.abort()
                raise
            if start:
                self.tracker.add(start)
        finally:
            reader.close()
        if not _same(done, size, mtime):
            self._drop(tmp)
            raise VerificationError(0, f"copy has size {done.size}, mtime {done.mtime:.3f}; source has {size}, "
                                    f"{mtime:.3f}", server=self.dst.server, share=self.dst.share, path=dst_rel)
        if h is not None:
            got, _ = _hash_file(self.dst, tmp, self.chunk)
            if got != h.hexdigest():
                self._drop(tmp)
                raise VerificationError(0, "copy read back from the destination differs from the source (BLAKE2b); "
                                        "the source is kept", server=self.dst.server, share=self.dst.share,
                                        path=dst_rel)
        return _Done(tmp, copied)

    def _place(self, done: _Done, dst_rel: str) -> int:
        """Rename the verified temporary file to ``dst_rel`` (``StorageExists`` if that name is taken)."""
        self.dst.rename(done.tmp, dst_rel)
        return done.bytes

    def _drop(self, tmp: str | _Done) -> None:
        if isinstance(tmp, _Done):
            tmp = tmp.tmp
        try:
            self.dst.remove(tmp)
        except StorageError as exc:
            log.warning("could not remove temporary file %s: %s", tmp, exc)


def copy_files(src: Volume, dst: Volume, items: Iterable[CopyItem], *, connections: int = 4,
               verify: Literal["size", "hash"] = "hash", max_bytes_per_s: float | None = None,
               progress: Callable[[Progress], None] | None = None, chunk_size: int = 8 << 20,
               on_result: Callable[[CopyResult], None] | None = None, on_checkpoint: Checkpoint | None = None,
               checkpoint_every: int = CHECKPOINT_EVERY) -> CopyReport:
    """Copy ``items`` from ``src`` to ``dst`` with ``connections`` threads (each with its own connections).

    ``on_checkpoint(relpath, temporary file, acknowledged length)`` is called while a large file is copied
    (every ``checkpoint_every`` bytes): recorded, it is what lets a later run resume that partial file.

    Raises ``StorageFull`` (destination full; the source is untouched) and ``StorageUnavailable``
    (connection lost; a re-run resumes the partial files); per-file problems are ``failed`` results.
    """
    todo = list(items)
    for item in todo:  # every path is checked before any I/O
        src.rel(item.relpath)
        dst.rel(item.dst_relpath or item.relpath)
    started = time.monotonic()
    tracker = _Tracker(sum(i.size for i in todo), len(todo), progress)
    bucket = TokenBucket(max_bytes_per_s) if max_bytes_per_s else None
    copier = _Copier(src, dst, verify, chunk_size, bucket, tracker, on_checkpoint, checkpoint_every)
    report = CopyReport()
    lock = threading.Lock()

    def run(item: CopyItem) -> CopyResult:
        result = copier.copy(item)
        with lock:
            report.results.append(result)
        if on_result is not None:
            on_result(result)
        return result

    first_error: BaseException | None = None
    if connections <= 1:
        for item in todo:
            run(item)
    else:
        with ThreadPoolExecutor(max_workers=connections, thread_name_prefix="fk-copy") as pool:
            futures = [pool.submit(run, item) for item in todo]
            for fut in futures:
                exc = fut.exception()
                if exc is not None and first_error is None:
                    first_error = exc
    report.seconds = time.monotonic() - started
    tracker.final()
    if first_error is not None:
        raise first_error
    return report


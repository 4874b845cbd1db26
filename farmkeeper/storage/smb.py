"""The SMB backend: a volume reached as ``\\\\host\\DATAX`` over SMB 2/3 (signing on by default).

Requests are pipelined (many in flight per connection) and related operations are compounded
(CREATE+QUERY_DIRECTORY+CLOSE, CREATE(delete-on-close)+CLOSE, ...). Each thread that holds a file open
gets its own connection from a pool, since threads sharing one session run out of credits.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, cast

from smbprotocol.exceptions import SMBAuthenticationError, SMBException, SMBResponseException

from farmkeeper.errors import (
    StorageAuthError,
    StorageError,
    StorageExists,
    StorageFull,
    StorageNotFound,
    StoragePermission,
    StorageUnavailable,
)
from farmkeeper.storage import _smb2 as p
from farmkeeper.storage.base import (
    DeleteResult,
    Entry,
    FileReader,
    FileWriter,
    Space,
    Volume,
    VolumeAccess,
    check_deletable,
    prune_candidates,
)

log = logging.getLogger(__name__)

_NOT_FOUND = (p.STATUS_OBJECT_NAME_NOT_FOUND, p.STATUS_OBJECT_PATH_NOT_FOUND)
_DIR_LIST = p.FILE_LIST_DIRECTORY | p.FILE_READ_ATTRIBUTES | p.SYNCHRONIZE
_QD_BUFFER = 1 << 20
_READ_AHEAD = 1 << 20   # read with the open / written with the close: small files take one round trip each
_ERRORS: dict[int, tuple[type[StorageError], int, str]] = {
    p.STATUS_OBJECT_NAME_NOT_FOUND: (StorageNotFound, errno.ENOENT, "no such file"),
    p.STATUS_OBJECT_PATH_NOT_FOUND: (StorageNotFound, errno.ENOENT, "no such folder"),
    p.STATUS_OBJECT_NAME_COLLISION: (StorageExists, errno.EEXIST, "already exists"),
    p.STATUS_ACCESS_DENIED: (StoragePermission, errno.EACCES, "access denied"),
    p.STATUS_SHARING_VIOLATION: (StoragePermission, errno.EBUSY, "in use by another client"),
    p.STATUS_DISK_FULL: (StorageFull, errno.ENOSPC, "no space left on the volume"),
    p.STATUS_QUOTA_EXCEEDED: (StorageFull, errno.EDQUOT, "quota exceeded"),
    p.STATUS_LOGON_FAILURE: (StorageAuthError, errno.EACCES, "logon failed (wrong user name or password)"),
    p.STATUS_FILE_IS_A_DIRECTORY: (StorageError, errno.EISDIR, "is a folder"),
    p.STATUS_NOT_A_DIRECTORY: (StorageError, errno.ENOTDIR, "not a folder"),
    p.STATUS_DIRECTORY_NOT_EMPTY: (StorageError, errno.ENOTEMPTY, "folder not empty"),
    p.STATUS_DELETE_PENDING: (StorageNotFound, errno.ENOENT, "being deleted"),
    p.STATUS_OBJECT_NAME_INVALID: (StorageError, errno.EINVAL, "invalid name"),
}
_TRANSIENT = {p.STATUS_NETWORK_NAME_DELETED, p.STATUS_USER_SESSION_DELETED, 0xC000035C, 0xC0000128}


class SMBVolume(Volume):
    """A share over SMB; opening it connects once so wrong credentials or a missing share fail early."""

    def __init__(self, access: VolumeAccess, *, timeout: float = 30.0, list_depth: int = 24,
                 io_depth: int = 4) -> None:
        self.server = access.server
        self.share = access.share
        self._access = access
        self._timeout = timeout
        self._list_depth = list_depth
        self._io_depth = io_depth
        self._pool: list[p.Channel] = []
        self._all: set[p.Channel] = set()
        self._lock = threading.Lock()
        self._dirs: set[str] = set()
        self._closed = False
        self._release(self._connect())

    # --- connections -------------------------------------------------------------------------------
    def _connect(self) -> p.Channel:
        a = self._access
        host = a.host or a.server
        try:
            ch = p.Channel(host, a.port, self.share, a.username, a.password, require_signing=a.require_signing,
                           encrypt=a.encrypt, timeout=self._timeout)
        except SMBResponseException as exc:
            status = int(exc.status)
            if status == p.STATUS_BAD_NETWORK_NAME:
                raise self.error(StorageNotFound, errno.ENOENT,
                                 f"share {self.share} does not exist on {host} (check the drive letter and "
                                 "that the volume is shared)") from None
            raise self.status_error(status, "") from None
        except SMBAuthenticationError:
            raise self.error(StorageAuthError, errno.EACCES,
                             f"logon to {host} as {a.username!r} failed (wrong user name or password)") from None
        except (ValueError, OSError, SMBException) as exc:
            if "STATUS_LOGON_FAILURE" in str(exc) or "LOGON_FAILURE" in str(exc):
                raise self.error(StorageAuthError, errno.EACCES, f"logon to {host} as {a.username!r} failed "
                                 "(wrong user name or password)") from None
            raise StorageUnavailable(f"cannot connect to {host}:{a.port}: {self._scrub(exc)}",
                                     server=self.server, share=self.share) from None
        with self._lock:
            self._all.add(ch)
        return ch

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc)
        return text.replace(self._access.password, "***") if self._access.password else text

    def _acquire(self) -> p.Channel:
        if self._closed:
            raise StorageUnavailable("volume is closed", server=self.server, share=self.share)
        while True:
            with self._lock:
                ch = self._pool.pop() if self._pool else None
            if ch is None:
                return self._connect()
            if ch.alive:
                return ch
            self._discard(ch)

    def _release(self, ch: p.Channel) -> None:
        if ch.alive and not self._closed:
            with self._lock:
                self._pool.append(ch)
        else:
            self._discard(ch)

    def _discard(self, ch: p.Channel) -> None:
        with self._lock:
            self._all.discard(ch)
        ch.close()

    @contextlib.contextmanager
    def channel(self, path: str = "") -> Iterator[p.Channel]:
        """A connection for this thread's exclusive use; connection failures become StorageUnavailable."""
        ch = self._acquire()
        try:
            yield ch
        except (p.ConnectionLost, OSError) as exc:
            if isinstance(exc, StorageError):
                raise
            self._discard(ch)
            raise StorageUnavailable(f"connection lost: {self._scrub(exc)}", server=self.server,
                                     share=self.share, path=path) from None
        finally:
            self._release(ch)

    def status_error(self, status: int, path: str, what: str = "") -> StorageError:
        if status in _TRANSIENT:
            return StorageUnavailable(f"{what}server dropped the session (status 0x{status:08x})",
                                      server=self.server, share=self.share, path=path)
        cls, err, text = _ERRORS.get(status, (StorageError, errno.EIO, f"SMB error status 0x{status:08x}"))
        return self.error(cls, err, what + text, path)

    def _check(self, status: int, path: str, what: str = "") -> None:
        if status != p.STATUS_SUCCESS:
            raise self.status_error(status, path, what)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            chans = list(self._all)
            self._all.clear()
            self._pool.clear()
        for ch in chans:
            ch.close()

    # --- listing -----------------------------------------------------------------------------------
    def _scan(self, prefix: str) -> Iterator[tuple[str, list[tuple[str, int, float]]]]:
        """Yield (folder, [(name, size, mtime)]) for every folder under ``prefix``, pipelined, depth first."""
        root = self.rel(prefix)
        with self.channel(root) as ch:
            q: queue.SimpleQueue[p.Reply] = queue.SimpleQueue()
            stack = [root]
            inflight: dict[int, tuple[str, list[Any]]] = {}
            seq = 0
            while stack or inflight:
                while stack and len(inflight) < self._list_depth:
                    d = stack.pop()
                    seq += 1
                    ch.submit([p.create(d, _DIR_LIST, p.FILE_OPEN, p.FILE_DIRECTORY_FILE),
                               p.query_directory(p.RELATED_FID, _QD_BUFFER, True),
                               p.query_directory(p.RELATED_FID, _QD_BUFFER, False),
                               p.close()], q, related=True, tags=[(seq, i) for i in range(4)])
                    inflight[seq] = (d, [None] * 4)
                    if len(inflight) == 1 and d == root:
                        break  # learn whether the root exists before fanning out
                (key, i), status, mv = ch.get(q)
                d, got = inflight[key]
                got[i] = (status, mv)
                if any(g is None for g in got):
                    continue
                del inflight[key]
                files: list[tuple[str, int, float]] = []
                subdirs: list[str] = []
                c_status = got[0][0]
                if c_status != p.STATUS_SUCCESS:
                    if c_status in _NOT_FOUND or c_status == p.STATUS_NOT_A_DIRECTORY:
                        continue  # a missing prefix (or a folder removed meanwhile) holds nothing
                    raise self.status_error(c_status, d, "cannot list folder: ")
                s1, s2 = got[1][0], got[2][0]
                if s1 == p.STATUS_SUCCESS and s2 == p.STATUS_NO_MORE_FILES:
                    p.parse_directory(p.out_buffer(got[1][1]), files, subdirs)
                elif s1 == p.STATUS_NO_MORE_FILES:
                    pass
                elif s1 == p.STATUS_SUCCESS and s2 == p.STATUS_SUCCESS:
                    files, subdirs = self._list_long(ch, d)  # more than two buffers of entries
                else:
                    raise self.status_error(s1 if s1 not in (p.STATUS_SUCCESS, p.STATUS_NO_MORE_FILES) else s2,
                                            d, "cannot list folder: ")
                base = d + "/" if d else ""
                stack.extend(base + s for s in subdirs)
                yield d, files

    def _list_long(self, ch: p.Channel, d: str) -> tuple[list[tuple[str, int, float]], list[str]]:
        (status, mv), = ch.call([p.create(d, _DIR_LIST, p.FILE_OPEN, p.FILE_DIRECTORY_FILE)])
        self._check(status, d, "cannot list folder: ")
        fid = p.create_fid(mv)
        files: list[tuple[str, int, float]] = []
        subdirs: list[str] = []
        try:
            restart = True
            while True:
                (status, mv), = ch.call([p.query_directory(fid, _QD_BUFFER, restart)])
                restart = False
                if status == p.STATUS_NO_MORE_FILES:
                    break
                self._check(status, d, "cannot list folder: ")
                p.parse_directory(p.out_buffer(mv), files, subdirs)
        finally:
            ch.call([p.close(fid)])
        return files, subdirs

    def walk(self, prefix: str = "") -> Iterator[Entry]:
        for d, files in self._scan(prefix):
            base = d + "/" if d else ""
            for name, size, mtime in files:
                yield Entry(base + name, size, mtime)

    def list_files_by_dir(self, prefix: str = "") -> Iterator[tuple[str, list[str]]]:
        for d, files in self._scan(prefix):
            yield d, [f[0] for f in files]

    # --- single operations -------------------------------------------------------------------------
    def space(self) -> Space:
        with self.channel() as ch:
            (s1, _), (s2, mv), _ = ch.call([p.create("", p.FILE_READ_ATTRIBUTES | p.SYNCHRONIZE, p.FILE_OPEN,
                                                     p.FILE_DIRECTORY_FILE),
                                            p.query_info(p.RELATED_FID, 2, 7, 64), p.close()], related=True)
            self._check(s1, "", "cannot query free space: ")
            self._check(s2, "", "cannot query free space: ")
            import struct

            total, caller_free, _actual, spu, bps = struct.unpack_from("<QQQII", p.out_buffer(mv), 0)
            unit = spu * bps
            return Space(total * unit, caller_free * unit)

    def stat(self, relpath: str) -> Entry | None:
        rel = self.rel(relpath)
        with self.channel(rel) as ch:
            (status, mv), _ = ch.call([p.create(rel, p.FILE_READ_ATTRIBUTES | p.SYNCHRONIZE, p.FILE_OPEN, 0),
                                       p.close()], related=True)
            if status in _NOT_FOUND or status == p.STATUS_DELETE_PENDING:
                return None
            self._check(status, rel)
            size, mtime, attrs = p.create_stat(mv)
            return Entry(rel, 0 if attrs & p.FILE_ATTRIBUTE_DIRECTORY else size, mtime)

    def makedirs(self, relpath: str) -> None:
        rel = self.rel(relpath)
        if not rel or rel in self._dirs:
            return
        with self.channel(rel) as ch:
            self._makedirs(ch, rel)

    def _makedirs(self, ch: p.Channel, rel: str) -> None:
        if not rel or rel in self._dirs:
            return
        (status, mv), _ = ch.call([p.create(rel, p.FILE_READ_ATTRIBUTES | p.SYNCHRONIZE, p.FILE_OPEN_IF,
                                            p.FILE_DIRECTORY_FILE), p.close()], related=True)
        if status == p.STATUS_OBJECT_PATH_NOT_FOUND and "/" in rel:
            self._makedirs(ch, rel.rsplit("/", 1)[0])
            (status, mv), _ = ch.call([p.create(rel, p.FILE_READ_ATTRIBUTES | p.SYNCHRONIZE, p.FILE_OPEN_IF,
                                                p.FILE_DIRECTORY_FILE), p.close()], related=True)
        if status in (p.STATUS_NOT_A_DIRECTORY, p.STATUS_OBJECT_NAME_COLLISION):
            raise self.error(StorageExists, errno.EEXIST, "a file is in the way of this folder", rel)
        self._check(status, rel, "cannot create folder: ")
        self._dirs.add(rel)

    def read_bytes(self, relpath: str) -> bytes:
        reader = self.open_reader(relpath)
        try:
            return b"".join(reader.chunks(0, reader.size, 8 << 20))
        finally:
            reader.close()

    def write_bytes(self, relpath: str, data: bytes, mtime: float | None = None) -> None:
        writer = self.open_writer(relpath, truncate_to=0)
        try:
            if data:
                writer.write(0, data)
        except BaseException:
            writer.abort()
            raise
        writer.finish(mtime)

    def rename(self, src: str, dst: str) -> None:
        s, d = self.rel(src), self.rel(dst)
        with self.channel(s) as ch:
            (s1, _), (s2, _), _ = ch.call([p.create(s, p.DELETE | p.FILE_READ_ATTRIBUTES | p.SYNCHRONIZE,
                                                    p.FILE_OPEN, p.FILE_NON_DIRECTORY_FILE),
                                           p.set_info(p.RELATED_FID, 10, p.rename_info(d)), p.close()],
                                          related=True)
            self._check(s1, s, "cannot rename: ")
            self._check(s2, d, "cannot rename to this name: ")

    def remove(self, relpath: str) -> None:
        rel = self.rel(relpath)
        with self.channel(rel) as ch:
            (status, _), _ = ch.call([p.create(rel, p.DELETE | p.FILE_READ_ATTRIBUTES, p.FILE_OPEN,
                                               p.FILE_NON_DIRECTORY_FILE | p.FILE_DELETE_ON_CLOSE),
                                      p.close()], related=True)
            if status not in _NOT_FOUND and status != p.STATUS_DELETE_PENDING:
                self._check(status, rel, "cannot delete: ")

    # --- batch delete ------------------------------------------------------------------------------
    def delete_files(self, relpaths: Iterable[str], *, prune_dirs: bool = True) -> DeleteResult:
        rels = check_deletable(self, relpaths)
        result = DeleteResult()
        gone: list[str] = []
        with self.channel() as ch:
            def on_reply(rel: str, status: int) -> None:
                if status == p.STATUS_SUCCESS:
                    result.deleted += 1
                    gone.append(rel)
                elif status in _NOT_FOUND or status == p.STATUS_DELETE_PENDING:
                    result.missing += 1
                    gone.append(rel)
                else:
                    result.failed[rel] = str(self.status_error(status, rel, "cannot delete: "))

            self._pipeline(ch, rels, p.FILE_NON_DIRECTORY_FILE, on_reply)
            if prune_dirs and gone:
                self._dirs.clear()
                for level in prune_candidates(gone):
                    def on_dir(rel: str, status: int) -> None:
                        if status == p.STATUS_SUCCESS:
                            result.pruned_dirs += 1

                    self._pipeline(ch, level, p.FILE_DIRECTORY_FILE, on_dir, close_matters=True)
        return result

    def _pipeline(self, ch: p.Channel, rels: list[str], kind: int, on_reply: Any,
                  close_matters: bool = False, depth: int = 256) -> None:
        """CREATE(delete on close)+CLOSE for each path, ``depth`` compounds in flight."""
        q: queue.SimpleQueue[p.Reply] = queue.SimpleQueue()
        access = p.DELETE | p.FILE_READ_ATTRIBUTES
        options = kind | p.FILE_DELETE_ON_CLOSE
        pending: dict[int, list[int]] = {}
        i = 0
        n = len(rels)
        while i < n or pending:
            while i < n and len(pending) < depth:
                ch.submit([p.create(rels[i], access, p.FILE_OPEN, options), p.close()], q, related=True,
                          tags=[(i, 0), (i, 1)])
                pending[i] = [-2, -2]
                i += 1
            (k, j), status, _mv = ch.get(q)
            st = pending[k]
            st[j] = status
            if st[0] == -2 or st[1] == -2:
                continue
            del pending[k]
            if close_matters and st[0] == p.STATUS_SUCCESS:
                on_reply(rels[k], st[1])
            else:
                on_reply(rels[k], st[0])

    # --- streaming files ---------------------------------------------------------------------------
    def open_reader(self, relpath: str) -> FileReader:
        rel = self.rel(relpath)
        ch = self._acquire()
        head = min(_READ_AHEAD, ch.max_read)
        try:
            (status, mv), (r_status, r_mv) = ch.call(
                [p.create(rel, p.FILE_READ_DATA | p.FILE_READ_ATTRIBUTES | p.SYNCHRONIZE, p.FILE_OPEN,
                          p.FILE_NON_DIRECTORY_FILE), p.read(p.RELATED_FID, 0, head)], related=True)
            self._check(status, rel, "cannot open for reading: ")
        except p.ConnectionLost as exc:
            self._discard(ch)
            raise StorageUnavailable(f"connection lost: {exc}", server=self.server, share=self.share,
                                     path=rel) from None
        except BaseException:
            self._release(ch)
            raise
        size, mtime, _ = p.create_stat(mv)
        first: bytes | None = None   # the file's first bytes, read with the open (small files: one round trip)
        if r_status == p.STATUS_SUCCESS:
            first = bytes(p.read_data(r_mv))
        elif r_status == p.STATUS_END_OF_FILE:
            first = b""
        if first is not None and len(first) != min(head, size):
            first = None  # changed between the open and the read: read it again the normal way
        return _Reader(self, ch, rel, p.create_fid(mv), size, mtime, first)

    def open_writer(self, relpath: str, *, truncate_to: int | None = None) -> FileWriter:
        rel = self.rel(relpath)
        ch = self._acquire()
        access = p.FILE_READ_DATA | p.FILE_WRITE_DATA | p.FILE_READ_ATTRIBUTES | p.FILE_WRITE_ATTRIBUTES | \
            p.SYNCHRONIZE | p.DELETE
        disposition = p.FILE_OVERWRITE_IF if truncate_to == 0 else p.FILE_OPEN_IF
        try:
            msg = p.create(rel, access, disposition, p.FILE_NON_DIRECTORY_FILE)
            (status, mv), = ch.call([msg])
            if status == p.STATUS_OBJECT_PATH_NOT_FOUND and "/" in rel:
                self._dirs.discard(rel.rsplit("/", 1)[0])
                self._makedirs(ch, rel.rsplit("/", 1)[0])
                (status, mv), = ch.call([msg])
            self._check(status, rel, "cannot open for writing: ")
            fid = p.create_fid(mv)
            size = p.create_stat(mv)[0]
            if truncate_to is not None and size > truncate_to:
                (status, _), = ch.call([p.set_info(fid, 20, truncate_to.to_bytes(8, "little"))])
                self._check(status, rel, "cannot truncate: ")
        except p.ConnectionLost as exc:
            self._discard(ch)
            raise StorageUnavailable(f"connection lost: {exc}", server=self.server, share=self.share,
                                     path=rel) from None
        except BaseException:
            self._release(ch)
            raise
        return _Writer(self, ch, rel, fid, self._io_depth)


class _Reader(FileReader):
    def __init__(self, vol: SMBVolume, ch: p.Channel, rel: str, fid: bytes, size: int, mtime: float,
                 first: bytes | None = None) -> None:
        self.vol, self.ch, self.rel, self.fid, self.size, self.mtime = vol, ch, rel, fid, size, mtime
        self._first = first
        self._open = True

    def chunks(self, start: int, end: int, chunk_size: int) -> Iterator[bytes]:
        first, self._first = self._first, None
        if first and start == 0 and end > 0:
            piece = first[:end]
            start = len(piece)
            yield piece
        yield from self._read(start, end, chunk_size)

    def _read(self, start: int, end: int, chunk_size: int) -> Iterator[bytes]:
        chunk = max(4096, min(chunk_size, self.ch.max_read))
        q: queue.SimpleQueue[p.Reply] = queue.SimpleQueue()
        offsets = iter(range(start, end, chunk))
        inflight: dict[int, tuple[int, int]] = {}
        order: list[int] = []
        done: dict[int, tuple[int, Any]] = {}
        try:
            while True:
                while len(inflight) < self.vol._io_depth:
                    off = next(offsets, None)
                    if off is None:
                        break
                    length = min(chunk, end - off)
                    mid = self.ch.submit([p.read(self.fid, off, length)], q)[0]
                    inflight[mid] = (off, length)
                    order.append(mid)
                if not order:
                    return
                head = order[0]
                while head not in done:
                    mid, status, mv = self.ch.get(q)
                    done[mid] = (status, mv)
                status, mv = done.pop(head)
                order.pop(0)
                off, length = inflight.pop(head)
                if status == p.STATUS_END_OF_FILE:
                    raise self.vol.error(StorageError, errno.EIO, f"file shrank while reading (at {off})", self.rel)
                self.vol._check(status, self.rel, "read failed: ")
                data = p.read_data(mv)
                if len(data) != length:
                    raise self.vol.error(StorageError, errno.EIO, f"short read at {off}", self.rel)
                yield cast(bytes, data)  # a view of its own reply frame: bytes-like, no copy
        except p.ConnectionLost as exc:
            self._open = False
            self.vol._discard(self.ch)
            raise StorageUnavailable(f"connection lost while reading: {exc}", server=self.vol.server,
                                     share=self.vol.share, path=self.rel) from None

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            self.ch.submit([p.close(self.fid)], None)  # nothing to learn from a reader's close: do not wait
        except p.ConnectionLost:
            self.vol._discard(self.ch)
            return
        self.vol._release(self.ch)


class _Writer(FileWriter):
    def __init__(self, vol: SMBVolume, ch: p.Channel, rel: str, fid: bytes, depth: int) -> None:
        self.vol, self.ch, self.rel, self.fid, self.depth = vol, ch, rel, fid, depth
        self.q: queue.SimpleQueue[p.Reply] = queue.SimpleQueue()
        self.inflight: dict[int, int] = {}
        self.held: tuple[int, bytes] | None = None   # a first small write, sent in one compound with finish()
        self.sent = False
        self._open = True

    def _collect(self, keep: int) -> None:
        while len(self.inflight) > keep:
            mid, status, mv = self.ch.get(self.q)
            expected = self.inflight.pop(mid)
            self.vol._check(status, self.rel, "write failed: ")
            if p._U32.unpack_from(mv, 64 + 4)[0] != expected:
                raise self.vol.error(StorageFull, errno.ENOSPC, "short write (volume full?)", self.rel)

    def _guard(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except p.ConnectionLost as exc:
            self._open = False
            self.vol._discard(self.ch)
            raise StorageUnavailable(f"connection lost while writing: {exc}", server=self.vol.server,
                                     share=self.vol.share, path=self.rel) from None

    def write(self, offset: int, data: bytes) -> None:
        if not self.sent and self.held is None and len(data) <= min(self.ch.max_write, _READ_AHEAD):
            self.held = (offset, data)
            return
        self.sent = True
        if self.held is not None:
            held, self.held = self.held, None
            self._send(*held)
        self._send(offset, data)

    def _send(self, offset: int, data: bytes) -> None:
        def go() -> None:
            step = self.ch.max_write
            for pos in range(0, len(data), step):
                self._collect(self.depth - 1)
                piece = data[pos:pos + step] if len(data) > step else data
                mid = self.ch.submit([p.write(self.fid, offset + pos, piece)], self.q)[0]
                self.inflight[mid] = len(piece)
        self._guard(go)

    def finish(self, mtime: float | None) -> Entry:
        def go() -> Entry:
            self._collect(0)
            msgs = [p.set_info(self.fid, 4, p.basic_info(mtime))] if mtime is not None else []
            held, self.held = self.held, None
            if held is not None:   # WRITE + SET_INFO + CLOSE in one compound, processed in order
                msgs.insert(0, p.write(self.fid, held[0], held[1]))
            replies = self.ch.call([*msgs, p.close(self.fid, postquery=True)])
            self._open = False
            if held is not None:
                status, mv = replies[0]
                self.vol._check(status, self.rel, "write failed: ")
                if p._U32.unpack_from(mv, 64 + 4)[0] != len(held[1]):
                    raise self.vol.error(StorageFull, errno.ENOSPC, "short write (volume full?)", self.rel)
            for status, _ in replies:
                self.vol._check(status, self.rel, "cannot finish writing: ")
            size, last_write = p.close_stat(replies[-1][1])
            return Entry(self.rel, size, last_write)
        try:
            entry: Entry = self._guard(go)
        except BaseException:
            self.abort()
            raise
        self.vol._release(self.ch)
        return entry

    def abort(self) -> None:
        if not self._open:
            return
        self._open = False
        self.held = None
        try:
            self.inflight.clear()
            self.ch.call([p.close(self.fid)])
            self.vol._release(self.ch)
        except Exception:
            self.vol._discard(self.ch)

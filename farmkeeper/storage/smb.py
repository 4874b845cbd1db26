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
import struct
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
    location,
)
from farmkeeper.storage import _smb2 as smb2
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

_NOT_FOUND = (smb2.STATUS_OBJECT_NAME_NOT_FOUND, smb2.STATUS_OBJECT_PATH_NOT_FOUND)
_DIR_LIST = smb2.FILE_LIST_DIRECTORY | smb2.FILE_READ_ATTRIBUTES | smb2.SYNCHRONIZE
_QD_BUFFER = 1 << 20
_FS_FULL_SIZE = struct.Struct("<QQQII")  # FileFsFullSizeInformation: total, caller free, actual free units; sizes
_READ_AHEAD = 1 << 20   # read with the open / written with the close: small files take one round trip each
_ERRORS: dict[int, tuple[type[StorageError], int, str]] = {
    smb2.STATUS_OBJECT_NAME_NOT_FOUND: (StorageNotFound, errno.ENOENT, "no such file"),
    smb2.STATUS_OBJECT_PATH_NOT_FOUND: (StorageNotFound, errno.ENOENT, "no such folder"),
    smb2.STATUS_OBJECT_NAME_COLLISION: (StorageExists, errno.EEXIST, "already exists"),
    smb2.STATUS_ACCESS_DENIED: (StoragePermission, errno.EACCES, "access denied"),
    smb2.STATUS_SHARING_VIOLATION: (StoragePermission, errno.EBUSY, "in use by another client"),
    smb2.STATUS_DISK_FULL: (StorageFull, errno.ENOSPC, "no space left on the volume"),
    smb2.STATUS_QUOTA_EXCEEDED: (StorageFull, errno.EDQUOT, "quota exceeded"),
    smb2.STATUS_LOGON_FAILURE: (StorageAuthError, errno.EACCES, "logon failed (wrong user name or password)"),
    smb2.STATUS_FILE_IS_A_DIRECTORY: (StorageError, errno.EISDIR, "is a folder"),
    smb2.STATUS_NOT_A_DIRECTORY: (StorageError, errno.ENOTDIR, "not a folder"),
    smb2.STATUS_DIRECTORY_NOT_EMPTY: (StorageError, errno.ENOTEMPTY, "folder not empty"),
    smb2.STATUS_DELETE_PENDING: (StorageNotFound, errno.ENOENT, "being deleted"),
    smb2.STATUS_OBJECT_NAME_INVALID: (StorageError, errno.EINVAL, "invalid name"),
    smb2.STATUS_ILLEGAL_CHARACTER: (StorageError, errno.EILSEQ, "the server cannot open this name (not valid UTF-16)"),
}
_UNOPENABLE = (smb2.STATUS_ILLEGAL_CHARACTER, smb2.STATUS_OBJECT_NAME_INVALID)  # listed, yet not openable by name
_ALIASED = -1   # _ancestry: the walk's root is reached through an alias
_TRANSIENT = {smb2.STATUS_NETWORK_NAME_DELETED, smb2.STATUS_USER_SESSION_DELETED, smb2.STATUS_NETWORK_SESSION_EXPIRED,
              smb2.STATUS_FILE_CLOSED}


class SMBVolume(Volume):
    """A share over SMB; opening it connects once so wrong credentials or a missing share fail early.

    ``timeout`` bounds every wait (default: ``FARMKEEPER_STORAGE__TIMEOUT``); ``max_dir_entries`` and
    ``max_dir_requests`` cap one folder's listing (``FARMKEEPER_STORAGE__MAX_DIR_ENTRIES`` / ``..._REQUESTS``).
    """

    def __init__(self, access: VolumeAccess, *, timeout: float | None = None, list_depth: int = 24,
                 io_depth: int = 4, max_dir_entries: int | None = None, max_dir_requests: int | None = None) -> None:
        self.server = access.server
        self.share = access.share
        self._access = access
        if timeout is None or max_dir_entries is None or max_dir_requests is None:
            from farmkeeper.settings import load_settings

            limits = load_settings().storage
            timeout = limits.timeout if timeout is None else timeout
            max_dir_entries = limits.max_dir_entries if max_dir_entries is None else max_dir_entries
            max_dir_requests = limits.max_dir_requests if max_dir_requests is None else max_dir_requests
        self._timeout = timeout
        self._max_entries = max_dir_entries
        self._max_requests = max_dir_requests
        self._list_depth = list_depth
        self._io_depth = io_depth
        self._pool: list[smb2.Channel] = []
        self._all: set[smb2.Channel] = set()
        self._lock = threading.Lock()
        self._dirs: set[str] = set()
        self._closed = False
        self._release(self._connect())

    # --- connections -------------------------------------------------------------------------------
    def _connect(self) -> smb2.Channel:
        a = self._access
        host = a.host or a.server
        try:
            ch = smb2.Channel(host, a.port, self.share, a.username, a.password, require_signing=a.require_signing,
                           encrypt=a.encrypt, timeout=self._timeout)
        except SMBResponseException as exc:
            status = int(exc.status)
            if status == smb2.STATUS_BAD_NETWORK_NAME:
                raise self.error(StorageNotFound, errno.ENOENT,
                                 f"share {self.share} does not exist on {host} (check the drive letter and "
                                 "that the volume is shared)") from None
            raise self.status_error(status, "") from None
        except SMBAuthenticationError:
            raise self.error(StorageAuthError, errno.EACCES,
                             f"logon to {host} as {a.username!r} failed (wrong user name or password)") from None
        except smb2.Refused as exc:
            raise self.error(StoragePermission, errno.ECONNREFUSED, str(exc)) from None
        except (ValueError, OSError, SMBException, smb2.ConnectionLost) as exc:
            if "STATUS_LOGON_FAILURE" in str(exc) or "LOGON_FAILURE" in str(exc):
                raise self.error(StorageAuthError, errno.EACCES, f"logon to {host} as {a.username!r} failed "
                                 "(wrong user name or password)") from None
            raise StorageUnavailable(f"cannot connect to {host}:{a.port}: {self._scrub(exc)}",
                                     server=self.server, share=self.share) from None
        except Exception as exc:  # nothing else may leave the storage layer
            raise StorageUnavailable(f"cannot connect to {host}:{a.port}: {type(exc).__name__}: {self._scrub(exc)}",
                                     server=self.server, share=self.share) from None
        with self._lock:
            self._all.add(ch)
        return ch

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc)
        return text.replace(self._access.password, "***") if self._access.password else text

    def _lost(self, exc: BaseException, path: str, what: str = "") -> StorageUnavailable:
        """The error for a connection that dropped, stalled or broke the protocol (the caller discards it)."""
        text = self._scrub(exc) if isinstance(exc, smb2.ConnectionLost) else f"connection lost: {self._scrub(exc)}"
        return StorageUnavailable(what + text, server=self.server, share=self.share, path=path)

    def _acquire(self) -> smb2.Channel:
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

    def _release(self, ch: smb2.Channel) -> None:
        if ch.alive and not self._closed:
            with self._lock:
                self._pool.append(ch)
        else:
            self._discard(ch)

    def _discard(self, ch: smb2.Channel) -> None:
        with self._lock:
            self._all.discard(ch)
        ch.close()

    @contextlib.contextmanager
    def channel(self, path: str = "") -> Iterator[smb2.Channel]:
        """A connection for this thread's exclusive use; connection failures become StorageUnavailable."""
        ch = self._acquire()
        try:
            yield ch
        except (smb2.ConnectionLost, OSError) as exc:
            if isinstance(exc, StorageError):
                raise
            self._discard(ch)
            raise self._lost(exc, path) from None
        finally:
            self._release(ch)

    def status_error(self, status: int, path: str, what: str = "") -> StorageError:
        if status in _TRANSIENT:
            return StorageUnavailable(f"{what}server dropped the session (status 0x{status:08x})",
                                      server=self.server, share=self.share, path=path)
        cls, err, text = _ERRORS.get(status, (StorageError, errno.EIO, f"SMB error status 0x{status:08x}"))
        return self.error(cls, err, what + text, path)

    def _check(self, status: int, path: str, what: str = "") -> None:
        if status != smb2.STATUS_SUCCESS:
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
    def _scan(self, prefix: str, max_depth: int | None = None,
              aliases: list[str] | None = None) -> Iterator[tuple[str, list[tuple[str, int, float]]]]:
        """Yield (folder, [(name, size, mtime)]) for every folder under ``prefix``, pipelined, depth first.

        Never through an alias: a folder that is a reparse point is not entered; a folder met under two names
        in one listing (same file id) is entered under neither; a folder whose ``..`` is not the folder it was
        listed in (a followed link: Samba reports the target's ids) or whose id was already walked is skipped.
        Each is logged as a warning naming both paths (and added to ``aliases``).
        """
        root = self.rel(prefix)
        found: list[tuple[str, int, str]] = []   # (path, id of the folder it is another name of, why)
        seen: dict[int, list[str]] = {}          # folder id -> the paths it was met under
        with self.channel(root) as ch:
            out_len = min(_QD_BUFFER, ch.max_transact)
            parent = self._ancestry(ch, root, out_len, seen, found) if root else None
            q: queue.SimpleQueue[smb2.Reply] = queue.SimpleQueue()
            stack: list[tuple[str, int | None, int]] = [] if parent == _ALIASED else [(root, parent, 0)]
            inflight: dict[int, tuple[str, int | None, int, list[Any]]] = {}
            walked: set[int] = set()
            seq = 0
            try:
                while stack or inflight:
                    while stack and len(inflight) < self._list_depth:
                        d, pid, depth = stack.pop()
                        seq += 1
                        ch.submit([smb2.create(d, _DIR_LIST, smb2.FILE_OPEN, smb2.FILE_DIRECTORY_FILE),
                                   smb2.query_directory(smb2.RELATED_FID, out_len, True),
                                   smb2.query_directory(smb2.RELATED_FID, out_len, False),
                                   smb2.close()], q, related=True, tags=[(seq, i) for i in range(4)])
                        inflight[seq] = (d, pid, depth, [None] * 4)
                        if len(inflight) == 1 and d == root:
                            break  # learn whether the root exists before fanning out
                    (key, i), status, mv = ch.get(q)
                    d, pid, depth, got = inflight[key]
                    got[i] = (status, mv)
                    if any(g is None for g in got):
                        continue
                    del inflight[key]
                    listing = self._page(ch, d, got, out_len, d == root)
                    if listing is None:
                        continue
                    files, subdirs, dots = listing
                    me, up = dots.get("."), dots.get("..")
                    if pid and up is not None and up != pid:
                        found.append((d, me or 0, "a link to a folder elsewhere on the share"))
                        continue
                    if me:
                        if me in walked:
                            found.append((d, me, "the same folder, met twice"))
                            continue
                        walked.add(me)
                        if d not in seen.setdefault(me, []):
                            seen[me].append(d)
                    base = d + "/" if d else ""
                    enter = self._enterable(base, subdirs, seen, found)
                    if max_depth is None or depth < max_depth:
                        stack.extend((base + name, me, depth + 1) for name in enter)
                    yield d, files
            finally:
                self._report_aliases(found, seen, aliases)

    def _enterable(self, base: str, subdirs: list[smb2.Folder], seen: dict[int, list[str]],
                   found: list[tuple[str, int, str]]) -> list[str]:
        """The sub-folders of one listing that may be entered: no reparse points, no two names of one folder."""
        if not subdirs:
            return []
        ids: dict[int, int] = {}
        for name, fid, _attrs in subdirs:
            if fid:
                ids[fid] = ids.get(fid, 0) + 1
                seen.setdefault(fid, []).append(base + name)
        out = []
        for name, fid, attrs in subdirs:
            if attrs & smb2.FILE_ATTRIBUTE_REPARSE_POINT:
                found.append((base + name, 0, "a reparse point (link or junction)"))
            elif fid and ids[fid] > 1:
                found.append((base + name, fid, "one of two names of one folder (a link?)"))
            else:
                out.append(name)
        return out

    def _ancestry(self, ch: smb2.Channel, root: str, out_len: int, seen: dict[int, list[str]],
                  found: list[tuple[str, int, str]]) -> int | None:
        """The id of ``root``'s parent, from listing each folder above it; ``_ALIASED`` if ``root`` is reached
        through an alias (then nothing under it is walked); ``None`` if that cannot be told (missing folders)."""
        parts = root.split("/")
        parent: int | None = None
        for i, name in enumerate(parts):
            folder = "/".join(parts[:i])
            listing = self._list_folder(ch, folder, out_len)
            if listing is None:
                return None
            _files, subdirs, dots = listing
            if parent and dots.get("..") not in (None, parent):
                found.append((folder, dots.get(".") or 0, "a link to a folder elsewhere on the share"))
                return _ALIASED
            base = folder + "/" if folder else ""
            if not any(n == name for n, _f, _a in subdirs):
                return None   # not a folder (or not there): opening it says so
            if name not in self._enterable(base, subdirs, seen, found):
                return _ALIASED
            parent = dots.get(".")
        return parent

    def _report_aliases(self, found: list[tuple[str, int, str]], seen: dict[int, list[str]],
                        aliases: list[str] | None) -> None:
        links = {p for p, _f, _w in found}
        for path, fid, why in found:
            others = [p for p in seen.get(fid, []) if p != path] if fid else []
            other = next((p for p in others if p not in links), others[0] if others else None)
            text = (f"{location(self.server, self.share, path)} is {why}"
                    + (f": {location(self.server, self.share, other)}" if other else "")
                    + "; not walked (nothing under it is counted, copied or deleted)")
            log.warning("%s", text)
            if aliases is not None:
                aliases.append(text)

    def find_aliases(self, prefix: str = "", depth: int = 3) -> list[str]:
        out: list[str] = []
        for _ in self._scan(prefix, max_depth=depth, aliases=out):
            pass
        return out

    def _list_folder(self, ch: smb2.Channel, d: str, out_len: int) \
            -> tuple[list[tuple[str, int, float]], list[smb2.Folder], dict[str, int]] | None:
        replies = ch.call([smb2.create(d, _DIR_LIST, smb2.FILE_OPEN, smb2.FILE_DIRECTORY_FILE),
                           smb2.query_directory(smb2.RELATED_FID, out_len, True),
                           smb2.query_directory(smb2.RELATED_FID, out_len, False), smb2.close()], related=True)
        return self._page(ch, d, replies, out_len, True)

    def _page(self, ch: smb2.Channel, d: str, got: list[Any], out_len: int, is_root: bool) \
            -> tuple[list[tuple[str, int, float]], list[smb2.Folder], dict[str, int]] | None:
        """One folder's CREATE + 2 x QUERY_DIRECTORY + CLOSE replies as (files, sub-folders, ids of . and ..);
        ``None`` for a folder that is not there (or, below the root, one the server cannot open by its name)."""
        files: list[tuple[str, int, float]] = []
        subdirs: list[smb2.Folder] = []
        dots: dict[str, int] = {}
        c_status = got[0][0]
        if c_status != smb2.STATUS_SUCCESS:
            if c_status in _NOT_FOUND or c_status == smb2.STATUS_NOT_A_DIRECTORY:
                return None  # a missing prefix (or a folder removed meanwhile) holds nothing
            if c_status in _UNOPENABLE and not is_root:
                log.warning("%s: skipped: the server lists this folder but cannot open it by its name "
                            "(not valid UTF-16?)", location(self.server, self.share, d))
                return None
            raise self.status_error(c_status, d, "cannot list folder: ")
        s1, s2 = got[1][0], got[2][0]
        if s1 == smb2.STATUS_SUCCESS and s2 == smb2.STATUS_NO_MORE_FILES:
            smb2.parse_directory(smb2.out_buffer(got[1][1], out_len), files, subdirs, dots)
        elif s1 == smb2.STATUS_NO_MORE_FILES:
            pass
        elif s1 == smb2.STATUS_SUCCESS and s2 == smb2.STATUS_SUCCESS:
            return self._list_long(ch, d, out_len)  # more than two buffers of entries
        else:
            raise self.status_error(s1 if s1 not in (smb2.STATUS_SUCCESS, smb2.STATUS_NO_MORE_FILES) else s2,
                                    d, "cannot list folder: ")
        return files, subdirs, dots

    def _list_long(self, ch: smb2.Channel, d: str, out_len: int) \
            -> tuple[list[tuple[str, int, float]], list[smb2.Folder], dict[str, int]]:
        """A folder listed one buffer at a time, within the caps on entries and requests."""
        (status, mv), = ch.call([smb2.create(d, _DIR_LIST, smb2.FILE_OPEN, smb2.FILE_DIRECTORY_FILE)])
        self._check(status, d, "cannot list folder: ")
        fid = smb2.create_fid(mv)
        files: list[tuple[str, int, float]] = []
        subdirs: list[smb2.Folder] = []
        dots: dict[str, int] = {}
        entries = 0
        try:
            for request in range(self._max_requests + 1):
                if request == self._max_requests:
                    raise self.error(StorageError, errno.E2BIG, f"cannot list folder: still not complete after "
                                     f"{request} requests (FARMKEEPER_STORAGE__MAX_DIR_REQUESTS); listing stopped", d)
                (status, mv), = ch.call([smb2.query_directory(fid, out_len, request == 0)])
                if status == smb2.STATUS_NO_MORE_FILES:
                    break
                self._check(status, d, "cannot list folder: ")
                entries += smb2.parse_directory(smb2.out_buffer(mv, out_len), files, subdirs, dots)
                if entries > self._max_entries:
                    raise self.error(StorageError, errno.E2BIG, f"cannot list folder: more than {self._max_entries} "
                                     "entries (FARMKEEPER_STORAGE__MAX_DIR_ENTRIES); listing stopped", d)
        finally:
            if ch.alive:
                ch.call([smb2.close(fid)])
        return files, subdirs, dots

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
            (s1, _), (s2, mv), _ = ch.call([smb2.create("", smb2.FILE_READ_ATTRIBUTES | smb2.SYNCHRONIZE,
                                                        smb2.FILE_OPEN, smb2.FILE_DIRECTORY_FILE),
                                            smb2.query_info(smb2.RELATED_FID, smb2.SMB2_0_INFO_FILESYSTEM,
                                                            smb2.FILE_FS_FULL_SIZE_INFORMATION, _FS_FULL_SIZE.size),
                                            smb2.close()], related=True)
            self._check(s1, "", "cannot query free space: ")
            self._check(s2, "", "cannot query free space: ")
            buf = smb2.out_buffer(mv, _FS_FULL_SIZE.size)
            if len(buf) < _FS_FULL_SIZE.size:
                raise smb2.ProtocolError(f"malformed reply: free space of {len(buf)} bytes, not {_FS_FULL_SIZE.size}")
            total, caller_free, _actual, spu, bps = _FS_FULL_SIZE.unpack_from(buf, 0)
            unit = spu * bps
            return Space(total * unit, caller_free * unit)

    def _attributes(self, rel: str) -> tuple[int, float, int] | None:
        """(size, mtime, attributes) of ``rel`` in one create+close round trip; ``None`` if missing."""
        with self.channel(rel) as ch:
            (status, mv), _ = ch.call([smb2.create(rel, smb2.FILE_READ_ATTRIBUTES | smb2.SYNCHRONIZE,
                                                   smb2.FILE_OPEN, 0), smb2.close()], related=True)
            if status in _NOT_FOUND or status == smb2.STATUS_DELETE_PENDING:
                return None
            self._check(status, rel)
            size, mtime, attrs = smb2.create_stat(mv)
            return size, mtime, attrs

    def stat(self, relpath: str) -> Entry | None:
        rel = self.rel(relpath)
        found = self._attributes(rel)
        if found is None:
            return None
        size, mtime, attrs = found
        return Entry(rel, 0 if attrs & smb2.FILE_ATTRIBUTE_DIRECTORY else size, mtime)

    def has_file(self, relpath: str) -> bool:
        found = self._attributes(self.rel(relpath))
        return found is not None and not found[2] & (smb2.FILE_ATTRIBUTE_DIRECTORY |
                                                      smb2.FILE_ATTRIBUTE_REPARSE_POINT)

    def makedirs(self, relpath: str) -> None:
        rel = self.rel(relpath)
        if not rel or rel in self._dirs:
            return
        with self.channel(rel) as ch:
            self._makedirs(ch, rel)

    def _makedirs(self, ch: smb2.Channel, rel: str) -> None:
        if not rel or rel in self._dirs:
            return
        (status, mv), _ = ch.call([smb2.create(rel, smb2.FILE_READ_ATTRIBUTES | smb2.SYNCHRONIZE, smb2.FILE_OPEN_IF,
                                            smb2.FILE_DIRECTORY_FILE), smb2.close()], related=True)
        if status == smb2.STATUS_OBJECT_PATH_NOT_FOUND and "/" in rel:
            self._makedirs(ch, rel.rsplit("/", 1)[0])
            (status, mv), _ = ch.call([smb2.create(rel, smb2.FILE_READ_ATTRIBUTES | smb2.SYNCHRONIZE, smb2.FILE_OPEN_IF,
                                                smb2.FILE_DIRECTORY_FILE), smb2.close()], related=True)
        if status in (smb2.STATUS_NOT_A_DIRECTORY, smb2.STATUS_OBJECT_NAME_COLLISION):
            raise self.error(StorageExists, errno.EEXIST, "a file is in the way of this folder", rel)
        self._check(status, rel, "cannot create folder: ")
        self._dirs.add(rel)

    def read_bytes(self, relpath: str) -> bytes:
        reader = self.open_reader(relpath)
        try:
            return b"".join(reader.chunks(0, reader.size, 8 << 20))
        finally:
            reader.close()

    def write_bytes(self, relpath: str, data: bytes, mtime: float | None = None, *, durable: bool = True) -> None:
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
            access = smb2.DELETE | smb2.FILE_READ_ATTRIBUTES | smb2.SYNCHRONIZE
            (s1, _), (s2, _), _ = ch.call([smb2.create(s, access, smb2.FILE_OPEN, smb2.FILE_NON_DIRECTORY_FILE),
                                           smb2.set_info(smb2.RELATED_FID, smb2.FILE_RENAME_INFORMATION,
                                                         smb2.rename_info(d)),
                                           smb2.close()], related=True)
            self._check(s1, s, "cannot rename: ")
            self._check(s2, d, "cannot rename to this name: ")

    def remove(self, relpath: str) -> None:
        rel = self.rel(relpath)
        with self.channel(rel) as ch:
            (status, _), _ = ch.call([smb2.create(rel, smb2.DELETE | smb2.FILE_READ_ATTRIBUTES, smb2.FILE_OPEN,
                                               smb2.FILE_NON_DIRECTORY_FILE | smb2.FILE_DELETE_ON_CLOSE),
                                      smb2.close()], related=True)
            if status not in _NOT_FOUND and status != smb2.STATUS_DELETE_PENDING:
                self._check(status, rel, "cannot delete: ")

    # --- batch delete ------------------------------------------------------------------------------
    def delete_files(self, relpaths: Iterable[str], *, prune_dirs: bool = True) -> DeleteResult:
        rels = check_deletable(self, relpaths)
        result = DeleteResult()
        gone: list[str] = []
        with self.channel() as ch:
            def on_reply(rel: str, status: int) -> None:
                if status == smb2.STATUS_SUCCESS:
                    result.deleted += 1
                    gone.append(rel)
                elif status in _NOT_FOUND or status == smb2.STATUS_DELETE_PENDING:
                    result.missing += 1
                    result.missing_paths.append(rel)
                    gone.append(rel)
                else:
                    result.failed[rel] = str(self.status_error(status, rel, "cannot delete: "))

            self._pipeline(ch, rels, smb2.FILE_NON_DIRECTORY_FILE, on_reply)
            if prune_dirs and gone:
                self._dirs.clear()
                for level in prune_candidates(gone):
                    def on_dir(rel: str, status: int) -> None:
                        if status == smb2.STATUS_SUCCESS:
                            result.pruned_dirs += 1

                    self._pipeline(ch, level, smb2.FILE_DIRECTORY_FILE, on_dir, close_matters=True)
        return result

    def _pipeline(self, ch: smb2.Channel, rels: list[str], kind: int, on_reply: Any,
                  close_matters: bool = False, depth: int = 256) -> None:
        """CREATE(delete on close)+CLOSE for each path, ``depth`` compounds in flight."""
        q: queue.SimpleQueue[smb2.Reply] = queue.SimpleQueue()
        access = smb2.DELETE | smb2.FILE_READ_ATTRIBUTES
        options = kind | smb2.FILE_DELETE_ON_CLOSE
        pending: dict[int, list[int]] = {}
        i = 0
        n = len(rels)
        while i < n or pending:
            while i < n and len(pending) < depth:
                ch.submit([smb2.create(rels[i], access, smb2.FILE_OPEN, options), smb2.close()], q, related=True,
                          tags=[(i, 0), (i, 1)])
                pending[i] = [-2, -2]
                i += 1
            (k, j), status, _mv = ch.get(q)
            st = pending[k]
            st[j] = status
            if st[0] == -2 or st[1] == -2:
                continue
            del pending[k]
            if close_matters and st[0] == smb2.STATUS_SUCCESS:
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
                [smb2.create(rel, smb2.FILE_READ_DATA | smb2.FILE_READ_ATTRIBUTES | smb2.SYNCHRONIZE, smb2.FILE_OPEN,
                             smb2.FILE_NON_DIRECTORY_FILE), smb2.read(smb2.RELATED_FID, 0, head)], related=True)
            self._check(status, rel, "cannot open for reading: ")
            fid, size, mtime, _ = smb2.create_reply(mv)
            first: bytes | None = None   # the file's first bytes, read with the open (small files: one round trip)
            if r_status == smb2.STATUS_SUCCESS:
                first = bytes(smb2.read_data(r_mv, head))
            elif r_status == smb2.STATUS_END_OF_FILE:
                first = b""
        except smb2.ConnectionLost as exc:
            self._discard(ch)
            raise self._lost(exc, rel) from None
        except BaseException:
            self._release(ch)
            raise
        if first is not None and len(first) != min(head, size):
            first = None  # changed between the open and the read: read it again the normal way
        return _Reader(self, ch, rel, fid, size, mtime, first)

    def open_writer(self, relpath: str, *, truncate_to: int | None = None) -> FileWriter:
        rel = self.rel(relpath)
        ch = self._acquire()
        access = smb2.FILE_READ_DATA | smb2.FILE_WRITE_DATA | smb2.FILE_READ_ATTRIBUTES | smb2.FILE_WRITE_ATTRIBUTES | \
            smb2.SYNCHRONIZE | smb2.DELETE
        disposition = smb2.FILE_OVERWRITE_IF if truncate_to == 0 else smb2.FILE_OPEN_IF
        try:
            msg = smb2.create(rel, access, disposition, smb2.FILE_NON_DIRECTORY_FILE)
            (status, mv), = ch.call([msg])
            if status == smb2.STATUS_OBJECT_PATH_NOT_FOUND and "/" in rel:
                self._dirs.discard(rel.rsplit("/", 1)[0])
                self._makedirs(ch, rel.rsplit("/", 1)[0])
                (status, mv), = ch.call([msg])
            self._check(status, rel, "cannot open for writing: ")
            fid, size, _mtime, _attrs = smb2.create_reply(mv)
            if truncate_to is not None and size > truncate_to:
                (status, _), = ch.call([smb2.set_info(fid, smb2.FILE_END_OF_FILE_INFORMATION,
                                                      truncate_to.to_bytes(8, "little"))])
                self._check(status, rel, "cannot truncate: ")
        except smb2.ConnectionLost as exc:
            self._discard(ch)
            raise self._lost(exc, rel) from None
        except BaseException:
            self._release(ch)
            raise
        start = min(size, truncate_to) if truncate_to is not None else 0
        return _Writer(self, ch, rel, fid, self._io_depth, start)


class _Reader(FileReader):
    def __init__(self, vol: SMBVolume, ch: smb2.Channel, rel: str, fid: bytes, size: int, mtime: float,
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
        q: queue.SimpleQueue[smb2.Reply] = queue.SimpleQueue()
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
                    mid = self.ch.submit([smb2.read(self.fid, off, length)], q)[0]
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
                if status == smb2.STATUS_END_OF_FILE:
                    raise self.vol.error(StorageError, errno.EIO, f"file shrank while reading (at {off})", self.rel)
                self.vol._check(status, self.rel, "read failed: ")
                data = smb2.read_data(mv, length)
                if len(data) != length:
                    raise self.vol.error(StorageError, errno.EIO, f"short read at {off}", self.rel)
                yield cast(bytes, data)  # a view of its own reply frame: bytes-like, no copy
        except smb2.ConnectionLost as exc:
            self._open = False
            self.vol._discard(self.ch)
            raise self.vol._lost(exc, self.rel, "while reading: ") from None

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            self.ch.submit([smb2.close(self.fid)], None)  # nothing to learn from a reader's close: do not wait
        except smb2.ConnectionLost:
            self.vol._discard(self.ch)
            return
        self.vol._release(self.ch)


class _Writer(FileWriter):
    def __init__(self, vol: SMBVolume, ch: smb2.Channel, rel: str, fid: bytes, depth: int, start: int = 0) -> None:
        self.vol, self.ch, self.rel, self.fid, self.depth = vol, ch, rel, fid, depth
        self.q: queue.SimpleQueue[smb2.Reply] = queue.SimpleQueue()
        self.inflight: dict[int, int] = {}
        self.offsets: dict[int, int] = {}            # message id -> offset of a WRITE not yet acknowledged
        self.contiguous = start                      # every WRITE below this was acknowledged
        self.sent_end = start
        self.held: tuple[int, bytes] | None = None   # a first small write, sent in one compound with finish()
        self.sent = False
        self._open = True

    def _collect(self, keep: int) -> None:
        while len(self.inflight) > keep:
            mid, status, mv = self.ch.get(self.q)
            expected = self.inflight.pop(mid)
            self.vol._check(status, self.rel, "write failed: ")
            if smb2.write_count(mv, expected) != expected:
                raise self.vol.error(StorageFull, errno.ENOSPC, "short write (volume full?)", self.rel)
            self.offsets.pop(mid, None)
            self.contiguous = min(self.offsets.values(), default=self.sent_end)

    def _guard(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except smb2.ConnectionLost as exc:
            self._open = False
            self.vol._discard(self.ch)
            raise self.vol._lost(exc, self.rel, "while writing: ") from None

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
                mid = self.ch.submit([smb2.write(self.fid, offset + pos, piece)], self.q)[0]
                self.inflight[mid] = len(piece)
                self.offsets[mid] = offset + pos
                self.sent_end = max(self.sent_end, offset + pos + len(piece))
        self._guard(go)

    def acked(self) -> int | None:
        """The contiguous acknowledged prefix: below the lowest WRITE still in flight (a held first write
        is not sent yet); writes go out in offset order, so nothing below it is missing."""
        if self.held is not None:
            return min(self.contiguous, self.held[0])
        return self.contiguous

    def finish(self, mtime: float | None) -> Entry:
        def go() -> Entry:
            self._collect(0)
            msgs = [] if mtime is None else [smb2.set_info(self.fid, smb2.FILE_BASIC_INFORMATION,
                                                            smb2.basic_info(mtime))]
            held, self.held = self.held, None
            if held is not None:   # WRITE + SET_INFO + CLOSE in one compound, processed in order
                msgs.insert(0, smb2.write(self.fid, held[0], held[1]))
            replies = self.ch.call([*msgs, smb2.close(self.fid, postquery=True)])
            self._open = False
            if held is not None:
                status, mv = replies[0]
                self.vol._check(status, self.rel, "write failed: ")
                if smb2.write_count(mv, len(held[1])) != len(held[1]):
                    raise self.vol.error(StorageFull, errno.ENOSPC, "short write (volume full?)", self.rel)
            for status, _ in replies:
                self.vol._check(status, self.rel, "cannot finish writing: ")
            size, last_write = smb2.close_stat(replies[-1][1])
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
            self.ch.call([smb2.close(self.fid)])
            self.vol._release(self.ch)
        except Exception:
            self.vol._discard(self.ch)

"""The local backend: a volume whose share root is mounted (or lives) on this machine."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import stat as stat_mod
import sys
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

from farmkeeper.errors import (
    PathEscapeError,
    StorageError,
    StorageExists,
    StorageFull,
    StorageNotFound,
    StoragePermission,
    StorageUnavailable,
)
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

_ERRNO_CLASS: dict[int, type[StorageError]] = {
    errno.ENOENT: StorageNotFound, errno.EEXIST: StorageExists, errno.EACCES: StoragePermission,
    errno.EPERM: StoragePermission, errno.ENOSPC: StorageFull, errno.EDQUOT: StorageFull,
    errno.EROFS: StoragePermission,
}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW_DIR = _DIR_FLAGS | os.O_NOFOLLOW
log = logging.getLogger(__name__)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _Openat2:
    """Linux ``openat2(dir_fd, path, RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH)``: a folder below ``dir_fd`` opened
    in one system call, failing (``ELOOP``) if any component is a symbolic link and (``EXDEV``) if the path
    would leave ``dir_fd``: the component-by-component ``O_NOFOLLOW`` walk, 3x cheaper. ``None`` where the
    kernel (before 5.6) or a seccomp filter (``ENOSYS``, ``EPERM``) refuses it: the walk is used then."""

    SYSCALL = 437                                   # the same number on every Linux architecture
    RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH = 0x04, 0x08

    def __init__(self) -> None:
        self.usable = sys.platform == "linux"
        self._how = _OpenHow(_DIR_FLAGS, 0, self.RESOLVE_NO_SYMLINKS | self.RESOLVE_BENEATH)
        self._size = ctypes.sizeof(self._how)
        self._syscall: Any = None
        if self.usable:
            try:
                self._syscall = ctypes.CDLL(None, use_errno=True).syscall
                self._syscall.restype = ctypes.c_long
            except (OSError, AttributeError):
                self.usable = False

    def open_dir(self, dir_fd: int, rel: str) -> int | None:
        """An fd of folder ``rel`` below ``dir_fd``; ``None``: openat2 is not available (use the walk)."""
        if not self.usable:
            return None
        fd = self._syscall(self.SYSCALL, dir_fd, rel.encode(), ctypes.byref(self._how), self._size)
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EPERM, errno.E2BIG):
            self.usable = False
            return None
        if err in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
            return None             # a link or a file on the way: the walk refuses it too, naming the part
        raise OSError(err, os.strerror(err), rel)


_OPENAT2 = _Openat2()


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat_mod.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


class LocalVolume(Volume):
    """A share root on a local path; every path is checked to stay under the root (symlinks included)."""

    def __init__(self, access: VolumeAccess) -> None:
        self.server = access.server
        self.share = access.share
        if not access.local_path:
            raise self.error(StorageNotFound, errno.ENOENT, "no local path configured for this volume")
        self.root = os.path.realpath(access.local_path)
        if not os.path.isdir(self.root):
            raise self.error(StorageNotFound, errno.ENOENT, f"local path {access.local_path} is not a folder")
        self._checked: set[str] = set()
        self._prefix = self.root.rstrip("/") + "/"

    def close(self) -> None:
        pass

    def wrap(self, exc: OSError, rel: str, what: str = "") -> StorageError:
        if isinstance(exc, StorageError):
            return exc
        err = exc.errno or errno.EIO
        cls = _ERRNO_CLASS.get(err, StorageError)
        text = what + (exc.strerror or str(exc))
        if err in (errno.EIO, errno.ENOTCONN, errno.ESTALE, errno.EHOSTDOWN):
            return StorageUnavailable(text, server=self.server, share=self.share, path=rel)
        return self.error(cls, err, text, rel)

    def _abs(self, rel: str) -> str:
        """Absolute path of ``rel`` after checking its folder resolves inside the root."""
        if not rel:
            path = parent = self.root
        else:                         # ``rel`` is normal (``rel()``): joined as text, a few µs a call less
            path = self._prefix + rel
            parent = path[:path.rindex("/")] or "/"
        if parent not in self._checked:
            real = os.path.realpath(parent)
            if real != self.root and not real.startswith(self.root + os.sep):
                raise PathEscapeError(rel, server=self.server, share=self.share)
            if len(self._checked) > 100_000:
                self._checked.clear()
            self._checked.add(parent)
        return path

    def _abs_follow(self, rel: str) -> str:
        """Like ``_abs`` but the final component must not be a symlink leading outside the root."""
        path = self._abs(rel)
        if os.path.islink(path):
            real = os.path.realpath(path)
            if not real.startswith(self.root + os.sep):
                raise PathEscapeError(rel, server=self.server, share=self.share)
        return path

    # --- folders by fd: no symlink is ever followed below the root -------------------------------
    def _open_dir(self, rel: str) -> int:
        """An fd of folder ``rel``, opened component by component from the root with ``O_NOFOLLOW |
        O_DIRECTORY`` (relative to the parent's fd), so a symlink anywhere on the way fails (``ELOOP`` or
        ``ENOTDIR``) instead of being followed, and nothing swapped in after a check can redirect it."""
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            if rel:
                child = _OPENAT2.open_dir(fd, rel)
                if child is not None:
                    os.close(fd)
                    return child
            for part in rel.split("/") if rel else ():
                try:
                    child = os.open(part, _NOFOLLOW_DIR, dir_fd=fd)
                except (NotADirectoryError, OSError) as exc:
                    if exc.errno in (errno.ENOTDIR, errno.ELOOP) and _is_link(part, fd):
                        raise OSError(errno.ELOOP, f"{part} is a symbolic link") from None
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _list_fd(self, fd: int, rel: str) -> tuple[list[str], list[str]]:
        """(file names, sub-folder names) of an open folder; symlinks are neither (never followed)."""
        names: list[str] = []
        subdirs: list[str] = []
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    if entry.is_file(follow_symlinks=False):
                        names.append(entry.name)
                    elif entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.name)
        except OSError as exc:
            raise self.wrap(exc, rel, "cannot list folder: ") from None
        return names, subdirs

    def _tree(self, prefix: str) -> Iterator[tuple[str, int, list[str]]]:
        """``(folder relpath, its fd, file names)`` for every folder under ``prefix``, parents first.

        Each folder is opened relative to its parent's fd with ``O_NOFOLLOW``: a symlinked folder (or one
        replaced by a symlink while walking) is never entered. The fd is valid until the next item.
        A missing prefix, or one that is (or passes through) a symlink, holds nothing.
        """
        root = self.rel(prefix)
        try:
            fd = self._open_dir(root)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                log.warning("%r: %s is a symbolic link: not walked", self, root)
                return
            raise self.wrap(exc, root, "cannot list folder: ") from None
        stack: list[tuple[str, int, list[str]]] = []
        try:
            names, subdirs = self._list_fd(fd, root)
            stack.append((root, fd, subdirs[::-1]))
            yield root, fd, names
            while stack:
                rel, dfd, todo = stack[-1]
                if not todo:
                    stack.pop()
                    os.close(dfd)
                    continue
                name = todo.pop()
                try:
                    child = os.open(name, _NOFOLLOW_DIR, dir_fd=dfd)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                except OSError as exc:
                    if exc.errno == errno.ELOOP:   # a folder replaced by a symlink meanwhile: not ours to follow
                        continue
                    raise self.wrap(exc, f"{rel}/{name}" if rel else name, "cannot list folder: ") from None
                crel = f"{rel}/{name}" if rel else name
                try:
                    names, subdirs = self._list_fd(child, crel)
                except BaseException:
                    os.close(child)
                    raise
                stack.append((crel, child, subdirs[::-1]))
                yield crel, child, names
        finally:
            for _rel, dfd, _todo in stack:
                os.close(dfd)

    # --- listing -----------------------------------------------------------------------------------
    def walk(self, prefix: str = "") -> Iterator[Entry]:
        """Every file with size and mtime, one folder at a time (constant memory): each folder is listed and
        its files ``lstat``-ed relative to its fd (no path lookups); symlinked folders are never entered."""
        for rel, fd, names in self._tree(prefix):
            if names:
                yield from self._stat_names(rel, fd, names)

    def _stat_names(self, rel: str, fd: int, names: list[str]) -> list[Entry]:
        base = rel + "/" if rel else ""
        try:
            try:
                stats = list(map(partial(os.lstat, dir_fd=fd), names))
            except FileNotFoundError:  # a file deleted while listing: stat one by one
                kept, stats = [], []
                for name in names:
                    try:
                        stats.append(os.lstat(name, dir_fd=fd))
                        kept.append(name)
                    except FileNotFoundError:
                        pass
                names = kept
        except OSError as exc:
            raise self.wrap(exc, rel, "cannot list folder: ") from None
        return [Entry(base + n, st.st_size, st.st_mtime) for n, st in zip(names, stats, strict=True)]

    def list_files_by_dir(self, prefix: str = "") -> Iterator[tuple[str, list[str]]]:
        for rel, _fd, names in self._tree(prefix):
            yield rel, names

    def probe(self, relpath: str, data: bytes) -> Space:
        """Overwritten in place, never truncated to 0 first: ext4 flushes a file truncated to 0 and rewritten
        when it is closed (``auto_da_alloc``), which made each probe cost 10x its write. ``O_NOFOLLOW``."""
        rel = self.rel(relpath)
        head, _, name = rel.rpartition("/")
        try:
            dfd = self._open_dir(head)
            try:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
                try:
                    done = 0
                    while done < len(data):
                        done += os.pwrite(fd, data[done:], done)
                    os.ftruncate(fd, len(data))
                finally:
                    os.close(fd)
                st = os.fstatvfs(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise self.wrap(exc, rel, "cannot write: ") from None
        return Space(st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)

    # --- single operations -------------------------------------------------------------------------
    def space(self) -> Space:
        try:
            st = os.statvfs(self.root)
        except OSError as exc:
            raise self.wrap(exc, "") from None
        return Space(st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)

    def stat(self, relpath: str) -> Entry | None:
        rel = self.rel(relpath)
        try:
            st = os.stat(self._abs_follow(rel))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self.wrap(exc, rel) from None
        return Entry(rel, 0 if stat_mod.S_ISDIR(st.st_mode) else st.st_size, st.st_mtime)

    def has_file(self, relpath: str) -> bool:
        rel = self.rel(relpath)
        try:
            st = os.lstat(self._abs(rel))          # a link is not footage, as no listing counts one
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise self.wrap(exc, rel) from None
        return stat_mod.S_ISREG(st.st_mode)

    def makedirs(self, relpath: str) -> None:
        rel = self.rel(relpath)
        path = self._abs(rel)
        try:
            os.makedirs(path, exist_ok=True)
        except FileExistsError:
            raise self.error(StorageExists, errno.EEXIST, "a file is in the way of this folder", rel) from None
        except OSError as exc:
            raise self.wrap(exc, rel, "cannot create folder: ") from None

    def read_bytes(self, relpath: str) -> bytes:
        rel = self.rel(relpath)
        try:
            with open(self._abs_follow(rel), "rb") as f:
                return f.read()
        except OSError as exc:
            raise self.wrap(exc, rel, "cannot read: ") from None

    def write_bytes(self, relpath: str, data: bytes, mtime: float | None = None, *, durable: bool = True) -> None:
        writer = self.open_writer(relpath, truncate_to=0)
        assert isinstance(writer, _Writer)
        try:
            writer.write(0, data)
        except BaseException:
            writer.abort()
            raise
        writer.durable = durable
        writer.finish(mtime)

    def rename(self, src: str, dst: str) -> None:
        s, d = self.rel(src), self.rel(dst)
        try:
            os.link(self._abs_follow(s), self._abs(d))  # fails if dst exists: no silent replace
            os.unlink(self._abs(s))
        except FileExistsError:
            raise self.error(StorageExists, errno.EEXIST, "cannot rename: destination exists", d) from None
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
                self._rename_noreplace(s, d)
                return
            raise self.wrap(exc, s, "cannot rename: ") from None

    def _rename_noreplace(self, s: str, d: str) -> None:
        dst = self._abs(d)
        if os.path.lexists(dst):
            raise self.error(StorageExists, errno.EEXIST, "cannot rename: destination exists", d)
        try:
            os.rename(self._abs_follow(s), dst)
        except OSError as exc:
            raise self.wrap(exc, s, "cannot rename: ") from None

    def remove(self, relpath: str) -> None:
        rel = self.rel(relpath)
        head, _, name = rel.rpartition("/")
        try:
            dfd = self._open_dir(head)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise self.wrap(exc, rel, "cannot delete: ") from None
        try:
            os.unlink(name, dir_fd=dfd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self.wrap(exc, rel, "cannot delete: ") from None
        finally:
            os.close(dfd)

    def delete_files(self, relpaths: Iterable[str], *, prune_dirs: bool = True) -> DeleteResult:
        """Unlink each file relative to its folder's fd, the folder opened component by component with
        ``O_NOFOLLOW``: a folder that is (or was swapped for) a symlink is refused, never followed."""
        rels = check_deletable(self, relpaths)
        by_dir: dict[str, list[tuple[str, str]]] = {}
        for rel in rels:
            head, _, name = rel.rpartition("/")
            by_dir.setdefault(head, []).append((name, rel))
        for head in by_dir:  # a folder resolving outside the root refuses the whole call, before any delete
            self._abs(head + "/x")
        result = DeleteResult()
        gone: list[str] = []
        unlink = os.unlink
        for head, names in by_dir.items():
            try:
                dfd = self._open_dir(head)
            except (FileNotFoundError, NotADirectoryError):
                result.missing += len(names)
                result.missing_paths.extend(rel for _, rel in names)
                gone.extend(rel for _, rel in names)
                continue
            except OSError as exc:
                why = (f"refusing to delete: a folder on the way to {head} is a symbolic link"
                       if exc.errno == errno.ELOOP else str(self.wrap(exc, head, "cannot delete: ")))
                for _, rel in names:
                    result.failed[rel] = why
                continue
            try:
                for name, rel in names:
                    try:
                        unlink(name, dir_fd=dfd)
                        result.deleted += 1
                        gone.append(rel)
                    except FileNotFoundError:
                        result.missing += 1
                        result.missing_paths.append(rel)
                        gone.append(rel)
                    except OSError as exc:
                        result.failed[rel] = str(self.wrap(exc, rel, "cannot delete: "))
            finally:
                os.close(dfd)
        if prune_dirs and gone:
            for level in prune_candidates(gone):
                for rel in level:
                    result.pruned_dirs += self._rmdir(rel)
        return result

    def _rmdir(self, rel: str) -> int:
        """Remove an empty folder relative to its parent's fd (a symlink there is not a folder: kept)."""
        head, _, name = rel.rpartition("/")
        try:
            pfd = self._open_dir(head)
        except OSError:
            return 0
        try:
            os.rmdir(name, dir_fd=pfd)
            return 1
        except OSError:
            return 0  # not empty, already gone, a symlink
        finally:
            os.close(pfd)

    # --- streaming files ---------------------------------------------------------------------------
    def open_reader(self, relpath: str) -> FileReader:
        rel = self.rel(relpath)
        try:
            fd = os.open(self._abs_follow(rel), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise self.wrap(exc, rel, "cannot open for reading: ") from None
        return _Reader(self, rel, fd)

    def open_writer(self, relpath: str, *, truncate_to: int | None = None) -> FileWriter:
        rel = self.rel(relpath)
        path = self._abs_follow(rel)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if truncate_to == 0 else 0)
        try:
            try:
                fd = os.open(path, flags, 0o644)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fd = os.open(path, flags, 0o644)
            if truncate_to and os.fstat(fd).st_size > truncate_to:
                os.ftruncate(fd, truncate_to)
        except OSError as exc:
            raise self.wrap(exc, rel, "cannot open for writing: ") from None
        return _Writer(self, rel, path, fd, min(truncate_to or 0, os.fstat(fd).st_size))


class _Reader(FileReader):
    def __init__(self, vol: LocalVolume, rel: str, fd: int) -> None:
        self.vol, self.rel, self.fd = vol, rel, fd
        st = os.fstat(fd)
        self.size, self.mtime = st.st_size, st.st_mtime

    def chunks(self, start: int, end: int, chunk_size: int) -> Iterator[bytes]:
        pos = start
        while pos < end:
            try:
                data = os.pread(self.fd, min(chunk_size, end - pos), pos)
            except OSError as exc:
                raise self.vol.wrap(exc, self.rel, "read failed: ") from None
            if not data:
                raise self.vol.error(StorageError, errno.EIO, f"file shrank while reading (at {pos})", self.rel)
            pos += len(data)
            yield data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Writer(FileWriter):
    def __init__(self, vol: LocalVolume, rel: str, path: str, fd: int, start: int = 0) -> None:
        self.vol, self.rel, self.path, self.fd = vol, rel, path, fd
        self.durable = True          # finish() fsyncs (footage); False for probe files
        self.contiguous = start      # every byte below this was written (pwrite returned)

    def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        first = offset
        try:
            while view:
                n = os.pwrite(self.fd, view, offset)
                view = view[n:]
                offset += n
        except OSError as exc:
            raise self.vol.wrap(exc, self.rel, "write failed: ") from None
        if first <= self.contiguous < offset:
            self.contiguous = offset

    def acked(self) -> int | None:
        return self.contiguous

    def finish(self, mtime: float | None) -> Entry:
        try:
            if self.durable:
                os.fsync(self.fd)
            if mtime is not None:
                ns = int(round(mtime * 1e9))
                os.utime(self.fd, ns=(ns, ns))
            st = os.fstat(self.fd)
        except OSError as exc:
            self.abort()
            raise self.vol.wrap(exc, self.rel, "cannot finish writing: ") from None
        os.close(self.fd)
        self.fd = -1
        return Entry(self.rel, st.st_size, st.st_mtime)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

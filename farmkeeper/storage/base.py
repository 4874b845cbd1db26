"""The storage interface: a ``Volume`` is one share (``\\\\server\\DATAX``) reached locally or over SMB.

Every relative path goes through ``farmkeeper.layout.safe_relpath`` before any I/O; a path that would
leave the share root raises ``PathEscapeError``. Errors are ``farmkeeper.errors.StorageError`` subclasses
naming ``\\\\server\\SHARE\\path`` (never a credential).
"""

from __future__ import annotations

import abc
import errno
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from farmkeeper.errors import PathEscapeError, SpecError, StorageError, StoragePermission
from farmkeeper.layout import (
    FILE_NAME_RE,
    FOOTAGE_ROOTS,
    META,
    VIDEO,
    FootagePath,
    parse_footage,
    safe_relpath,
    share_name,
)

CountKey = tuple[str, int | None, str]


@dataclass(frozen=True, slots=True)
class Entry:
    """A file on a volume: path relative to the share root (with ``/``), size in bytes, mtime (epoch s)."""

    relpath: str
    size: int
    mtime: float


@dataclass(frozen=True)
class Space:
    total: int
    free: int

    @property
    def used(self) -> int:
        return self.total - self.free

    @property
    def free_percent(self) -> float:
        return 100.0 * self.free / self.total if self.total else 0.0


@dataclass(frozen=True)
class VolumeAccess:
    """How to reach one volume; built by callers from the inventory."""

    server: str
    drive: str
    host: str = ""
    port: int = 445
    username: str = ""
    password: str = field(default="", repr=False)
    local_path: str | None = None
    require_signing: bool = True
    encrypt: bool = False
    unc_share: str | None = None          # central storage: the NAS share (``host`` is the NAS) instead of DATAX

    @property
    def share(self) -> str:
        return self.unc_share or share_name(self.drive)


@dataclass
class DeleteResult:
    """Outcome of ``Volume.delete_files``: deleted + missing = files requested minus failures."""

    deleted: int = 0
    missing: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    pruned_dirs: int = 0
    missing_paths: list[str] = field(default_factory=list)   # the ``missing`` ones, by name

    @property
    def ok(self) -> bool:
        return not self.failed


class FileReader(abc.ABC):
    """An open source file for copying; ``chunks`` streams ``[start, end)`` in order."""

    size: int
    mtime: float

    @abc.abstractmethod
    def chunks(self, start: int, end: int, chunk_size: int) -> Iterator[bytes]: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class FileWriter(abc.ABC):
    """An open destination file; writes may be queued, ``finish`` waits for all and reports errors."""

    @abc.abstractmethod
    def write(self, offset: int, data: bytes) -> None: ...

    def acked(self) -> int | None:
        """Length of the prefix the storage has acknowledged: every write below it returned success
        (``None``: not known, so nothing of this file may be resumed)."""
        return None

    @abc.abstractmethod
    def finish(self, mtime: float | None) -> Entry:
        """Wait for pending writes, set mtime, close; return the file's final size/mtime."""

    @abc.abstractmethod
    def abort(self) -> None: ...


class Volume(abc.ABC):
    """One share; thread-safe (several threads may call it at once)."""

    server: str
    share: str

    # --- the public interface ---------------------------------------------------------------------
    @abc.abstractmethod
    def walk(self, prefix: str = "") -> Iterator[Entry]:
        """Every file under ``prefix`` (recursive, streaming); a missing prefix yields nothing."""

    def count(self, prefix: str = "") -> dict[CountKey, int]:
        """Footage files per (camera, stream or None for meta, 'YYYY-MM-DD'); other files are ignored."""
        counts: dict[CountKey, int] = {}
        for dirpath, names in self.list_files_by_dir(prefix):
            count_dir(counts, dirpath, names)
        return counts

    @abc.abstractmethod
    def list_files_by_dir(self, prefix: str = "") -> Iterator[tuple[str, list[str]]]:
        """``(dir relpath, [file names])`` for every directory under ``prefix`` (a fast form of ``walk``)."""

    def folder_names(self, relpath: str) -> list[str]:
        """The file names directly in folder ``relpath`` (not in its sub-folders); a missing folder has none.
        The watchdog's one listing per camera: backends answer it without walking."""
        rel = self.rel(relpath)
        for dirpath, names in self.list_files_by_dir(rel):
            if dirpath == rel:
                return names
        return []

    def probe(self, relpath: str, data: bytes) -> Space:
        """Overwrite the small file ``relpath`` (not durable: whether the volume takes a write is the question)
        and read the free space, in as few operations as the backend allows."""
        self.write_bytes(relpath, data, durable=False)
        return self.space()

    def find_aliases(self, prefix: str = "", depth: int = 3) -> list[str]:
        """Folders under ``prefix`` (``depth`` levels down) that are another folder under a second name (a link,
        a reparse point), which every walk skips; one text per alias naming both paths when known."""
        return []

    @abc.abstractmethod
    def space(self) -> Space: ...

    @abc.abstractmethod
    def stat(self, relpath: str) -> Entry | None:
        """The file (a folder gives size 0), or ``None`` if missing."""

    @abc.abstractmethod
    def has_file(self, relpath: str) -> bool:
        """A file (not a folder, not a link) named ``relpath`` is there: one metadata request, no listing."""

    def newest_file(self, relpaths: Sequence[str]) -> int:
        """Which of ``relpaths`` (oldest first) is the last one that is a file (``has_file``), looked for from the
        newest: its position from 1, or 0 when none is."""
        for position in range(len(relpaths), 0, -1):
            if self.has_file(relpaths[position - 1]):
                return position
        return 0

    @abc.abstractmethod
    def makedirs(self, relpath: str) -> None:
        """Create a folder and its parents; an existing folder is success."""

    @abc.abstractmethod
    def delete_files(self, relpaths: Iterable[str], *, prune_dirs: bool = True) -> DeleteResult:
        """Delete footage files in a batch (see ``check_deletable``); already gone counts as missing."""

    @abc.abstractmethod
    def read_bytes(self, relpath: str) -> bytes: ...

    @abc.abstractmethod
    def write_bytes(self, relpath: str, data: bytes, mtime: float | None = None, *, durable: bool = True) -> None:
        """Write a small file whole. ``durable=False``: no fsync (a probe file: whether the volume takes a
        write is the question, not whether it survives a power cut)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- used by copy_files --------------------------------------------------------------------------
    @abc.abstractmethod
    def open_reader(self, relpath: str) -> FileReader: ...

    @abc.abstractmethod
    def open_writer(self, relpath: str, *, truncate_to: int | None = None) -> FileWriter:
        """Open (create if missing) for writing; ``truncate_to`` cuts an existing file to that size."""

    @abc.abstractmethod
    def rename(self, src: str, dst: str) -> None:
        """Rename within the volume; raises ``StorageExists`` if ``dst`` exists."""

    @abc.abstractmethod
    def remove(self, relpath: str) -> None:
        """Remove one file (any path inside the share, used for temporary files); missing is success."""

    # --- helpers -----------------------------------------------------------------------------------
    def rel(self, relpath: str) -> str:
        """``safe_relpath`` raising ``PathEscapeError`` that names this volume."""
        try:
            return safe_relpath(relpath) if relpath else ""
        except SpecError:
            raise PathEscapeError(str(relpath), server=self.server, share=self.share) from None

    def error(self, cls: type[StorageError], err: int, message: str, path: str = "") -> StorageError:
        return cls(err, message, server=self.server, share=self.share, path=path)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} \\\\{self.server}\\{self.share}>"


def check_deletable(volume: Volume, relpaths: Iterable[str]) -> list[str]:
    """Normalise every path and refuse (before any deletion) those outside ``video/<cam>/...`` or ``meta/<cam>/...``."""
    out = []
    for raw in relpaths:
        rel = volume.rel(raw)
        parts = rel.split("/")
        if parts[0] not in FOOTAGE_ROOTS or len(parts) < 3:
            raise StoragePermission(errno.EPERM, f"refusing to delete {raw!r}: only files under video/<camera>/ "
                                    "and meta/<camera>/ may be deleted (nothing was deleted)",
                                    server=volume.server, share=volume.share, path=rel)
        out.append(rel)
    return out


def prune_floor(relpath: str) -> int:
    """How many leading path parts of a footage file's folder must never be removed by pruning."""
    return 3 if relpath.startswith(VIDEO + "/") else 2


def prune_candidates(deleted: Iterable[str]) -> list[list[str]]:
    """Folders that may have become empty, grouped deepest first (hour folders, then day folders...)."""
    levels: dict[int, set[str]] = {}
    for rel in deleted:
        parts = rel.split("/")
        floor = prune_floor(rel)
        for depth in range(len(parts) - 1, floor, -1):
            levels.setdefault(depth, set()).add("/".join(parts[:depth]))
    return [sorted(levels[d]) for d in sorted(levels, reverse=True)]




def count_dir(counts: dict[CountKey, int], dirpath: str, names: list[str]) -> None:
    """Add the footage files among ``names`` (files of folder ``dirpath``) to ``counts``.

    Equivalent to ``try_parse_footage`` on each ``dirpath/name``, but parses the folder once.
    """
    parts = dirpath.split("/") if dirpath else []
    if len(parts) == 5 and parts[0] == VIDEO or len(parts) == 4 and parts[0] == META:
        pass
    else:
        return
    key_cache: CountKey | None = None
    day_compact = parts[-2].replace("-", "")
    hour = parts[-1]
    n = 0
    for name in names:
        m = FILE_NAME_RE.match(name)
        if m is None or m.group(1) != day_compact or m.group(2) != hour:
            continue
        if key_cache is None:
            fp = _try_parse(f"{dirpath}/{name}")
            if fp is None:
                return  # the folder itself is not in the layout (bad camera id, day, stream)
            key_cache = (fp.camera, fp.stream, parts[-2])
        n += 1
    if key_cache is not None and n:
        counts[key_cache] = counts.get(key_cache, 0) + n


def _try_parse(relpath: str) -> FootagePath | None:
    try:
        return parse_footage(relpath)
    except SpecError:
        return None


__all__ = ["CountKey", "DeleteResult", "Entry", "FileReader", "FileWriter", "META", "Space", "VIDEO", "Volume",
           "VolumeAccess", "check_deletable", "count_dir", "prune_candidates"]

"""Same storage under two names: recognised at apply and proven absent before a copy job deletes anything.

Two volumes are the same storage when

* their local paths resolve to the same folder (``realpath``, or the same ``st_dev``/``st_ino`` of the root:
  a symlink, a bind mount, ``..`` spellings) or one lies inside the other (nested);
* they are the same SMB share: the same ``host:port`` and the same ``DATAX`` share;

unless both declare the same central storage (``unc``): that is one storage on purpose, never copied.

At run time ``prove_distinct(src, dst)`` proves a copy job's source and destination differ: local roots by
``st_dev``/``st_ino``, and for every pair (SMB, or a local path that may be a mount of a share) by a probe
file written through one volume under a farmkeeper-owned name (``.farmkeeper/probe-<random>``) and looked for
through the other, then removed.
"""

from __future__ import annotations

import errno
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from farmkeeper.errors import InventoryError, StorageError
from farmkeeper.storage.base import Volume

log = logging.getLogger(__name__)

PROBE_DIR = ".farmkeeper"


class SameStorageError(InventoryError):
    """A copy job's source and destination are the same storage: nothing is copied or deleted."""


@dataclass(frozen=True)
class VolumeRef:
    """One volume as the farm file declares it (``where``: its place in the file, for messages)."""

    where: str                 # "farm.yaml:12 (servers[1].volumes[0], rec2 D:)"
    server: str
    drive: str
    host: str
    port: int
    path: str | None = None
    unc: str | None = None


def _norm_unc(unc: str | None) -> str | None:
    return unc.replace("/", "\\").rstrip("\\").lower() if unc else None


def _real(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


def _ident(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _inside(inner: str, outer: str) -> bool:
    return inner != outer and inner.startswith(outer.rstrip(os.sep) + os.sep)


def same_storage_pairs(volumes: Sequence[VolumeRef]) -> list[tuple[VolumeRef, VolumeRef, str]]:
    """Every pair of ``volumes`` that is the same storage, with why (the first of a pair comes first in the file)."""
    real = {i: _real(v.path) for i, v in enumerate(volumes) if v.path}
    ident = {i: _ident(p) for i, p in real.items()}
    out: list[tuple[VolumeRef, VolumeRef, str]] = []
    for i, a in enumerate(volumes):
        for j in range(i + 1, len(volumes)):
            b = volumes[j]
            ua, ub = _norm_unc(a.unc), _norm_unc(b.unc)
            if ua and ua == ub:
                continue                      # declared central storage: one storage on purpose
            why = None
            if i in real and j in real:
                ra, rb = real[i], real[j]
                if ra == rb:
                    why = f"both paths are the folder {ra}"
                elif ident[i] is not None and ident[i] == ident[j]:
                    why = f"{a.path} and {b.path} are the same folder (same device and inode)"
                elif _inside(ra, rb) or _inside(rb, ra):
                    inner, outer = (ra, rb) if _inside(ra, rb) else (rb, ra)
                    why = f"{inner} is inside {outer} (nested volumes)"
            if why is None and not ua and not ub and a.drive.upper() == b.drive.upper() and \
                    a.host.lower() == b.host.lower() and a.port == b.port:
                why = f"both are the SMB share \\\\{a.host}:{a.port}\\DATA{a.drive.upper()}"
            if why is not None:
                out.append((a, b, why))
    return out


def prove_distinct(src: Volume, dst: Volume) -> None:
    """Raise ``SameStorageError`` when ``src`` and ``dst`` are the same storage (see the module docstring).

    A probe that cannot be written through either volume raises the ``StorageError`` that stopped it
    (nothing is deleted without the proof).
    """
    label = f"{src!r} and {dst!r}"
    src_root, dst_root = getattr(src, "root", None), getattr(dst, "root", None)
    if isinstance(src_root, str) and isinstance(dst_root, str):
        a, b = _ident(src_root), _ident(dst_root)
        if a is not None and a == b:
            raise SameStorageError(f"{label} are the same storage: {src_root} and {dst_root} are the same folder "
                                   "(same device and inode); nothing was copied or deleted. Give each server its "
                                   "own volume (or declare central storage with unc)")
    last: StorageError | None = None
    for writer, reader in ((src, dst), (dst, src)):
        try:
            if _probe_seen(writer, reader):
                raise SameStorageError(
                    f"{label} are the same storage: a probe file written to {writer!r} appeared on {reader!r}; "
                    "nothing was copied or deleted. Give each server its own volume (or declare central storage "
                    "with unc)")
            return
        except StorageError as exc:     # read-only through this one: try writing through the other
            last = exc
    assert last is not None
    raise last


def _probe_seen(writer: Volume, reader: Volume) -> bool:
    name = f"{PROBE_DIR}/probe-{uuid.uuid4().hex}"
    writer.write_bytes(name, b"farmkeeper same-storage probe; safe to delete\n", durable=False)
    try:
        return reader.stat(name) is not None
    finally:
        try:
            writer.remove(name)
        except StorageError as exc:
            if exc.errno != errno.ENOENT:
                log.warning("%r: could not remove the probe file %s: %s", writer, name, exc)


__all__ = ["PROBE_DIR", "SameStorageError", "VolumeRef", "prove_distinct", "same_storage_pairs"]

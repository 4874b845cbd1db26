"""Footage trees for retention tests: layout names written straight into a share folder."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from farmkeeper.layout import meta_path, video_path
from farmkeeper.models import Camera, FarmSettings, StorageSettings
from farmkeeper.retention import Listing, RetentionPolicy, build_policy, read_listing
from farmkeeper.storage.base import Entry

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
STEP = timedelta(minutes=10)


def series(camera: str, stream: int | None, start: datetime, count: int, step: timedelta = STEP) -> list[str]:
    """Relpaths of ``count`` consecutive segments from ``start`` (stream ``None``: metadata)."""
    out = []
    for i in range(count):
        t = start + i * step
        out.append((video_path(camera, stream, t) if stream is not None else meta_path(camera, t)).relpath)
    return out


def days_back(camera: str, stream: int | None, days: float, step: timedelta = STEP,
              now: datetime = NOW) -> list[str]:
    """Segments covering the last ``days`` days up to ``now`` (oldest first)."""
    count = int(timedelta(days=days) / step)
    return series(camera, stream, now - count * step, count, step)


def write(root: Path, relpaths: Iterable[str], size: int = 100) -> list[str]:
    out = []
    data = b"x" * size
    for rel in relpaths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out.append(rel)
    return out


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def listing_of(relpaths: Iterable[str], size: int = 100) -> Listing:
    return read_listing(Entry(r, size, 0.0) for r in relpaths)


def camera(cid: str, streams: int = 1, days: str | None = None) -> Camera:
    return Camera(id=cid, streams=streams, max_storage_days=days, declared_home="rec1", home="rec1")


def policy(cameras: list[Camera], *, limit: bool = True, default_days: int = 7, keep_meta: bool = False,
           meta_days: int = 30, min_free: int = 0, min_free_percent: float = 0.0,
           guard: float = 0.5) -> RetentionPolicy:
    storage = StorageSettings(limit_storage_days=limit, default_max_storage_days=default_days,
                              keep_metadata_longer=keep_meta, default_metadata_days=meta_days,
                              min_free_bytes=min_free, min_free_percent=min_free_percent)
    return build_policy(storage, FarmSettings(purge_guard_fraction=guard), cameras)

"""Continuity of a camera's footage: the gaps in [from, to) across every server and volume it recorded on.

A camera's timeline is the union of its stream-0 segment starts on every volume that may hold its
footage (those the last retention sweep found it on, and every volume of its home, current server,
servers of its failover events and of its last file count). Only the day folders in the range are
listed (``video/<camera>/0/<YYYY-MM-DD>``, their hour folders below), concurrently, never a walk of the
camera. The usual segment length is the median step between consecutive starts; a *gap* is a stretch
of more than 2 × that length without footage (from the end of one segment to the start of the next,
and at both ends of the range). ``availability_percent`` is the share of the range outside gaps.

The same report proves a swap-back complete: footage copied home fills the failover's stretch on the
home volume, and the union over volumes shows no gap there.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from farmkeeper import inventory
from farmkeeper.errors import FarmkeeperError, SpecError
from farmkeeper.layout import segment_start, video_day_folder
from farmkeeper.models import FailoverEvent, OwnershipCount, RetentionCamera
from farmkeeper.storage.base import Volume

WATCH_STREAM = 0
DEFAULT_SEGMENT_S = 60.0          # when fewer than two segments are known
THREADS = 8

VolumeOpener = Callable[[str, str], Volume]


@dataclass(frozen=True)
class Gap:
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def to_json(self) -> dict[str, Any]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(), "seconds": round(self.seconds, 3)}


@dataclass
class ContinuityReport:
    camera: str
    start: datetime
    end: datetime
    gaps: list[Gap] = field(default_factory=list)
    segments: int = 0
    segment_s: float | None = None
    volumes: list[str] = field(default_factory=list)       # \\server\DATAX listed
    errors: dict[str, str] = field(default_factory=dict)   # volume → why it could not be listed

    @property
    def availability_percent(self) -> float:
        total = (self.end - self.start).total_seconds()
        if total <= 0:
            return 100.0
        return round(100.0 * max(0.0, total - sum(g.seconds for g in self.gaps)) / total, 3)

    def to_json(self) -> dict[str, Any]:
        """DESIGN.md's shape: ``{"camera","from","to","gaps":[{"from","to","seconds"}],"availability_percent"}``."""
        return {"camera": self.camera, "from": self.start.isoformat(), "to": self.end.isoformat(),
                "gaps": [g.to_json() for g in self.gaps], "availability_percent": self.availability_percent,
                "segments": self.segments, "segment_s": self.segment_s, "volumes": self.volumes,
                "errors": self.errors}


def check_range(start: datetime, end: datetime) -> None:
    if end <= start:
        raise SpecError(f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})")
    if end - start > timedelta(days=400):
        raise SpecError("a continuity report covers at most 400 days")


def days(start: datetime, end: datetime) -> list[datetime]:
    """The UTC days touching [start, end)."""
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    while day < end:
        out.append(day)
        day += timedelta(days=1)
    return out


def camera_volumes(session: Session, camera: str) -> list[tuple[str, str]]:
    """(server, drive) of every volume that may hold the camera's footage, sorted."""
    cam = inventory.get_camera(session, camera)
    servers = {cam.home, cam.declared_home} | ({cam.current} if cam.current else set())
    for event in session.exec(select(FailoverEvent).where(FailoverEvent.camera_id == camera)):
        servers |= {event.from_server, event.to_server}
    for count in session.exec(select(OwnershipCount).where(OwnershipCount.camera_id == camera,
                                                           col(OwnershipCount.files) > 0)):
        servers.add(count.server)
    out = {(r.server, r.drive) for r in session.exec(select(RetentionCamera).where(
        RetentionCamera.camera_id == camera, col(RetentionCamera.video_files) > 0))}
    known = {s.name for s in inventory.list_servers(session)}
    for vol in inventory.list_volumes(session):
        if vol.server_name in servers:
            out.add((vol.server_name, vol.drive))
    return sorted(v for v in out if v[0] in known)


def list_starts(volume: Volume, camera: str, day: datetime) -> list[datetime]:
    """Starts of the camera's closed stream-0 segments of one day on one volume."""
    out = []
    for _dir, names in volume.list_files_by_dir(video_day_folder(camera, WATCH_STREAM, day)):
        for name in names:
            start = segment_start(name)
            if start is not None:
                out.append(start)
    return out


def usual_length(starts: Sequence[datetime]) -> float | None:
    steps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False) if b > a]
    return statistics.median(steps) if steps else None


def find_gaps(starts: Sequence[datetime], start: datetime, end: datetime, segment_s: float) -> list[Gap]:
    """Stretches of [start, end) longer than 2 × ``segment_s`` without footage (``starts`` sorted)."""
    limit = timedelta(seconds=2 * segment_s)
    length = timedelta(seconds=segment_s)
    gaps = []
    covered_to = start
    for s in starts:
        if s + length <= start:
            continue
        if s >= end:
            break
        if s - covered_to > limit:
            gaps.append(Gap(covered_to, s))
        covered_to = max(covered_to, s + length)
    if end - covered_to > limit:
        gaps.append(Gap(covered_to, end))
    return gaps


def build_report(camera: str, start: datetime, end: datetime, starts: Iterable[datetime],
                 segment_s: float | None = None) -> ContinuityReport:
    ordered = sorted(set(starts))
    length = segment_s or usual_length(ordered) or DEFAULT_SEGMENT_S
    inside = [s for s in ordered if start - timedelta(seconds=length) < s < end]
    return ContinuityReport(camera, start, end, find_gaps(ordered, start, end, length), len(inside),
                            round(length, 3))


def continuity(camera: str, start: datetime, end: datetime, volumes: Sequence[tuple[str, str]],
               open_volume: VolumeOpener) -> ContinuityReport:
    """List the day folders of [start, end) on every volume (concurrently) and find the gaps."""
    check_range(start, end)
    listing_days = days(start - timedelta(hours=1), end)
    jobs = [(server, drive, day) for server, drive in volumes for day in listing_days]
    errors: dict[str, str] = {}

    def one(job: tuple[str, str, datetime]) -> list[datetime]:
        server, drive, day = job
        try:
            return list_starts(open_volume(server, drive), camera, day)
        except (FarmkeeperError, OSError, LookupError) as exc:
            errors[f"\\\\{server}\\DATA{drive}"] = str(exc)[:300]
            return []

    with ThreadPoolExecutor(THREADS, thread_name_prefix="continuity") as pool:
        starts = [s for found in pool.map(one, jobs) for s in found]
    report = build_report(camera, start, end, starts)
    report.volumes = [f"\\\\{server}\\DATA{drive}" for server, drive in volumes]
    report.errors = errors
    return report

"""Planning a copy job: every closed footage file of the cameras on the source volumes becomes an item."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlmodel import Session, col

from farmkeeper.copyjobs.states import COPIED, TODO, refresh_counters, select_items
from farmkeeper.layout import camera_roots, try_parse_footage
from farmkeeper.models import CopyItem, CopyItemState, CopyJob, utcnow
from farmkeeper.storage import Volume
from farmkeeper.storage.copy import MTIME_TOLERANCE

log = logging.getLogger(__name__)


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
        select_items("id", "src_server", "src_drive", "relpath", "size", "mtime", "state")
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
    refresh_counters(session, job)
    report.files, report.bytes = job.files_total, job.bytes_total
    delete_source = bool((job.params or {}).get("delete_source", True))
    batches = set()
    for cam, state, src_server, src_drive, dst_server, dst_drive, n, nbytes in session.execute(
            select_items("camera_id", "state", "src_server", "src_drive", "dst_server", "dst_drive",
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


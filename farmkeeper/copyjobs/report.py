"""Finishing and reporting a copy job: per-camera summary, done/failed, the texts a run reports."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, col

from farmkeeper import claims
from farmkeeper.copyjobs.states import ACTIVE, COPIED, FINISHED, job_owner, refresh_counters, select_items
from farmkeeper.errors import InventoryError
from farmkeeper.models import CopyItem, CopyItemState, CopyJob, CopyJobState, utcnow
from farmkeeper.specs import human_size

if TYPE_CHECKING:
    from farmkeeper.copyjobs.batch import BatchResult


@dataclass
class CameraSummary:
    camera: str
    files: int = 0
    bytes: int = 0
    copied: int = 0
    skipped: int = 0
    conflicts: int = 0
    removed: int = 0
    remaining: int = 0
    failed: int = 0

    @property
    def complete(self) -> bool:
        return self.remaining == 0 and self.failed == 0


@dataclass
class JobSummary:
    job_id: int
    kind: str
    target: str
    state: CopyJobState
    cameras: dict[str, CameraSummary]
    files_total: int
    bytes_total: int
    files_done: int
    bytes_done: int
    error: str | None = None
    failures: list[str] = field(default_factory=list)    # a few "path: why" lines

    @property
    def remaining(self) -> int:
        return sum(c.remaining + c.failed for c in self.cameras.values())

    def rows(self) -> list[dict[str, Any]]:
        return [{"camera": c.camera, "files": c.files, "bytes": human_size(c.bytes), "copied": c.copied,
                 "skipped (identical)": c.skipped, "conflicts (both kept)": c.conflicts,
                 "sources removed": c.removed, "remaining": c.remaining + c.failed}
                for c in self.cameras.values()]


def job_summary(session: Session, job: CopyJob) -> JobSummary:
    """Per-camera counts of the job's items.

    An item's outcome survives the removal of its source through ``dst_relpath``: ``None`` = it was
    already identical at the destination (skipped), equal to ``relpath`` = copied, else the conflict name.
    """
    assert job.id is not None
    delete_source = bool((job.params or {}).get("delete_source", True))
    cams = {c: CameraSummary(c) for c in job.cameras}
    failures: list[str] = []
    for item in session.execute(select_items("camera_id", "size", "state", "relpath", "dst_relpath", "error",
                                              "src_server", "src_drive")
                                .where(CopyItem.job_id == job.id).order_by(col(CopyItem.relpath))):
        cs = cams.setdefault(item.camera_id, CameraSummary(item.camera_id))
        cs.files += 1
        cs.bytes += item.size
        finished = item.state in FINISHED
        conflict = finished and item.dst_relpath is not None and item.dst_relpath != item.relpath
        cs.conflicts += conflict
        cs.skipped += finished and item.dst_relpath is None
        cs.copied += finished and item.dst_relpath == item.relpath
        cs.removed += item.state == CopyItemState.removed
        if item.state == CopyItemState.failed or (item.error is not None and item.state in COPIED):
            cs.failed += 1
            if len(failures) < 10:
                failures.append(f"\\\\{item.src_server}\\DATA{item.src_drive}\\{item.relpath}: {item.error}")
        elif item.state == CopyItemState.pending or (delete_source and item.state in COPIED):
            cs.remaining += 1
    refresh_counters(session, job)
    return JobSummary(job.id, job.kind, job.target, job.state, cams, job.files_total, job.bytes_total,
                      job.files_done, job.bytes_done, job.error, failures)


def finish_job(session: Session, job_id: int, *, error: str | None = None) -> JobSummary:
    """Close the job: ``done`` if every item is finished (and no ``error``), else ``failed`` saying what remains."""
    job = session.get(CopyJob, job_id)
    if job is None:
        raise InventoryError(f"no copy job #{job_id}")
    summary = job_summary(session, job)
    now = utcnow()
    if error is None and summary.remaining == 0:
        job.state, job.error, job.finished_at = CopyJobState.done, None, now
    else:
        job.state = CopyJobState.failed
        left = f"{summary.remaining} of {summary.files_total} files remain"
        job.error = f"{error}; {left}" if error else left
    job.updated_at = now
    session.add(job)
    claims.release(session, job_owner(job_id))
    session.flush()
    summary.state, summary.error = job.state, job.error
    return summary


def fail_job(session: Session, job_id: int, error: str) -> None:
    """Mark a job failed (the worker gave up); a re-run resumes it."""
    job = session.get(CopyJob, job_id)
    if job is not None and job.state in ACTIVE:
        job.state, job.error, job.updated_at = CopyJobState.failed, error[:2000], utcnow()
        session.add(job)
    claims.release(session, job_owner(job_id))


def duration_text(seconds: float) -> str:
    """``3725.4`` → ``1:02:05``."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


# --- reporting a run --------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunWording:
    """The words a copy flow's messages use for one run: swap-back and move-cameras differ only in these."""

    what: str                 # "move to rec4", "swap-back to rec1": starts every title and message
    where: str                # where the copies are verified: "on rec4", "at home"
    resume: str               # the command that resumes the run
    rerun: str                # what to run once servers that were down are back: "re-run", "re-run `...`"
    still_open: str           # what becomes of segments still open: "re-run to move them"
    intro: str = ""           # a first line of the report and of the notification (may be empty)

    @property
    def title(self) -> str:
        return self.what[:1].upper() + self.what[1:]

    def crashed(self, exc: BaseException) -> str:
        """The message of a run stopped by an unexpected error."""
        return (f"{self.what} failed: {type(exc).__name__}: {exc}.\nNo source file was deleted unless verified "
                f"{self.where} (see the copy job in `farmkeeper status`).\nResume with: {self.resume}")


@dataclass
class JobReport:
    """A finished copy job as its run reports it: the numbers for the flow result and the texts for people."""

    wording: RunWording
    summary: JobSummary
    result: dict[str, Any]    # copied, skipped, ..., resume: the part of the flow result every copy flow has
    notes: list[str]
    body: str                 # one paragraph: counts, bytes transferred, time
    markdown: str             # the report artifact
    message: str              # the notification
    failure: str | None       # what went wrong and how to resume; None when the job is done

    @property
    def ok(self) -> bool:
        return self.failure is None


def blocked_cameras(cameras: Sequence[str], unmapped_cameras: Iterable[str],
                    still_open: dict[str, list[str]]) -> set[str]:
    """Cameras with footage left behind on purpose: on a drive the target lacks, or in a segment still open."""
    return set(unmapped_cameras) | {cam for paths in still_open.values() for cam in cameras
                                    if any(p.split("/")[1] == cam for p in paths)}


def job_report(summary: JobSummary, results: Sequence[BatchResult], wording: RunWording, *, verify: str,
               seconds: float, unmapped: list[str], unreachable: Sequence[str],
               still_open: dict[str, list[str]], failover_ended: list[str]) -> JobReport:
    """Totals, notes (unmapped drives, servers down, open segments, name collisions) and the report texts."""
    cams = summary.cameras.values()
    copied, skipped = sum(c.copied for c in cams), sum(c.skipped for c in cams)
    conflicts, removed = sum(c.conflicts for c in cams), sum(c.removed for c in cams)
    moved_bytes = sum(r.bytes_copied for r in results)
    notes = [*unmapped]
    if unreachable:
        notes.append(f"not read (server down): {', '.join(unreachable)}; {wording.rerun} when they are back")
    if still_open:
        notes.append(f"segments still open ({wording.still_open}): "
                     + "; ".join(f"{k}: {len(v)}" for k, v in still_open.items()))
    if conflicts:
        notes.append(f"{conflicts} name collision(s) with different content: both files kept "
                     "(the copy is named <stamp>~<source server>.<ext>)")
    ok = summary.state == CopyJobState.done
    body = (f"copy job #{summary.job_id}: {copied} copied, {skipped} skipped (already identical {wording.where}), "
            f"{conflicts} conflicts, {removed} sources removed after verification ({verify}); "
            f"{human_size(moved_bytes)} transferred in {duration_text(seconds)}")
    lines = [f"# {wording.title}: {'done' if ok else 'FAILED'}", ""]
    if wording.intro:
        lines += [f"{wording.intro[:1].upper()}{wording.intro[1:]}.", ""]
    lines += [body, "", *[f"- {n}" for n in notes]]
    if not ok:
        lines += [f"\n**Error:** {summary.error}", "", f"Resume with `{wording.resume}`"]
    markdown = "\n".join(lines)
    intro = [wording.intro] if wording.intro else []
    result = {"copied": copied, "skipped": skipped, "conflicts": conflicts, "removed": removed,
              "remaining": summary.remaining, "bytes_transferred": moved_bytes, "seconds": round(seconds, 3),
              "failover_ended": failover_ended, "unmapped": unmapped, "still_open": still_open,
              "error": summary.error, "resume": wording.resume}
    if ok:
        return JobReport(wording, summary, result, notes, body, markdown, "\n".join([*intro, body, *notes]), None)
    detail = "\n".join(summary.failures[:5])
    failure = (f"{wording.what} failed: {summary.error or 'some files failed'}.\nSources of unfinished files were "
               f"not deleted. {summary.remaining} of {summary.files_total} files remain"
               f"{' (' + detail + ')' if detail else ''}.\nResume with: {wording.resume}")
    return JobReport(wording, summary, result, notes, body, markdown, "\n".join([failure, body, *notes]), failure)

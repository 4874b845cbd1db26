"""The health-check's watchdog steps: stalled cameras and failed volumes (not a flow of its own).

``watch_recordings_step`` and ``check_volumes_step`` run in every ``health-check`` sweep after the
probes (see ``farmkeeper.watchdog`` for the rules). They notify once per transition (a camera stalled,
recording again; a volume failed, recovered) and fail cameras over alone where the farm says so
(``failover_stalled``; every camera whose write paths are all on failed volumes), with the same
planner and failover events as a server failover, so a swap-back brings their footage home.
Needs what ``health-check`` needs (``FARMKEEPER_DATABASE_URL``, SMB credentials by reference).
"""

from __future__ import annotations

import logging
from typing import Any

from farmkeeper.failover import FailoverResult
from farmkeeper.watchdog import Resume, Stall, WatchMemory
from flows.failover import failover_message
from tasks.common import call, send_notification
from tasks.watchdog import check_volumes, fail_over_cameras, recover_server, save_watch, watch_recordings

logger = logging.getLogger(__name__)


def _at(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else "never (no closed segment seen)"


def emit_event(name: str, *args: Any, **kwargs: Any) -> None:
    """Hook to ``tasks.events`` (Prefect events: ``camera_stalled``, ``camera_recording``, ...) when present."""
    try:
        from tasks import events  # type: ignore[attr-defined]
    except ImportError:
        return
    emitter = getattr(events, name, None)
    if emitter is not None:
        emitter(*args, **kwargs)


def stall_message(stall: Stall) -> tuple[str, str]:
    return (f"{stall.camera} stopped recording on {stall.server}",
            f"camera {stall.camera} on {stall.server} has no new closed segment since {_at(stall.last_segment_at)}; "
            f"the server still answers its probe")


def resume_message(resume: Resume) -> tuple[str, str]:
    return (f"{resume.camera} records again on {resume.server}",
            f"camera {resume.camera} on {resume.server} has a new closed segment ({_at(resume.last_segment_at)}); "
            f"stalled since {_at(resume.stalled_at)}")


def _fail_over(server: str, cameras: list[str], reason: str, *, mark_left: bool) -> FailoverResult:
    result: FailoverResult = call(fail_over_cameras, server, cameras, reason, mark_left)
    if result.moved:
        title, body, kind = failover_message(result, newly_down=False)
        send_notification(f"{reason} on {server}: " + title.split(": ", 1)[-1], body, kind)
        for move in result.moved:
            emit_event("camera_failed_over", move.camera, from_server=move.from_server, to_server=move.to_server,
                       reason=reason)
    return result


def watch_recordings_step(ctx: Any = None) -> dict[str, Any]:
    """Stalled and resumed cameras of this sweep: one notification each, stalled ones failed over if asked.
    A watching run's sweeps keep its cameras in memory (``ctx.watch.recordings``, ``WatchMemory``)."""
    watch = getattr(ctx, "watch", None)
    update = call(watch_recordings, getattr(watch, "recordings", None), getattr(watch, "accesses", None))
    for stall in update.stalled:
        title, body = stall_message(stall)
        send_notification(title, body, "failure")
        emit_event("camera_stalled", stall.camera, server=stall.server, last_segment_at=stall.last_segment_at)
    for resume in update.resumed:
        title, body = resume_message(resume)
        send_notification(title, body, "success")
        emit_event("camera_recording", resume.camera, server=resume.server, was="stalled")
    moved = []
    for server, cameras in sorted(update.fail_over.items()):
        result = _fail_over(server, cameras, "camera stalled", mark_left=False)
        moved += [m.camera for m in result.moved]
    return {"checked": update.checked, "stalled": [s.camera for s in update.stalled],
            "resumed": [r.camera for r in update.resumed], "moved": moved}


def check_volumes_step(ctx: Any = None) -> dict[str, Any]:
    """Failed and recovered volumes: notify once each, fail over the cameras left without storage."""
    update = call(check_volumes, getattr(getattr(ctx, "watch", None), "accesses", None))
    if hasattr(ctx, "spaces"):
        ctx.spaces = update.spaces           # the floor step of this sweep reads these instead of the volumes
    for t in update.transitions:
        label = f"\\\\{t.server}\\DATA{t.drive}"
        if t.failed:
            emit_event("volume_failed", t.server, t.drive, error=t.error)
            send_notification(f"volume {label} failed",
                              f"{t.server} cannot use its volume {t.drive}: ({t.error}); cameras recording only "
                              "there are failed over", "failure")
        else:
            emit_event("volume_recovered", t.server, t.drive)
            send_notification(f"volume {label} recovered", f"{t.server} writes its volume {t.drive}: again",
                              "success")
    moved = []
    for server, cameras in sorted(update.fail_over.items()):
        result = _fail_over(server, cameras, "storage failed", mark_left=True)
        moved += [m.camera for m in result.moved]
    for server in update.recovered_servers:
        rec = call(recover_server, server)
        if rec.became_redundant or rec.cameras_back:
            logger.info("storage of %s recovered: redundant=%s, recording again: %s", server,
                        rec.became_redundant, rec.cameras_back)
    return {"failed": [f"{t.server}:{t.drive}" for t in update.transitions if t.failed],
            "recovered": [f"{t.server}:{t.drive}" for t in update.transitions if not t.failed], "moved": moved}


def save_recordings(memory: WatchMemory, logger: Any) -> None:
    """A watch ends: write the watch rows its memory has not written yet (never fails the run)."""
    try:
        saved = save_watch(memory)
    except Exception as exc:  # noqa: BLE001 - the inventory is away: the next watch looks again, nothing is lost
        logger.warning("watch rows not saved at the end of the watch (%s): the next watch looks again",
                       type(exc).__name__)
        return
    if saved:
        logger.debug("%d watch row(s) saved at the end of the watch", saved)

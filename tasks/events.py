"""Prefect events for what the farm records: ``farmkeeper.<kind>.<what>`` about ``farmkeeper.<kind>.<name>``.

One function per event, called by flows and tasks with plain values (the core returns and records the
changes; only this layer talks to Prefect). The events show in the UI's event feed and trigger the
automations of ``deployments.automations``.

Emitting never blocks and never fails the caller: ``prefect.events.emit_event`` only puts the event on a
background worker's queue (the worker sends it over the events websocket; when the API is unreachable it
logs the failure and drops the event, a full queue drops it too). Anything that still goes wrong here is
logged and swallowed, the same rule as notifications.

Resources: ``farmkeeper.server.<name>``, ``farmkeeper.camera.<id>``, ``farmkeeper.volume.<server>.<drive>``,
``farmkeeper.copy-job.<id>``; each carries ``prefect.resource.name`` and ``farmkeeper.kind``. Camera and
copy-job events name the servers involved as related resources (roles ``from``, ``to``, ``server``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from farmkeeper.failover import FailoverResult
    from tasks.health import HealthUpdate

logger = logging.getLogger(__name__)

PREFIX = "farmkeeper."


def resource_id(kind: str, name: str) -> str:
    return f"{PREFIX}{kind}.{name}"


def _resource(kind: str, name: str, label: str | None = None) -> dict[str, str]:
    return {"prefect.resource.id": resource_id(kind, name), "prefect.resource.name": label or name,
            "farmkeeper.kind": kind}


def _related(kind: str, name: str, role: str) -> dict[str, str]:
    return {"prefect.resource.id": resource_id(kind, name), "prefect.resource.role": role,
            "prefect.resource.name": name}


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    return value


def _api_in_use() -> bool:
    """A Prefect API to send to: ``PREFECT_API_URL`` set and not in plain mode (a sweep without Prefect), so
    emitting never starts Prefect's ephemeral server."""
    try:
        from prefect.settings import PREFECT_API_URL

        from tasks.common import PLAIN
    except ImportError:  # pragma: no cover - Prefect is a dependency of this layer
        return False
    return bool(PREFECT_API_URL.value()) and not PLAIN.get()


def emit(event: str, kind: str, name: str, payload: dict[str, Any] | None = None, *,
         related: Iterable[tuple[str, str, str]] = (), label: str | None = None) -> bool:
    """Emit ``farmkeeper.<event>`` (e.g. ``server.down``) about ``farmkeeper.<kind>.<name>``; True when queued.

    ``related``: (kind, name, role) of other resources involved. Never raises, never waits for the API.
    """
    full = f"{PREFIX}{event}"
    if not _api_in_use():
        return False
    try:
        from prefect.events import emit_event

        sent = emit_event(full, resource=_resource(kind, name, label),
                          related=[_related(*r) for r in related] or None,
                          payload=_jsonable(payload or {}))
    except Exception as exc:  # noqa: BLE001 - an event never breaks the sweep or flow that emits it
        logger.warning("event %s about %s not emitted: %s: %s", full, name, type(exc).__name__, exc)
        return False
    return sent is not None


# --- servers --------------------------------------------------------------------------------------

def server_down(server: str, *, error: str | None = None, maintenance: bool = False,
                cameras: Sequence[str] = (), redundancy_group: Sequence[str] = (),
                live: Sequence[str] = ()) -> bool:
    """``farmkeeper.server.down``: no probe succeeded for ``down_after``.

    ``redundancy_group`` is every server of its group, ``live`` the members still up (what the
    "server down → validate-farm" automation validates).
    """
    return emit("server.down", "server", server,
                {"error": error, "maintenance": maintenance, "cameras": list(cameras),
                 "redundancy_group": list(redundancy_group), "live": list(live)})


def server_recovered(server: str, *, role: str, became_redundant: bool = False,
                     cameras_back: Sequence[str] = ()) -> bool:
    return emit("server.recovered", "server", server,
                {"role": role, "became_redundant": became_redundant, "cameras_back": list(cameras_back)})


def server_master(server: str, *, previous: str | None = None) -> bool:
    related = [("server", previous, "previous-master")] if previous else []
    return emit("server.master", "server", server, {"previous": previous}, related=related)


# --- cameras --------------------------------------------------------------------------------------

def camera_failed_over(camera: str, *, from_server: str, to_server: str, reason: str = "server down") -> bool:
    return emit("camera.failed-over", "camera", camera,
                {"from": from_server, "to": to_server, "reason": reason},
                related=[("server", from_server, "from"), ("server", to_server, "to")])


def camera_stranded(camera: str, *, server: str, reason: str = "") -> bool:
    """A movable camera of a down server that found no live redundant capacity."""
    return emit("camera.stranded", "camera", camera, {"server": server, "reason": reason},
                related=[("server", server, "server")])


def camera_stalled(camera: str, *, server: str | None, last_segment_at: datetime | None = None,
                   stall_after_s: float | None = None) -> bool:
    """A recording camera wrote no new closed segment for ``stall_after``."""
    return emit("camera.stalled", "camera", camera,
                {"server": server, "last_segment_at": last_segment_at, "stall_after_s": stall_after_s},
                related=[("server", server, "server")] if server else [])


def camera_offline(camera: str, *, server: str, reason: str = "") -> bool:
    """A camera that cannot record: its server is down and it cannot move (or the server is in maintenance)."""
    return emit("camera.offline", "camera", camera, {"server": server, "reason": reason},
                related=[("server", server, "server")])


def camera_recording(camera: str, *, server: str | None, was: str | None = None) -> bool:
    """A camera records again (it was ``was``: stalled, offline, stranded)."""
    return emit("camera.recording", "camera", camera, {"server": server, "was": was},
                related=[("server", server, "server")] if server else [])


# --- volumes and retention -------------------------------------------------------------------------

def volume_name(server: str, drive: str) -> str:
    return f"{server}.{drive}"


def volume_label(server: str, drive: str) -> str:
    return rf"\\{server}\DATA{drive}"


def volume_below_floor(server: str, drive: str, *, free_bytes: int | None, floor_bytes: int | None = None,
                       min_free_percent: float | None = None, total_bytes: int | None = None,
                       reason: str = "") -> bool:
    """Free space under the farm's floor (``min_free`` / ``min_free_percent``) and retention cannot fix it."""
    return emit("volume.below-floor", "volume", volume_name(server, drive),
                {"server": server, "drive": drive, "free_bytes": free_bytes, "floor_bytes": floor_bytes,
                 "min_free_percent": min_free_percent, "total_bytes": total_bytes, "reason": reason},
                related=[("server", server, "server")], label=volume_label(server, drive))


def volume_failed(server: str, drive: str, *, error: str | None = None) -> bool:
    """The server cannot write the volume (for ``down_after``); its cameras recording only there fail over."""
    return emit("volume.failed", "volume", volume_name(server, drive), {"server": server, "drive": drive,
                                                                       "error": error},
                related=[("server", server, "server")], label=volume_label(server, drive))


def volume_recovered(server: str, drive: str) -> bool:
    return emit("volume.recovered", "volume", volume_name(server, drive), {"server": server, "drive": drive},
                related=[("server", server, "server")], label=volume_label(server, drive))


def retention_blocked(server: str, drive: str, *, reason: str) -> bool:
    """``farmkeeper.retention.blocked`` about the volume: a guard stopped the sweep, nothing was deleted."""
    return emit("retention.blocked", "volume", volume_name(server, drive),
                {"server": server, "drive": drive, "reason": reason},
                related=[("server", server, "server")], label=volume_label(server, drive))


# --- copy jobs -----------------------------------------------------------------------------------

def _job_related(target: str, cameras: Sequence[str]) -> list[tuple[str, str, str]]:
    return [("server", target, "target"), *(("camera", c, "camera") for c in cameras[:20])]


def copy_job_started(job_id: int, *, kind: str, target: str, cameras: Sequence[str], files: int,
                     nbytes: int) -> bool:
    return emit("copy-job.started", "copy-job", str(job_id),
                {"kind": kind, "target": target, "cameras": list(cameras), "files": files, "bytes": nbytes},
                related=_job_related(target, cameras), label=f"{kind} #{job_id}")


def copy_job_finished(job_id: int, *, kind: str, target: str, cameras: Sequence[str], state: str,
                      files_done: int, bytes_done: int, seconds: float | None = None) -> bool:
    return emit("copy-job.finished", "copy-job", str(job_id),
                {"kind": kind, "target": target, "cameras": list(cameras), "state": state,
                 "files_done": files_done, "bytes_done": bytes_done, "seconds": seconds},
                related=_job_related(target, cameras), label=f"{kind} #{job_id}")


def copy_job_failed(job_id: int | None, *, kind: str, target: str, cameras: Sequence[str], error: str) -> bool:
    name = str(job_id) if job_id is not None else f"{kind}-{target}"
    return emit("copy-job.failed", "copy-job", name,
                {"kind": kind, "target": target, "cameras": list(cameras), "error": error[:2000]},
                related=_job_related(target, cameras), label=f"{kind} #{job_id}" if job_id else kind)


# --- what a health sweep and a failover recorded ----------------------------------------------------

@dataclass
class DownContext:
    """What the down events say of each newly down server, read before the failover moves its cameras."""

    group: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)
    on: dict[str, list[str]] = field(default_factory=dict)


def down_context(update: HealthUpdate) -> DownContext:
    """The redundancy group, its live members and the cameras of every newly down server (one inventory read)."""
    from farmkeeper.health import Transition

    context = DownContext()
    down = [t for t in update.transitions if t.transition in (Transition.down, Transition.down_maintenance)]
    if down:
        from farmkeeper import inventory, validation
        from farmkeeper.models import ServerState
        from tasks.common import inventory_session

        with inventory_session() as session:
            members = validation.redundancy_group(session)
            context.group = [s.name for s in members]
            context.live = [s.name for s in members if s.state == ServerState.up]
            for t in down:
                context.on[t.server] = [c.id for c in inventory.list_cameras(session, current=t.server)]
    return context


def health_events(update: HealthUpdate, context: DownContext | None = None) -> int:
    """The events of one health sweep's transitions (down, recovered, master, cameras back); returns how many.

    A down server's event names its redundancy group and the cameras it had (``context``, read before the
    failover; read now when not given). Never raises.
    """
    from farmkeeper.health import Transition

    sent = 0
    try:
        down = [t for t in update.transitions if t.transition in (Transition.down, Transition.down_maintenance)]
        if context is None:
            context = down_context(update)
        group, live, on = context.group, context.live, context.on
        for t in down:
            sent += server_down(t.server, error=t.error, maintenance=t.transition == Transition.down_maintenance,
                                cameras=on.get(t.server, ()), redundancy_group=group, live=live)
        for server, cameras in update.offline.items():
            for camera in cameras:
                sent += camera_offline(camera, server=server, reason="server down in maintenance")
        for rec in update.recoveries:
            sent += server_recovered(rec.server, role=rec.role.value, became_redundant=rec.became_redundant,
                                     cameras_back=rec.cameras_back)
            for camera in rec.cameras_back:
                sent += camera_recording(camera, server=rec.server, was="offline")
        if update.new_master:
            sent += server_master(update.new_master)
    except Exception as exc:  # noqa: BLE001 - events never break a sweep
        logger.warning("health events not emitted: %s: %s", type(exc).__name__, exc)
    return sent


def failover_events(result: FailoverResult, *, reason: str, retried: bool = False) -> int:
    """Cameras failed over, stranded (not again on a retry that left them stranded) and offline."""
    sent = 0
    for move in result.moved:
        sent += camera_failed_over(move.camera, from_server=move.from_server, to_server=move.to_server,
                                   reason=reason)
    if not retried:
        for camera in result.stranded:
            sent += camera_stranded(camera, server=result.server, reason=result.reasons.get(camera, ""))
        for camera in result.offline:
            sent += camera_offline(camera, server=result.server, reason="not movable")
    if result.new_master:
        sent += server_master(result.new_master)
    return sent


BLOCKING_ALERTS = ("holds_block_floors", "floors_blocked")


def retention_events(volumes: Sequence[dict[str, Any]]) -> int:
    """From a retention sweep's per-volume reports: sweeps newly blocked (purge guard, holds over the floors).

    Only alerts that are new for the volume (``new_alerts``) emit, so a volume that stays blocked sends one
    event, not one per sweep. Volumes below their floor are the health sweep's (``floor_events``).
    """
    sent = 0
    for v in volumes:
        new = [a for a in v.get("new_alerts", []) if a]
        if v.get("dry_run") or not new or "server" not in v:
            continue
        if v.get("blocked") or set(v.get("alert_kinds", [])) & set(BLOCKING_ALERTS):
            sent += retention_blocked(v["server"], v["drive"], reason="; ".join(new))
    return sent


_below_floor: set[tuple[str, str]] = set()


def floor_events(below: Sequence[dict[str, Any]]) -> int:
    """``farmkeeper.volume.below-floor`` for each volume that went under its floor since the last check.

    ``below``: the volumes under their floor now (``server``, ``drive``, ``free``, ``total``, ``floor``),
    from the health sweep's floor check. Remembered per process, so a volume that stays below emits once.
    """
    now = {(b["server"], b["drive"]) for b in below}
    sent = 0
    for b in below:
        if (b["server"], b["drive"]) not in _below_floor:
            sent += volume_below_floor(b["server"], b["drive"], free_bytes=b.get("free"),
                                       floor_bytes=b.get("floor"), total_bytes=b.get("total"),
                                       reason="free space under the floor")
    _below_floor.clear()
    _below_floor.update(now)
    return sent


# --- reading them back ----------------------------------------------------------------------------

def read_events(since: datetime, *, prefix: str = PREFIX, limit: int = 500) -> list[Any]:
    """farmkeeper's events that occurred since ``since``, oldest first, at most ``limit``, from the events API."""
    from datetime import UTC, timedelta

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventOrder

    query = EventFilter(occurred=EventOccurredFilter(since=since, until=datetime.now(UTC) + timedelta(minutes=5)),
                        event=EventNameFilter(prefix=[prefix]), order=EventOrder.ASC)
    out: list[Any] = []
    with get_client(sync_client=True) as client:
        page = client.read_events(filter=query, limit=min(limit, 50))   # the API's page size is at most 50
        out += page.events
        while page.next_page is not None and len(out) < limit:
            page = client.read_events_page(str(page.next_page))
            out += page.events
    return out[:limit]


def describe(event: Any) -> str:
    """One line for people: ``server.down rec1: cameras cam-1, cam-2``."""
    what = event.event.removeprefix(PREFIX)
    name = event.resource.get("prefect.resource.name", event.resource.id)
    payload = event.payload or {}
    detail = {
        "server.down": lambda: f"cameras on it: {', '.join(payload.get('cameras') or []) or 'none'}",
        "server.recovered": lambda: f"role {payload.get('role')}",
        "server.master": lambda: f"previous master {payload.get('previous') or '-'}",
        "camera.failed-over": lambda: f"{payload.get('from')} -> {payload.get('to')}",
        "camera.stranded": lambda: f"on {payload.get('server')}: {payload.get('reason') or 'no capacity'}",
        "camera.offline": lambda: f"on {payload.get('server')}: {payload.get('reason')}",
        "copy-job.started": lambda: f"{payload.get('kind')} to {payload.get('target')}, {payload.get('files')} files",
        "copy-job.finished": lambda: f"{payload.get('kind')} to {payload.get('target')}: {payload.get('state')}",
        "copy-job.failed": lambda: f"{payload.get('kind')} to {payload.get('target')}: {payload.get('error')}",
    }.get(what)
    return f"{what} {name}" + (f": {detail()}" if detail else "")

"""Failover planning and applying, master election and recovery.

``plan_failover`` is pure: given the servers and cameras it decides, for one down server, which
movable cameras go where. Targets are live (``up``), ``redundant``, not in maintenance, below
``max_cameras``, have every drive letter the camera's storage path needs, and — when the down
server has SAN failover mode on — exactly the down server's drive letters (the seed's rule:
same LUNs on the same letters). Each camera goes to the least loaded eligible target (cameras
recorded now, then free capacity, then name). Movable cameras without a target are ``stranded``
(the next health check retries them); non-movable ones are ``offline``. A camera no longer
recorded by the down server is not in the plan, so a second run moves nothing twice.

``apply_failover`` writes a plan inside the caller's transaction: it locks every server row first
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite transactions are already serialised), re-plans on
the locked rows, moves each camera with a compare-and-set on its ``current``, and records one
``FailoverEvent`` per moved camera (from, to, started_at). Swap-back uses the open events
(``ended_at IS NULL``) of a camera: footage recorded on ``to_server`` since ``started_at``.

Segment-closed rule (shared with the simulator and swap-back): a recorder writes a segment under
a temporary name starting with ``.`` in its final folder and renames it to the layout name when
the segment is closed. A camera's footage on a volume is complete ("closed") when no name
starting with ``.`` is left under its ``video/<camera>`` and ``meta/<camera>`` folders; see
``is_open_segment`` and ``open_segments``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, col, select

from farmkeeper import hooks, inventory
from farmkeeper.errors import NotFoundError
from farmkeeper.layout import camera_roots
from farmkeeper.models import (
    Camera,
    CameraState,
    FailoverEvent,
    Role,
    Server,
    ServerEvent,
    ServerState,
    StorageSettings,
    utcnow,
)
from farmkeeper.specs import StoragePathList, WindowsPath

logger = logging.getLogger(__name__)

OPEN_SEGMENT_PREFIX = "."


# --- segment-closed rule ------------------------------------------------------------------------

def is_open_segment(name: str) -> bool:
    """A file name (not a path) of a segment still being written."""
    return name.startswith(OPEN_SEGMENT_PREFIX)


def open_segments(share_root: str | os.PathLike[str], camera: str) -> list[str]:
    """Share-relative paths of the camera's segments still being written on a local share root."""
    root = Path(share_root)
    found = []
    for rel in camera_roots(camera):
        base = root / rel
        if not base.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if is_open_segment(name):
                    found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


def segments_closed(share_root: str | os.PathLike[str], camera: str) -> bool:
    return not open_segments(share_root, camera)


# --- pure planning ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerView:
    name: str
    state: ServerState
    role: Role
    drives: frozenset[str]
    max_cameras: int | None = None
    maintenance: bool = False
    san_failover_mode: bool = False
    failover_to: tuple[str, ...] = ()      # preferred targets in order, then any redundant server


@dataclass(frozen=True)
class CameraView:
    id: str
    current: str | None
    movable: bool
    drives: frozenset[str]
    priority: int = 3                      # 1..5: higher takes the free places first


@dataclass(frozen=True)
class Move:
    camera: str
    from_server: str
    to_server: str


@dataclass
class FailoverPlan:
    server: str
    moves: list[Move] = field(default_factory=list)
    stranded: list[str] = field(default_factory=list)
    offline: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)   # stranded camera → why

    @property
    def targets(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for move in self.moves:
            out.setdefault(move.to_server, []).append(move.camera)
        return out


def eligible(target: ServerView, source: ServerView, camera: CameraView) -> bool:
    """May ``camera`` of ``source`` be recorded by ``target`` (capacity aside)?"""
    if target.name == source.name or target.state != ServerState.up or target.maintenance:
        return False
    if target.role != Role.redundant:
        return False
    if not camera.drives <= target.drives:
        return False
    return not (source.san_failover_mode and target.drives != source.drives)


def plan_failover(server: str, servers: Sequence[ServerView], cameras: Sequence[CameraView], *,
                  only: Collection[str] | None = None) -> FailoverPlan:
    """Where the movable cameras of ``server`` (or just those in ``only``) go; pure and deterministic."""
    by_name = {s.name: s for s in servers}
    source = by_name.get(server)
    if source is None:
        raise NotFoundError(f"unknown server {server!r}")
    load: dict[str, int] = dict.fromkeys(by_name, 0)
    for cam in cameras:
        if cam.current in load:
            load[cam.current] += 1
    plan = FailoverPlan(server)
    for cam in by_priority(c for c in cameras if c.current == server and (only is None or c.id in only)):
        if not cam.movable:
            plan.offline.append(cam.id)
            continue
        candidates = [t for t in servers if eligible(t, source, cam)
                      and (t.max_cameras is None or load[t.name] < t.max_cameras)]
        if not candidates:
            plan.stranded.append(cam.id)
            plan.reasons[cam.id] = _why_stranded(source, cam, servers, load)
            continue
        best = choose_target(source, candidates, load)
        load[best.name] += 1
        load[server] -= 1
        plan.moves.append(Move(cam.id, server, best.name))
    return plan


def by_priority(cameras: Iterable[CameraView]) -> list[CameraView]:
    """The order cameras take free places in: priority 5 first, then by id (deterministic)."""
    return sorted(cameras, key=lambda c: (-c.priority, c.id))


def choose_target(source: ServerView, candidates: Sequence[ServerView], load: dict[str, int]) -> ServerView:
    """The first of ``source.failover_to`` that can take the camera, else the least loaded candidate."""
    by_name = {t.name: t for t in candidates}
    for name in source.failover_to:
        if name in by_name:
            return by_name[name]
    return min(candidates, key=lambda t: (load[t.name], -_free(t, load), t.name))


def _free(server: ServerView, load: dict[str, int]) -> float:
    return float("inf") if server.max_cameras is None else server.max_cameras - load[server.name]


def _why_stranded(source: ServerView, cam: CameraView, servers: Sequence[ServerView], load: dict[str, int]) -> str:
    live = [s for s in servers if s.name != source.name and s.state == ServerState.up and not s.maintenance
            and s.role == Role.redundant]
    if not live:
        return "no live redundant server"
    fitting = [s for s in live if eligible(s, source, cam)]
    if not fitting:
        if source.san_failover_mode:
            return f"no live redundant server with drives {', '.join(sorted(source.drives))} (SAN failover mode)"
        return f"no live redundant server with drives {', '.join(sorted(cam.drives))}"
    return "every live redundant server is at max_cameras"


def camera_drives(camera: Camera, storage: StorageSettings) -> frozenset[str]:
    if camera.storage_path:
        return frozenset(StoragePathList.parse(camera.storage_path).drives)
    return frozenset({WindowsPath.parse(storage.default_path).drive})


def views(session: Session) -> tuple[list[ServerView], list[CameraView]]:
    storage = inventory.storage_settings(session)
    drives: dict[str, set[str]] = {}
    for vol in inventory.list_volumes(session):
        drives.setdefault(vol.server_name, set()).add(vol.drive.upper())
    servers = [ServerView(s.name, s.state, s.role, frozenset(drives.get(s.name, ())), s.max_cameras,
                          s.maintenance, s.san_failover_mode, tuple(s.failover_to or ()))
               for s in inventory.list_servers(session)]
    cameras = [CameraView(c.id, c.current, c.movable, camera_drives(c, storage), c.priority)
               for c in inventory.list_cameras(session)]
    return servers, cameras


# --- applying -----------------------------------------------------------------------------------

@dataclass
class FailoverResult:
    server: str
    moved: list[Move] = field(default_factory=list)
    stranded: list[str] = field(default_factory=list)
    offline: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    new_master: str | None = None
    skipped: str | None = None          # why nothing was done (server up, maintenance)
    earlier: bool = False               # another failover of this outage already moved cameras (and told)

    @property
    def news(self) -> bool:
        """Worth a notification when first reported: it moved cameras (a run that moved nothing after
        another one did is a duplicate, e.g. a second watcher's retry of the same outage)."""
        return not self.skipped and (bool(self.moved) or not self.earlier)

    def rows(self) -> list[dict[str, str]]:
        out = [{"camera": m.camera, "from": m.from_server, "to": m.to_server, "result": "moved"} for m in self.moved]
        out += [{"camera": c, "from": self.server, "to": "", "result": f"stranded: {self.reasons.get(c, '')}"}
                for c in self.stranded]
        out += [{"camera": c, "from": self.server, "to": "", "result": "offline (not movable)"} for c in self.offline]
        return out

    def summary(self) -> str:
        if self.skipped:
            return f"{self.server}: {self.skipped}"
        parts = [f"{len(self.moved)} camera{'s' if len(self.moved) != 1 else ''} moved"]
        for target, cams in sorted(_group(self.moved).items()):
            parts.append(f"to {target}: {', '.join(cams)}")
        if self.stranded:
            parts.append(f"stranded (no capacity yet, retried): {', '.join(self.stranded)}")
        if self.offline:
            parts.append(f"offline (not movable): {', '.join(self.offline)}")
        if self.new_master:
            parts.append(f"{self.new_master} is now the master")
        return "; ".join(parts)


def _group(moves: Iterable[Move]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in moves:
        out.setdefault(m.to_server, []).append(m.camera)
    return out


def lock_servers(session: Session) -> list[Server]:
    """Every server row, locked for this transaction in name order (no deadlocks between failovers)."""
    return inventory.lock_servers(session)


def apply_failover(session: Session, server: str, *, force: bool = False, now: datetime | None = None,
                   reason: str = "server down") -> FailoverResult:
    """Fail over ``server``'s movable cameras inside the caller's transaction (idempotent)."""
    now = now or utcnow()
    servers = {s.name: s for s in lock_servers(session)}
    source = servers.get(server)
    if source is None:
        raise NotFoundError(f"unknown server {server!r}")
    result = FailoverResult(server)
    if source.state != ServerState.down and not force:
        result.skipped = f"server is {source.state.value}; nothing moved (force a failover of a live server)"
        return result
    if source.maintenance and not force:
        result.skipped = "server is in maintenance; cameras are not failed over"
        return result
    result.new_master = ensure_master(session, list(servers.values()))
    result.earlier = _failed_over_since(session, server, source.state_changed_at)
    hooks.reached("failover.servers-locked", session=session, server=server)
    server_views, camera_views = views(session)
    return _write_plan(session, plan_failover(server, server_views, camera_views), result, now, reason)


def apply_camera_failover(session: Session, server: str, cameras: Collection[str], *, reason: str,
                          now: datetime | None = None, mark_left: bool = True) -> FailoverResult:
    """Fail over only ``cameras`` of a live ``server`` (a stalled camera, a failed volume), like a failover.

    The same planner (priorities, ``failover_to``, SAN rule, capacity) and the same ``FailoverEvent``
    records, so a swap-back brings their footage home. Non-movable ones end ``offline`` and those without
    a place ``stranded`` unless ``mark_left`` is false (a stalled camera stays ``stalled``).
    """
    now = now or utcnow()
    lock_servers(session)
    server_views, camera_views = views(session)
    plan = plan_failover(server, server_views, camera_views, only=set(cameras))
    return _write_plan(session, plan, FailoverResult(server), now, reason, mark_left=mark_left)


def _write_plan(session: Session, plan: FailoverPlan, result: FailoverResult, now: datetime,
                reason: str, *, mark_left: bool = True) -> FailoverResult:
    """Move each planned camera (compare-and-set on ``current``), record its event, mark the rest."""
    server = plan.server
    cam_table = Camera.__table__  # type: ignore[attr-defined]
    for move in plan.moves:
        updated = session.execute(
            sa.update(cam_table)
            .where(cam_table.c.id == move.camera, cam_table.c.current == server)
            .values(current=move.to_server, state=CameraState.recording, version=cam_table.c.version + 1))
        if updated.rowcount != 1:  # type: ignore[attr-defined]
            logger.info("camera %s already moved off %s by someone else", move.camera, server)
            continue
        session.add(FailoverEvent(camera_id=move.camera, from_server=server, to_server=move.to_server,
                                  started_at=now, reason=reason))
        result.moved.append(move)
    left = [(c, CameraState.stranded) for c in plan.stranded] + [(c, CameraState.offline) for c in plan.offline]
    for cam_id, state in left if mark_left else []:
        session.execute(sa.update(cam_table).where(cam_table.c.id == cam_id, cam_table.c.current == server,
                                                   cam_table.c.state != state)
                        .values(state=state, version=cam_table.c.version + 1))
    result.stranded, result.offline, result.reasons = plan.stranded, plan.offline, plan.reasons
    if result.moved:
        inventory.record_server_event(session, server, "failover", moved=len(result.moved),
                                      stranded=result.stranded, offline=result.offline)
    session.flush()
    session.expire_all()
    return result


def _failed_over_since(session: Session, server: str, since: datetime | None) -> bool:
    """Did a failover of ``server`` move cameras since ``since`` (the start of this outage)?"""
    query = select(ServerEvent.id).where(ServerEvent.server == server, ServerEvent.kind == "failover")
    if since is not None:
        query = query.where(col(ServerEvent.at) >= since)
    return session.exec(query.limit(1)).first() is not None


def pending_failovers(session: Session) -> list[str]:
    """Down servers (not in maintenance) whose movable cameras could move now (stranded ones retried).

    Every sweep asks; with every server up (the usual case) the answer costs one small query, not a read
    of every camera (0.3-0.5 s at 10,000 cameras, measured in ``python -m bench failover``)."""
    if not session.execute(sa.select(Server.name).where(col(Server.state) == ServerState.down,  # type: ignore[call-overload]
                                                        sa.not_(col(Server.maintenance))).limit(1)).first():
        return []
    server_views, camera_views = views(session)
    out = []
    for s in server_views:
        if (s.state == ServerState.down and not s.maintenance
                and any(c.current == s.name and c.movable for c in camera_views)
                and plan_failover(s.name, server_views, camera_views).moves):
            out.append(s.name)
    return out


def open_failover_events(session: Session, *, camera: str | None = None,
                         from_server: str | None = None) -> list[FailoverEvent]:
    """Failover events swap-back has not finished yet (``ended_at IS NULL``), oldest first."""
    query = select(FailoverEvent).where(col(FailoverEvent.ended_at).is_(None))
    if camera is not None:
        query = query.where(FailoverEvent.camera_id == camera)
    if from_server is not None:
        query = query.where(FailoverEvent.from_server == from_server)
    return list(session.exec(query.order_by(col(FailoverEvent.started_at), col(FailoverEvent.id))).all())


# --- master election ----------------------------------------------------------------------------
#
# The master is one fact: a partial unique index (``uq_server_one_master``) lets the database hold at most
# one ``master`` row, and every writer (``farmfile.apply_farm_file``, ``ensure_master``) locks every server
# row (``lock_servers``, name order) and decides on the locked rows, so two writers never act on two views.

def elect_master(servers: Sequence[Server]) -> str | None:
    """The server that should be master: the current one while it is not down, else a live one.

    Preference among live servers: the declared master, primaries, then by name. With no live server the
    current master is kept; with no master at all, a server not known to be down is chosen (``None`` when
    every server is down).
    """
    masters = [s for s in servers if s.master]
    current = masters[0] if len(masters) == 1 else None
    if current is not None and current.state != ServerState.down:
        return current.name
    live = [s for s in servers if s.state == ServerState.up]
    if not live:
        if current is not None:
            return current.name
        live = [s for s in servers if s.state != ServerState.down]
        if not live:
            return None
    best = min(live, key=lambda s: (not s.declared_master, s.maintenance, s.role != Role.primary, s.name))
    return best.name


def set_master(session: Session, servers: Sequence[Server], winner: str) -> str | None:
    """Make ``winner`` the only master among the (locked) ``servers``; returns the previous master.

    The old master is cleared and flushed before the new one is set: the unique index is checked row by
    row, so one statement that swaps both could be refused.
    """
    previous = next((s.name for s in servers if s.master and s.name != winner), None)
    for s in servers:
        if s.master and s.name != winner:
            s.master = False
            s.version += 1
            session.add(s)
    session.flush()
    for s in servers:
        if s.name == winner and not s.master:
            s.master = True
            s.version += 1
            session.add(s)
    session.flush()
    return previous


def ensure_master(session: Session, servers: Sequence[Server] | None = None) -> str | None:
    """Make the elected server the master; returns its name when the master changed.

    ``servers`` are rows the caller locked (``lock_servers``); without them a cheap unlocked read decides
    whether anything must change, and only then are the rows locked and the election made again on them.
    """
    if servers is None:
        seen = list(inventory.list_servers(session))
        if _master_settled(seen):
            return None
        servers = lock_servers(session)
    servers = list(servers)
    hooks.reached("master.servers-locked", session=session, servers=servers)
    winner = elect_master(servers)
    if winner is None or _master_settled(servers):
        return None
    previous = set_master(session, servers, winner)
    inventory.record_server_event(session, winner, "master", previous=previous)
    session.flush()
    return winner


def _master_settled(servers: Sequence[Server]) -> bool:
    masters = [s.name for s in servers if s.master]
    return len(masters) == 1 and elect_master(servers) == masters[0]


# --- recovery -----------------------------------------------------------------------------------

@dataclass
class RecoveryResult:
    server: str
    role: Role
    became_redundant: bool = False
    cameras_back: list[str] = field(default_factory=list)   # offline/stranded cameras recording again


def apply_recovery(session: Session, server: str) -> RecoveryResult:
    """A server answered again: its leftover cameras record again; once camera-less after a failover it is redundant.

    The seed: "When a down server comes back up, and its cameras have been failed over to another
    server, it will now be considered a redundant server, since it has no cameras." A server that
    still records a camera (a non-movable one: USB, analog) has cameras, so it stays primary.
    """
    srv = inventory.get_server(session, server, for_update=True)
    result = RecoveryResult(server, srv.role)
    for cam in inventory.list_cameras(session, current=server):
        if cam.state != CameraState.recording:
            cam.state = CameraState.recording
            cam.version += 1
            session.add(cam)
            result.cameras_back.append(cam.id)
    cameras_left = bool(inventory.list_cameras(session, current=server))
    failed_over = bool(open_failover_events(session, from_server=server))
    if not cameras_left and failed_over and srv.role != Role.redundant:
        set_role(session, server, Role.redundant, reason="back without cameras after failover")
        result.role, result.became_redundant = Role.redundant, True
    session.flush()
    return result


def set_role(session: Session, server: str, role: Role, *, reason: str) -> bool:
    """Make ``server`` ``role`` (row locked, version bumped, a ``role`` server event); ``False`` when it already was."""
    srv = inventory.get_server(session, server, for_update=True)
    if srv.role == role:
        return False
    previous = srv.role
    srv.role = role
    srv.version += 1
    session.add(srv)
    inventory.record_server_event(session, server, "role", role=role.value, previous=previous.value, reason=reason)
    session.flush()
    return True


def restore_declared_role(session: Session, server: str) -> bool:
    """Cameras are back on a server that recovery made redundant: it takes its declared role (primary) again."""
    srv = inventory.get_server(session, server)
    if srv.role == Role.redundant and srv.declared_role == Role.primary and inventory.list_cameras(session,
                                                                                                    current=server):
        return set_role(session, server, Role.primary, reason="cameras swapped back home")
    return False


def swap_back_due(session: Session, now: datetime | None = None) -> list[str]:
    """Servers healthy for ``auto_swap_back_after_s`` with cameras failed over away from them.

    Empty when the setting is off. A server is due once per recovery: a ``ServerEvent`` of kind
    ``auto-swap-back`` newer than its last state change marks it as started.
    """
    after = inventory.farm_settings(session).auto_swap_back_after_s
    if after is None:
        return []
    now = now or utcnow()
    due = []
    for srv in inventory.list_servers(session):
        if srv.state != ServerState.up or srv.maintenance or srv.state_changed_at is None:
            continue
        if (now - srv.state_changed_at).total_seconds() < after:
            continue
        if not open_failover_events(session, from_server=srv.name):
            continue
        started = session.exec(select(ServerEvent).where(ServerEvent.server == srv.name,
                                                         ServerEvent.kind == "auto-swap-back",
                                                         col(ServerEvent.at) >= srv.state_changed_at)).first()
        if started is None:
            due.append(srv.name)
    return due

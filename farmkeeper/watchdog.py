"""The recording watchdog and storage failure: a server that answers can still record nothing.

**Recording watchdog.** A camera should record when its state is ``recording`` (or ``stalled``) and
its ``current`` server is ``up``, answering its probes and not in maintenance. Its newest closed
segment is found cheaply: the stream-0 hour folders of its write paths (the drives of its storage
path list that the server has), newest hour first, only as far back as ``stall_after`` needs — never
a walk. A camera is alive until ``max(newest segment start + usual segment length, since) +
stall_after``, where ``since`` is when it became expected on that server (first look, a move, the
server coming up). Past that, and ``CLOSE_LAG_S`` more for a segment ending just then to close, it
becomes ``stalled`` (once); a new closed segment that is recent (within ``stall_after / 2``) brings it
back to ``recording`` (once). A stall needs ``stall_after`` of silence and a resume a fresh segment,
so jitter shorter than ``stall_after`` never flaps. Only cameras that may have changed are looked at
each sweep: a recording camera once its alive time has run out, a stalled one every sweep. A watching
run keeps its cameras in memory and looks for the next segments by name (``WatchMemory``).

**Storage failure.** Every volume of a live server gets a probe: a small file ``.farmkeeper-probe``
at the share root is overwritten (never deleted: it is outside ``video/`` and ``meta/``), and the free
space is compared with the floor (``min_free``, ``min_free_percent``). A volume that cannot be written
(gone, read-only, probe refused) or is below its floor with no footage left to delete, continuously
for ``down_after``, is *failed*; the cameras of that server whose write paths are all on failed
volumes are failed over like a server's (``farmkeeper.failover.apply_camera_failover``). A volume that
takes its probe again is *recovered*, and the server is treated as a recovered server
(``apply_recovery``: leftover cameras record again; without movable cameras it is redundant).

The I/O (listing, probing) happens between two short transactions: ``plan_*`` reads the inventory,
``look``/``probe_volumes`` touch the volumes (one thread per server), ``record_*`` writes the result.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlmodel import Session, col, select

from farmkeeper import inventory
from farmkeeper.db import BulkUpdate
from farmkeeper.errors import FarmkeeperError, SpecError
from farmkeeper.failover import camera_drives
from farmkeeper.layout import VIDEO, segment_start, video_hour_folder
from farmkeeper.models import (
    Camera,
    CameraState,
    CameraWatch,
    RetentionVolume,
    Server,
    ServerState,
    VolumeHealth,
    utcnow,
)
from farmkeeper.models import Volume as VolumeRow
from farmkeeper.specs import StoragePathList, WindowsPath
from farmkeeper.storage.base import Space, Volume

logger = logging.getLogger(__name__)

PROBE_NAME = ".farmkeeper-probe"
WATCH_STREAM = 0                  # stream 0 is always recorded; its segments stand for the camera
MAX_THREADS = 32

VolumeOpener = Callable[[str, str], Volume]   # (server, drive) → an open volume (the caller closes it)
C = TypeVar("C")
R = TypeVar("R")


# --- recording watchdog: plan -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Planned:
    """What the plan read of a camera (its row and watch row), so recording the sighting reads nothing again.

    Every write made from it is a compare-and-set on the camera's ``current`` (and state): a camera moved
    between the plan and the record is left alone, and its watch row is renewed at its next look."""

    state: CameraState
    stall_after_s: float | None          # the camera's own (None: the farm's)
    failover_stalled: bool | None
    movable: bool
    up_at: datetime | None               # its server's last state change
    watch: _Watch | None


@dataclass(slots=True)
class Quick:
    """A due camera of a watching run whose next segments are looked for by their exact names alone (a ``stat``
    each, ``look_names``): the segments after the newest one it saw, as far as they can have closed by now.

    Only a recording camera seen before on the same drive gets one. Found names that keep the camera alive past
    now settle it in memory (``WatchMemory.settle``); anything else (a missing first name, a found one too old to
    keep it alive, an error) is planned again as a ``WatchCheck`` that lists its folders. So names can only save
    a listing: every stall and every resume is decided on a listing."""

    camera: str
    server: str
    drive: str
    names: tuple[str, ...]
    found: int = 0                  # the newest name found (1: the first; 0: none; -1: the volume could not be read)


@dataclass(frozen=True, slots=True)
class WatchCheck:
    """One camera to look at: the hour folders (newest first) on each of its write drives."""

    camera: str
    server: str
    drives: tuple[str, ...]
    folders: tuple[str, ...]
    planned: Planned | None = field(default=None, compare=False, repr=False)

    @property
    def length_known(self) -> bool:
        """The camera's usual segment length is known on this server (its watch row has it)."""
        watch = self.planned.watch if self.planned is not None else None
        return watch is not None and watch.server == self.server and bool(watch.segment_s)


class _HourFolders:
    """The stream-0 hour folders of many cameras at one ``now``, newest first (at most 48): the date/hour part
    of each folder is formatted once per plan, not once per camera."""

    def __init__(self, now: datetime) -> None:
        self.now_hour = int(now.timestamp()) // 3600
        self._tails: list[str] = []

    def back_to(self, camera: str, back_to: datetime) -> tuple[str, ...]:
        """``camera``'s folders from ``now``'s hour back to ``back_to``'s hour."""
        count = min(48, max(0, self.now_hour - int(back_to.timestamp()) // 3600 + 1))
        while len(self._tails) < count:
            moment = datetime.fromtimestamp((self.now_hour - len(self._tails)) * 3600, UTC)
            self._tails.append(video_hour_folder("", WATCH_STREAM, moment).split("/", 3)[3])
        return tuple(f"{VIDEO}/{camera}/{WATCH_STREAM}/{tail}" for tail in self._tails[:count])


def _alive_until(last: datetime | None, segment_s: float | None, since: datetime, stall_after_s: float) -> datetime:
    alive = since if last is None else max(since, last + timedelta(seconds=segment_s or 0.0))
    return alive + timedelta(seconds=stall_after_s)


class _PlanContext:
    """What every plan reads once per sweep (small tables: farm, servers, volumes, failed volumes), and the
    caches that keep the per-camera work small."""

    def __init__(self, session: Session, now: datetime) -> None:
        self.now = now
        self.farm = inventory.farm_settings(session)
        self.default_drive = WindowsPath.parse(inventory.storage_settings(session).default_path).drive
        self.live = {name: changed for name, changed, state, maintenance, failing in session.execute(
            sa.select(Server.name, Server.state_changed_at, Server.state, Server.maintenance,  # type: ignore[call-overload]
                      Server.failing_since))
            if state == ServerState.up and not maintenance and failing is None}   # failing probe: health's job
        self.drives: dict[str, set[str]] = {}
        for server_name, drive in session.execute(sa.select(VolumeRow.server_name, VolumeRow.drive)):  # type: ignore[call-overload]
            self.drives.setdefault(server_name, set()).add(drive.upper())
        self.failed = failed_volumes(session)
        self.hours = _HourFolders(now)
        self._paths: dict[str | None, tuple[str, ...]] = {}
        self._own: dict[tuple[str | None, str], tuple[str, ...]] = {}
        self.names = _SegmentNames()

    def own_drives(self, storage_path: str | None, current: str) -> tuple[str, ...]:
        """The drives of ``storage_path`` that ``current`` has (parsed once per path and server)."""
        own = self._own.get((storage_path, current))
        if own is None:
            if storage_path not in self._paths:
                self._paths[storage_path] = _drives(storage_path, self.default_drive)
            own = self._own[(storage_path, current)] = tuple(
                d for d in self._paths[storage_path] if d in self.drives.get(current, ()))
        return own

    def quick(self, cam_id: str, known: _Known, now_s: float, stall_after: float) -> Quick | None:
        """``known``'s next segment names when it can be settled by name in this sweep (a recording camera seen
        before on this server, on a drive that has not failed), else ``None``: planned as a ``WatchCheck``.
        (Runs for every due camera of every sweep: written for speed.)"""
        cam, watch, seen = known.cam, known.watch, known.seen
        current = cam[0]
        if (cam[1] != _RECORDING or seen is None or watch is None or watch.server != current
                or watch.last_segment_at is None or not watch.segment_s or current not in self.live):
            return None
        own = self.own_drives(cam[2], current)
        if seen[0] not in own or (self.failed and all((current, d) in self.failed for d in own)):
            return None
        seg = watch.segment_s
        start = watch.last_segment_at.timestamp() + seg
        closed_by = now_s - seg - CLOSE_LAG_S     # a segment ending just now is rarely closed yet: not looked for
        if start > closed_by:
            return None
        video0, ext = self.names.video0, seen[1]
        names = [video0(cam_id, ext, int(start))]
        for _ in range(min(MAX_AHEAD, int(stall_after // seg) + 2) - 1):
            start += seg
            if start > closed_by:
                break
            names.append(video0(cam_id, ext, int(start)))
        return Quick(cam_id, current, seen[0], tuple(names))

    def check(self, cam_id: str, cam: _CameraRow, watch: _Watch | None, *, everyone: bool = False
              ) -> WatchCheck | None:
        """The look ``cam_id`` is due in this sweep (``everyone``: due or not), ``None`` when none: not on a live
        server, nothing to record on, storage failure owns it, or seen recently enough."""
        current, state, storage_path, cam_stall, cam_failover_stalled, movable = cam
        if current not in self.live:
            return None
        own = self.own_drives(storage_path, current)
        if not own or all((current, d) in self.failed for d in own):
            return None                   # nothing to record on, or storage failure owns it
        now = self.now
        stall_after = cam_stall if cam_stall is not None else self.farm.stall_after_s
        back_to = now - timedelta(seconds=stall_after + 3600)
        due = True
        up_at = self.live[current]
        if watch is not None and watch.server == current and watch.since is not None:
            due = state == CameraState.stalled or now >= _alive_until(watch.last_segment_at, watch.segment_s,
                                                                      _since(watch, up_at), stall_after + CLOSE_LAG_S)
            if watch.last_segment_at is not None:
                back_to = max(back_to, watch.last_segment_at)
        if not (due or everyone):
            return None
        planned = Planned(state, cam_stall, cam_failover_stalled, movable, up_at, watch)
        return WatchCheck(cam_id, current, own, self.hours.back_to(cam_id, back_to), planned)


def _since(watch: _Watch, up_at: datetime | None) -> datetime:
    """Since when the camera is expected to record on its server: its watch row's start, or the server's last
    change of state when later (a server back up gets ``stall_after`` again)."""
    return max(watch.since, up_at) if up_at is not None else watch.since


class _SegmentNames:
    """Stream-0 segment paths by start (whole seconds): the date/hour parts formatted once per hour, the same
    text as ``FootagePath.relpath`` (tested), at a few hundred nanoseconds a name."""

    def __init__(self) -> None:
        self._hours: dict[int, tuple[str, str]] = {}

    def video0(self, camera: str, ext: str, start: int) -> str:
        hour, rest = divmod(start, 3600)
        parts = self._hours.get(hour)
        if parts is None:
            h = datetime.fromtimestamp(hour * 3600, UTC)
            parts = self._hours[hour] = (f"{h.year:04d}-{h.month:02d}-{h.day:02d}/{h.hour:02d}",
                                         f"{h.year:04d}{h.month:02d}{h.day:02d}T{h.hour:02d}")
        minute, second = divmod(rest, 60)
        return f"{VIDEO}/{camera}/{WATCH_STREAM}/{parts[0]}/{parts[1]}{minute:02d}{second:02d}Z.{ext}"


_CameraRow = tuple[Any, ...]     # (current, state, storage_path, stall_after_s, failover_stalled, movable)
_CAMERA_COLUMNS = (Camera.id, Camera.current, Camera.state, Camera.storage_path, Camera.stall_after_s,
                   Camera.failover_stalled, Camera.movable)
_SHOULD_RECORD = (CameraState.recording, CameraState.stalled)
MAX_AHEAD = 8                    # segment names looked for ahead of the last one seen
CLOSE_LAG_S = 2.0                # a recorder closes a segment within this long of its end: a camera is judged
#                                  this long after its stall_after ran out (the segment ending just then counts;
#                                  without it a stall_after of one segment length flapped), and a segment is looked
#                                  for by name once it ended this long ago


def plan_checks(session: Session, now: datetime | None = None, *, everyone: bool = False) -> list[WatchCheck]:
    """The cameras to look at in this sweep (``everyone``: all that should record, due or not), from one query
    of plain rows (no ORM objects) over the farm's cameras and their watch rows (a watching run plans from its
    memory instead: ``WatchMemory.plan``)."""
    now = now or utcnow()
    ctx = _PlanContext(session, now)
    maybe_due = sa.true() if everyone else sa.or_(     # seen within the shortest stall_after: certainly not due
        col(CameraWatch.camera_id).is_(None), col(CameraWatch.server) != col(Camera.current),
        col(Camera.state) == CameraState.stalled, col(CameraWatch.last_segment_at).is_(None),
        col(CameraWatch.last_segment_at) <= now - timedelta(seconds=_shortest_stall_after(session, ctx.farm)))
    checks = []
    for cam_id, cam, watch in _camera_rows(session, col(Camera.current).in_(list(ctx.live)), maybe_due):
        check = ctx.check(cam_id, cam, watch, everyone=everyone)
        if check is not None:
            checks.append(check)
    return checks


def _camera_rows(session: Session, *where: Any) -> Iterator[tuple[str, _CameraRow, _Watch | None]]:
    """(id, row, watch row) of the cameras that should record, as plain rows (no ORM objects: 10,000 of them)."""
    watch = CameraWatch.__table__.c  # type: ignore[attr-defined]
    rows = session.execute(
        sa.select(*_CAMERA_COLUMNS, *(watch[name] for name in _WATCH_COLUMNS))  # type: ignore[call-overload]
        .outerjoin(CameraWatch, CameraWatch.camera_id == Camera.id)
        .where(col(Camera.state).in_(_SHOULD_RECORD), *where)).all()
    for cam_id, *rest in rows:
        w = rest[6:]
        yield cam_id, tuple(rest[:6]), _Watch(*w) if w[0] is not None else None


@dataclass(slots=True)
class _Known:
    """One camera as a watching run knows it: its row, its watch row (perhaps newer than the inventory's), where
    its newest segment was seen (drive, extension), and a time it is certainly not due before."""

    cam: _CameraRow
    watch: _Watch | None
    seen: tuple[str, str] | None = None
    due_at: float = float("-inf")


class WatchMemory:
    """What a watching run remembers of its cameras between sweeps (one-off sweeps have none).

    The inventory stays the truth: the cameras (``current``, ``state``, storage path, overrides) are reloaded
    whenever the camera table's fingerprint (rows, sum of ``version``, every writer bumps it) or the farm's
    watchdog settings change, and every ``RELOAD_S`` in any case; the small tables (servers, volumes, failed
    volumes) are read every sweep. A due camera seen before is looked for by the names of its next segments
    (``Quick``); one found alive is settled in memory. Stalls, resumes and first or moved watch rows are
    written at once (``record_sightings``); a watch row that only saw a newer segment is written at the next
    checkpoint (every ``CHECKPOINT_S``, and when the watch ends). Losing those (a killed watcher) costs nothing
    but an early look: the newest segment is always read from the volume before anything is decided.
    """

    RELOAD_S = 300.0
    CHECKPOINT_S = 300.0

    def __init__(self) -> None:
        self.cameras: dict[str, _Known] = {}
        self.fingerprint: tuple[Any, ...] | None = None
        self.loaded_at: datetime | None = None
        self.saved_at: datetime | None = None
        self.unsaved: dict[str, _Watch] = {}
        self.reloads = 0

    @staticmethod
    def _fingerprint(session: Session, farm: Any) -> tuple[Any, ...]:
        table = Camera.__table__  # type: ignore[attr-defined]
        count, versions, ids = session.execute(sa.select(
            sa.func.count(), sa.func.coalesce(sa.func.sum(table.c.version), 0),
            sa.func.coalesce(sa.func.sum(sa.func.length(table.c.id)), 0))).one()
        return int(count), int(versions), int(ids), float(farm.stall_after_s), bool(farm.failover_stalled)

    def refresh(self, session: Session, ctx: _PlanContext) -> None:
        """Reload the cameras when the inventory's changed (or ``RELOAD_S`` passed); keep what was seen since
        unless another writer changed the camera's watch row meanwhile (then the inventory's row wins)."""
        fingerprint = self._fingerprint(session, ctx.farm)
        if fingerprint == self.fingerprint and self.loaded_at is not None and \
                (ctx.now - self.loaded_at).total_seconds() < self.RELOAD_S:
            return
        old, self.cameras = self.cameras, {}
        unsaved: dict[str, _Watch] = {}
        for cam_id, cam, stored in _camera_rows(session):
            known = old.get(cam_id)
            mine = known.watch if known is not None else None
            keep = mine is not None and stored is not None and (
                mine.server == stored.server and mine.since == stored.since and mine.stalled_at == stored.stalled_at
                and (mine.last_segment_at or _EPOCH) >= (stored.last_segment_at or _EPOCH))
            entry = _Known(cam, mine if keep else stored, known.seen if keep and known is not None else None)
            if keep and cam_id in self.unsaved:
                unsaved[cam_id] = entry.watch  # type: ignore[assignment]
            self._plan_next(entry, ctx.farm)
            self.cameras[cam_id] = entry
        self.unsaved = unsaved            # never write back over a row another writer changed
        self.fingerprint, self.loaded_at = fingerprint, ctx.now
        self.reloads += 1

    @staticmethod
    def _plan_next(entry: _Known, farm: Any) -> None:
        """``entry.due_at``: its alive time (``_alive_until``, without its server's restart, which only delays)."""
        watch, current, cam_stall = entry.watch, entry.cam[0], entry.cam[3]
        if watch is None or watch.server != current:
            entry.due_at = _NEVER
            return
        stall_after = cam_stall if cam_stall is not None else farm.stall_after_s
        entry.due_at = _alive_until(watch.last_segment_at, watch.segment_s, watch.since,
                                    stall_after + CLOSE_LAG_S).timestamp()

    def plan(self, session: Session, now: datetime | None = None) -> WatchPlan:
        """The cameras due a look in this sweep: by name (``Quick``) when seen before, else a ``WatchCheck``."""
        ctx = _PlanContext(session, now or utcnow())
        self.refresh(session, ctx)
        plan = WatchPlan(ctx)
        now_s = ctx.now.timestamp()
        stalled, farm_stall_after = CameraState.stalled, ctx.farm.stall_after_s
        up_at_s = {server: up_at.timestamp() for server, up_at in ctx.live.items() if up_at is not None}
        for cam_id, known in self.cameras.items():   # a pass over 10,000 costs less than a queue of due times
            if known.due_at > now_s and known.cam[1] != stalled:
                continue                  # certainly not due (its server's restart only makes it later)
            stall_after = known.cam[3] if known.cam[3] is not None else farm_stall_after
            if known.cam[1] != stalled and up_at_s.get(known.cam[0], _NEVER) + stall_after + CLOSE_LAG_S > now_s:
                continue                  # its server came up lately: not due (as ``_PlanContext.check`` says)
            quick = ctx.quick(cam_id, known, now_s, stall_after)
            if quick is not None:
                plan.quick.append(quick)
                continue
            check = ctx.check(cam_id, known.cam, known.watch)
            if check is not None:
                plan.checks.append(check)
        return plan

    def settle(self, plan: WatchPlan) -> list[WatchCheck]:
        """Settle the looked-at ``plan.quick`` whose names found keep them alive past now (their watch rows kept
        for the checkpoint); the others are planned as ``WatchCheck``s (listed), returned."""
        ctx = plan.ctx
        now_s = ctx.now.timestamp()
        farm_stall_after = ctx.farm.stall_after_s
        checks = []
        for quick in plan.quick:
            known = self.cameras[quick.camera]
            watch = known.watch
            assert watch is not None and watch.last_segment_at is not None and watch.segment_s
            if quick.found > 0:
                stall_after = known.cam[3] if known.cam[3] is not None else farm_stall_after
                seg = watch.segment_s
                newest = int(watch.last_segment_at.timestamp() + quick.found * seg)   # the name's start
                if newest + seg + stall_after > now_s:     # alive past now: a listing would say no less
                    watch.last_segment_at = datetime.fromtimestamp(newest, UTC)
                    watch.checked_at = ctx.now
                    self.unsaved[quick.camera] = watch
                    self._plan_next(known, ctx.farm)
                    plan.settled += 1
                    continue
            check = ctx.check(quick.camera, known.cam, watch)
            if check is not None:
                checks.append(check)
        return checks

    def saw(self, cam_id: str, watch: _Watch, state: CameraState, sighting: Sighting, farm: Any, *,
            written: bool, fresh: bool, bumped: bool) -> None:
        """Remember what ``record_sightings`` made of a sighting (``written``: the row is in the inventory now;
        ``fresh``: it saw a newer segment, to write at the checkpoint unless written)."""
        known = self.cameras.get(cam_id)
        if known is None:
            return
        known.watch = watch
        known.cam = (known.cam[0], state, *known.cam[2:])
        if sighting.drive is not None and sighting.ext is not None:
            known.seen = (sighting.drive, sighting.ext)
        self._plan_next(known, farm)
        if written:
            self.unsaved.pop(cam_id, None)
        elif fresh or cam_id in self.unsaved:
            self.unsaved[cam_id] = watch
        if bumped and self.fingerprint is not None:     # our own compare-and-set bumped the camera's version
            self.fingerprint = (self.fingerprint[0], self.fingerprint[1] + 1, *self.fingerprint[2:])

    def checkpoint_due(self, now: datetime) -> bool:
        return bool(self.unsaved) and (self.saved_at is None
                                       or (now - self.saved_at).total_seconds() >= self.CHECKPOINT_S)

    def checkpoint(self, session: Session, now: datetime, *, force: bool = False) -> int:
        """Write the watch rows that only saw newer segments (every ``CHECKPOINT_S``; ``force``: now)."""
        if self.saved_at is None:
            self.saved_at = now
        if not self.unsaved or not (force or (now - self.saved_at).total_seconds() >= self.CHECKPOINT_S):
            return 0
        rows = [{k: getattr(w, k) for k in _WATCH_COLUMNS} for w in self.unsaved.values()]
        _UPDATE_WATCH.execute(session.connection(), rows)
        self.unsaved, self.saved_at = {}, now
        return len(rows)


@dataclass
class WatchPlan:
    """One sweep of a watching run: the cameras looked for by name, those listed, how many names settled."""

    ctx: _PlanContext
    quick: list[Quick] = field(default_factory=list)
    checks: list[WatchCheck] = field(default_factory=list)
    settled: int = 0


def look_deadline(farm: Any) -> float:
    """The I/O of one watchdog step never takes longer than half a health interval (at least 2 s)."""
    return max(2.0, float(farm.health_interval_s) / 2)


def watch_sweep(memory: WatchMemory, sessions: Callable[[], AbstractContextManager[Session]],
                open_volume: VolumeOpener, now: datetime | None = None, *, local: Collection[str] = ()
                ) -> WatchUpdate:
    """One sweep of a watching run: plan from ``memory`` (one short transaction), look for the due cameras' next
    segments by name, list the folders of the others, record what changed (a second transaction, only when
    something was listed or the checkpoint is due). No look waits longer than ``look_deadline``."""
    with sessions() as session:
        plan = memory.plan(session, now)
    now, deadline_s = plan.ctx.now, look_deadline(plan.ctx.farm)
    look_names(plan.quick, open_volume, deadline_s, local)
    checks = plan.checks + memory.settle(plan)
    sightings = look(checks, open_volume, deadline_s, local) if checks else []
    if not sightings and not memory.checkpoint_due(now):
        return WatchUpdate(checked=plan.settled)
    with sessions() as session:
        update = record_sightings(session, sightings, now, checks=checks, memory=memory)
    update.checked += plan.settled
    return update


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RECORDING = CameraState.recording
_NEVER = float("-inf")


def _servers_up_at(session: Session) -> dict[str, datetime | None]:
    """Every server's last state change (plain rows: this runs every sweep)."""
    return dict(session.execute(sa.select(Server.name, Server.state_changed_at)).all())  # type: ignore[call-overload]


def _shortest_stall_after(session: Session, farm: Any) -> float:
    shortest = session.execute(sa.select(sa.func.min(Camera.stall_after_s))).scalar()
    return float(min(farm.stall_after_s, shortest)) if shortest is not None else float(farm.stall_after_s)


def _drives(storage_path: str | None, default_drive: str) -> tuple[str, ...]:
    if not storage_path:
        return (default_drive,)
    try:
        return tuple(sorted(StoragePathList.parse(storage_path).drives))
    except SpecError:
        return (default_drive,)


# --- recording watchdog: look -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Sighting:
    """The newest closed segment of a camera (start) and the usual segment length, or why not known; the drive
    and file extension it was found with (a watching run looks for the next ones by name)."""

    camera: str
    newest: datetime | None = None
    segment_s: float | None = None
    error: str | None = None
    drive: str | None = None
    ext: str | None = None


NEWEST_STARTS = 4           # the usual segment length is the shortest step among the newest 4 segments


def closed_starts(volume: Volume, folder: str, newest: int = NEWEST_STARTS) -> list[tuple[datetime, str]]:
    """(start, extension) of the newest ``newest`` closed segments in one hour folder (a missing folder: none),
    sorted by start.

    Segment names begin with their fixed-width UTC stamp, so the newest names sort last: only those are
    parsed (an hour of 1-minute segments is 60 names per camera; a sweep looks at hundreds of cameras).
    """
    starts: dict[datetime, str] = {}
    for name in sorted(volume.folder_names(folder), reverse=True):
        start = segment_start(name)
        if start is not None:
            if start not in starts:      # a conflict copy (same stamp, ``~server``) is the same moment
                starts[start] = name.rsplit(".", 1)[1]
            if len(starts) >= newest:
                break
    return sorted(starts.items())


def newest_segment(volume: Volume, folders: Sequence[str], *, length_known: bool = False
                   ) -> tuple[datetime | None, float | None, str | None]:
    """The newest closed segment (newest non-empty folder first), the usual segment length there, and the
    newest segment's file extension.

    One segment only in the newest folder (the first minutes of an hour): the one before it is in the
    previous hour, listed only when the usual length is not known yet (``length_known``: the watch row has it).
    """
    found: list[tuple[datetime, str]] = []
    for folder in folders:
        found = closed_starts(volume, folder) + found
        if len(found) >= (1 if length_known else 2):
            break
    if not found:
        return None, None, None
    starts = [start for start, _ in found]
    steps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False) if b > a]
    return starts[-1], (min(steps) if steps else None), found[-1][1]   # the usual length: a gap is never shorter


def look_one(check: WatchCheck, open_volume: VolumeOpener) -> Sighting:
    """The newest closed segment of one camera over its write drives (errors become ``Sighting.error``)."""
    newest: datetime | None = None
    length: float | None = None
    where: tuple[str | None, str | None] = (None, None)
    errors = []
    for drive in check.drives:
        try:
            volume = open_volume(check.server, drive)
            start, seg, ext = newest_segment(volume, check.folders, length_known=check.length_known)
        except (FarmkeeperError, OSError) as exc:
            errors.append(f"{drive}: {exc}")
            continue
        if start is not None and (newest is None or start > newest):
            newest, length, where = start, seg, (drive, ext)
    if newest is None and errors:
        return Sighting(check.camera, error="; ".join(errors)[:300])
    return Sighting(check.camera, newest, length, drive=where[0], ext=where[1])


def look(checks: Sequence[WatchCheck], open_volume: VolumeOpener, deadline_s: float | None = None,
         local: Collection[str] = ()) -> list[Sighting]:
    """Look at every check; one thread per SMB server (its volumes' connections are reused by its cameras),
    one for the servers in ``local`` (see ``_per_server``).

    A server that has not answered within ``deadline_s`` gets an error sighting: a hung share never
    holds up the sweep (and so the detection of down servers) for longer than that.
    """
    by_server: dict[str, list[WatchCheck]] = {}
    for check in checks:
        by_server.setdefault(check.server, []).append(check)

    def one_server(items: list[WatchCheck]) -> list[Sighting]:
        opened: dict[tuple[str, str], Volume] = {}

        def open_once(server: str, drive: str) -> Volume:     # once per drive and lane, not once per camera
            volume = opened.get((server, drive))
            if volume is None:
                volume = opened[(server, drive)] = open_volume(server, drive)
            return volume

        return [look_one(c, open_once) for c in items]

    def late(items: list[WatchCheck]) -> list[Sighting]:
        return [Sighting(c.camera, error=f"no answer from {c.server} within {deadline_s:g} s") for c in items]

    return _per_server(by_server, one_server, late, deadline_s, "watchdog", local)


def look_names(quick: Sequence[Quick], open_volume: VolumeOpener, deadline_s: float | None = None,
               local: Collection[str] = ()) -> None:
    """Look for each ``Quick``'s names, newest first, until one is there (``Quick.found``; -1 when the volume could
    not be read: the listing that follows says why); lanes and deadline as ``look``. In a steady state the newest
    name is there: one ``stat`` a camera (a gap before it changes nothing: only the newest segment counts)."""
    by_server: dict[str, list[Quick]] = {}
    for q in quick:
        by_server.setdefault(q.server, []).append(q)

    def one_server(items: list[Quick]) -> list[int]:
        opened: dict[str, Volume] = {}
        found = []
        for q in items:
            try:
                volume = opened.get(q.drive)
                if volume is None:
                    volume = opened[q.drive] = open_volume(q.server, q.drive)
                found.append(volume.newest_file(q.names))
            except (FarmkeeperError, OSError):
                found.append(-1)
        return found

    def late(items: list[Quick]) -> list[int]:
        return [-1] * len(items)

    found = _per_server(by_server, one_server, late, deadline_s, "watchdog", local)
    for q, n in zip((q for items in by_server.values() for q in items), found, strict=True):
        q.found = n              # set here, not in the lanes: a late lane's thread never writes a Quick


# --- recording watchdog: record -----------------------------------------------------------------

@dataclass(frozen=True)
class Stall:
    camera: str
    server: str
    last_segment_at: datetime | None
    since: datetime


@dataclass(frozen=True)
class Resume:
    camera: str
    server: str
    last_segment_at: datetime
    stalled_at: datetime | None


@dataclass
class WatchUpdate:
    checked: int = 0
    stalled: list[Stall] = field(default_factory=list)
    resumed: list[Resume] = field(default_factory=list)
    fail_over: dict[str, list[str]] = field(default_factory=dict)   # server → stalled cameras to move
    errors: dict[str, str] = field(default_factory=dict)           # camera → why it could not be looked at


@dataclass(slots=True)
class _Watch:
    """A ``camera_watch`` row as plain values (ORM objects cost ~1 ms each at 10,000 cameras)."""

    camera_id: str
    server: str
    since: datetime
    last_segment_at: datetime | None = None
    segment_s: float | None = None
    checked_at: datetime | None = None
    stalled_at: datetime | None = None

    def copy(self) -> _Watch:
        return _Watch(self.camera_id, self.server, self.since, self.last_segment_at, self.segment_s, self.checked_at,
                      self.stalled_at)


_WATCH_COLUMNS = ("camera_id", "server", "since", "last_segment_at", "segment_s", "checked_at", "stalled_at")


def _load(session: Session, ids: list[str]) -> tuple[dict[str, Any], dict[str, _Watch]]:
    """The cameras' (current, state, stall_after_s, failover_stalled, movable) and their watch rows, as plain rows."""
    cams: dict[str, Any] = {}
    watches: dict[str, _Watch] = {}
    for chunk in range(0, len(ids), 500):                  # two queries per 500 cameras, not two per camera
        part = ids[chunk:chunk + 500]
        cams |= {row[0]: row[1:] for row in session.execute(
            sa.select(Camera.id, Camera.current, Camera.state, Camera.stall_after_s,  # type: ignore[call-overload]
                      Camera.failover_stalled, Camera.movable).where(col(Camera.id).in_(part)))}
        table = CameraWatch.__table__  # type: ignore[attr-defined]
        watches |= {row[0]: _Watch(*row) for row in session.execute(
            sa.select(*(table.c[name] for name in _WATCH_COLUMNS)).where(table.c.camera_id.in_(part)))}
    return cams, watches


def _planned(session: Session, sightings: list[Sighting], checks: Sequence[WatchCheck]
             ) -> tuple[dict[str, Any], dict[str, _Watch], dict[str, datetime | None]]:
    """The cameras, watch rows and servers' state changes as the plan read them; read now for the
    sightings that come without a plan (``_load``)."""
    cams: dict[str, Any] = {}
    watches: dict[str, _Watch] = {}
    up_at: dict[str, datetime | None] = {}
    unplanned = []
    by_camera = {c.camera: c for c in checks if c.planned is not None}
    for sighting in sightings:
        check = by_camera.get(sighting.camera)
        if check is None or check.planned is None:
            unplanned.append(sighting.camera)
            continue
        seen = check.planned
        cams[check.camera] = (check.server, seen.state, seen.stall_after_s, seen.failover_stalled, seen.movable)
        if seen.watch is not None:
            watches[check.camera] = seen.watch.copy()          # a copy: the check stays as planned
        up_at[check.server] = seen.up_at
    if unplanned:
        more_cams, more_watches = _load(session, unplanned)
        cams |= more_cams
        watches |= more_watches
        up_at = _servers_up_at(session) | up_at
    return cams, watches, up_at


def record_sightings(session: Session, sightings: Iterable[Sighting], now: datetime | None = None,
                     checks: Sequence[WatchCheck] = (), memory: WatchMemory | None = None) -> WatchUpdate:
    """Apply what was seen: stalled and resumed cameras (each reported once), cameras to fail over.

    With a watching run's ``memory``, a watch row that only saw a newer segment is kept there until its
    checkpoint (``WatchMemory``); every other change is written now, as without it."""
    now = now or utcnow()
    farm = inventory.farm_settings(session)
    where = {c.camera: c.server for c in checks}
    sightings = list(sightings)
    cams, watches, up_at = _planned(session, sightings, checks)
    update = WatchUpdate()
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for sighting in sightings:
        update.checked += 1
        cam_id = sighting.camera
        if cam_id not in cams:
            continue
        current, state, cam_stall, cam_failover_stalled, movable = cams[cam_id]
        if current is None or where.get(cam_id, current) != current:
            continue                                     # moved or removed while we looked
        if sighting.error is not None:
            update.errors[cam_id] = sighting.error
            continue
        watch = watches.get(cam_id)
        new_row = watch is None
        changed = watch is None or watch.server != current
        if watch is None or watch.server != current:
            watch = _Watch(cam_id, current, now)
        fresh = sighting.newest is not None and (watch.last_segment_at is None
                                                 or sighting.newest > watch.last_segment_at)
        if fresh and sighting.newest is not None:
            watch.last_segment_at = sighting.newest
            watch.segment_s = sighting.segment_s or watch.segment_s
        stall_after = cam_stall if cam_stall is not None else farm.stall_after_s
        server_up = up_at.get(current)
        since = max(watch.since, server_up) if server_up is not None else watch.since
        alive = _alive_until(watch.last_segment_at, watch.segment_s, since, 0.0)
        was_stalled = is_stalled = state == CameraState.stalled
        if not is_stalled and now >= alive + timedelta(seconds=stall_after + CLOSE_LAG_S) and \
                _set_state(session, cam_id, current, CameraState.recording, CameraState.stalled):
            watch.stalled_at, is_stalled = now, True
            update.stalled.append(Stall(cam_id, current, watch.last_segment_at, since))
        elif is_stalled and fresh and watch.last_segment_at is not None and \
                now < alive + timedelta(seconds=stall_after / 2) and \
                _set_state(session, cam_id, current, CameraState.stalled, CameraState.recording):
            update.resumed.append(Resume(cam_id, current, watch.last_segment_at, watch.stalled_at))
            watch.stalled_at, is_stalled = None, False
        write = changed or is_stalled != was_stalled or (fresh and memory is None)
        if write or fresh:
            watch.checked_at = now                       # rows written only when something changed
        if write:
            (inserts if new_row else updates).append({k: getattr(watch, k) for k in _WATCH_COLUMNS})
        if memory is not None:
            memory.saw(cam_id, watch, CameraState.stalled if is_stalled else CameraState.recording, sighting, farm,
                       written=write, fresh=fresh, bumped=is_stalled != was_stalled)
        failover_stalled = cam_failover_stalled if cam_failover_stalled is not None else farm.failover_stalled
        if failover_stalled and movable and is_stalled:
            update.fail_over.setdefault(current, []).append(cam_id)
    if inserts:         # first looks (rare once running): only for cameras still where they were planned
        still = {(cam, cur) for cam, cur in session.execute(
            sa.select(Camera.id, Camera.current).where(col(Camera.id).in_([r["camera_id"] for r in inserts])))}  # type: ignore[call-overload]
        inserts = [r for r in inserts if (r["camera_id"], r["server"]) in still]
    if inserts:
        session.execute(sa.insert(CameraWatch), inserts)
    _UPDATE_WATCH.execute(session.connection(), updates)     # one driver executemany by primary key
    if memory is not None:
        memory.checkpoint(session, now)
    session.flush()
    return update


_UPDATE_WATCH = BulkUpdate(CameraWatch.__table__, "camera_id", _WATCH_COLUMNS[1:])  # type: ignore[attr-defined]


def _set_state(session: Session, camera: str, current: str, old: CameraState, new: CameraState) -> bool:
    """Compare-and-set of a camera's state (another writer may have moved it meanwhile)."""
    table = Camera.__table__  # type: ignore[attr-defined]
    done = session.execute(sa.update(table).where(table.c.id == camera, table.c.state == old,
                                                  table.c.current == current)
                           .values(state=new, version=table.c.version + 1))
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


# --- storage failure ----------------------------------------------------------------------------

@dataclass(frozen=True)
class VolumeCheck:
    server: str
    drive: str
    min_free_bytes: int
    min_free_percent: float
    deletable: bool                  # the last retention sweep found footage on it (or has not swept it)


@dataclass(frozen=True)
class VolumeProbe:
    server: str
    drive: str
    error: str | None = None         # None: writable and above its floor (or footage left to delete)
    space: Space | None = None       # the free space read with the probe (None: not read)

    @property
    def ok(self) -> bool:
        return self.error is None


def failed_volumes(session: Session) -> set[tuple[str, str]]:
    return {(v.server, v.drive) for v in session.exec(select(VolumeHealth).where(VolumeHealth.failed == True))}  # noqa: E712


def plan_volume_checks(session: Session) -> list[VolumeCheck]:
    """Every volume of a live server (not in maintenance)."""
    storage = inventory.storage_settings(session)
    live = {name for name, state, maintenance in session.execute(
        sa.select(Server.name, Server.state, Server.maintenance))  # type: ignore[call-overload]
        if state == ServerState.up and not maintenance}
    swept = {(server, drive): swept_at is None or files > 0 for server, drive, swept_at, files in session.execute(
        sa.select(RetentionVolume.server, RetentionVolume.drive, RetentionVolume.swept_at,  # type: ignore[call-overload]
                  RetentionVolume.footage_files))}
    floor = (storage.min_free_bytes, storage.min_free_percent)
    return [VolumeCheck(server, drive, *floor, swept.get((server, drive), True))
            for server, drive in session.execute(   # plain rows: this runs every sweep over every volume
                sa.select(VolumeRow.server_name, VolumeRow.drive)  # type: ignore[call-overload]
                .order_by(VolumeRow.server_name, VolumeRow.drive))
            if server in live]


def probe_volume(check: VolumeCheck, volume: Volume, now: datetime) -> VolumeProbe:
    """Overwrite the probe file and compare the free space with the floor."""
    try:
        space = volume.probe(PROBE_NAME, f"farmkeeper probe {now.isoformat(timespec='microseconds')}\n".encode())
    except (FarmkeeperError, OSError) as exc:
        return VolumeProbe(check.server, check.drive, f"cannot write: {exc}"[:300])
    below = (check.min_free_bytes and space.free < check.min_free_bytes) or \
            (check.min_free_percent and space.total and space.free_percent < check.min_free_percent)
    if below and not check.deletable:
        return VolumeProbe(check.server, check.drive,
                           f"full: {space.free} bytes free, below the floor, and no footage left to delete", space)
    return VolumeProbe(check.server, check.drive, space=space)


def probe_volumes(checks: Sequence[VolumeCheck], open_volume: VolumeOpener, now: datetime | None = None,
                  deadline_s: float | None = None, local: Collection[str] = ()) -> list[VolumeProbe]:
    """Probe every volume; one thread per SMB server, one for the ``local`` ones (see ``_per_server``; no
    answer within ``deadline_s``: a failed probe)."""
    now = now or utcnow()
    by_server: dict[str, list[VolumeCheck]] = {}
    for check in checks:
        by_server.setdefault(check.server, []).append(check)

    def one_server(items: list[VolumeCheck]) -> list[VolumeProbe]:
        out = []
        for check in items:
            try:
                volume = open_volume(check.server, check.drive)
            except (FarmkeeperError, OSError) as exc:
                out.append(VolumeProbe(check.server, check.drive, f"cannot open: {exc}"[:300]))
                continue
            out.append(probe_volume(check, volume, now))
        return out

    def late(items: list[VolumeCheck]) -> list[VolumeProbe]:
        return [VolumeProbe(c.server, c.drive, f"no answer within {deadline_s:g} s") for c in items]

    return _per_server(by_server, one_server, late, deadline_s, "volume-probe", local)


class _Pools:
    """One long-lived thread pool per kind of work: every sweep reuses its threads (starting 32 threads per
    sweep cost more than the watchdog's own work). A pool that a deadline left with hung work is dropped
    (``shutdown(wait=False)``: its threads end when the share answers or times out) and the next sweep
    gets a fresh one, so a hung share never takes threads from later sweeps."""

    def __init__(self) -> None:
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> ThreadPoolExecutor:
        with self._lock:
            pool = self._pools.get(name)
            if pool is None:
                pool = self._pools[name] = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix=f"fk-{name}")
            return pool

    def discard(self, name: str, pool: ThreadPoolExecutor) -> None:
        with self._lock:
            if self._pools.get(name) is pool:
                del self._pools[name]
        pool.shutdown(wait=False, cancel_futures=True)


_POOLS = _Pools()


def _per_server(groups: dict[str, list[C]], work: Callable[[list[C]], list[R]], late: Callable[[list[C]], list[R]],
                deadline_s: float | None, name: str, local: Collection[str] = ()) -> list[R]:
    """``work`` on each server's group; groups not done by the deadline give ``late`` results.

    Each server reached over SMB gets its own thread (its round trips overlap the others'). The servers in
    ``local`` (volumes on local paths: plain syscalls, nothing to overlap) share one thread: 200 threads
    contending for the GIL over microsecond syscalls cost 4x the work itself. A hung local mount makes that
    lane late (every server in it reported so), never the sweep.
    """
    if not groups:
        return []
    pool = _POOLS.get(name)
    shared = [server for server in groups if server in local]
    lanes = [[server] for server in groups if server not in local] + ([shared] if shared else [])

    def run(servers: list[str]) -> dict[str, list[R]]:
        return {server: work(groups[server]) for server in servers}

    futures = [(lane, pool.submit(run, lane)) for lane in lanes]
    done, pending = wait([f for _, f in futures], timeout=deadline_s)
    if pending:                       # a hung share holds a thread: this pool is left to finish on its own
        _POOLS.discard(name, pool)
    results: dict[str, list[R]] = {}
    for lane, future in futures:
        results |= future.result() if future in done else {server: late(groups[server]) for server in lane}
    return [r for server in groups for r in results[server]]


@dataclass(frozen=True)
class VolumeTransition:
    server: str
    drive: str
    failed: bool                     # True: failed now; False: recovered
    error: str | None = None


@dataclass
class VolumeUpdate:
    transitions: list[VolumeTransition] = field(default_factory=list)
    fail_over: dict[str, list[str]] = field(default_factory=dict)   # server → cameras all on failed volumes
    spaces: dict[str, tuple[int, int]] = field(default_factory=dict)  # "SERVER:DRIVE" → (total, free) read now

    @property
    def recovered_servers(self) -> list[str]:
        return sorted({t.server for t in self.transitions if not t.failed})


def record_volume_probes(session: Session, probes: Iterable[VolumeProbe], now: datetime | None = None) -> VolumeUpdate:
    """The volume state machine (failed after ``down_after`` of failures, recovered on a good probe).

    A healthy volume without a row writes nothing: a steady farm costs one read per sweep.
    """
    now = now or utcnow()
    down_after = timedelta(seconds=inventory.farm_settings(session).down_after_s)
    rows = {(r.server, r.drive): r for r in session.exec(select(VolumeHealth))}
    update = VolumeUpdate()
    for probe in probes:
        if probe.space is not None:
            update.spaces[f"{probe.server}:{probe.drive}"] = (probe.space.total, probe.space.free)
        row = rows.get((probe.server, probe.drive))
        if probe.ok:
            if row is None or (not row.failed and row.failing_since is None):
                continue
            if row.failed:
                update.transitions.append(VolumeTransition(probe.server, probe.drive, False))
                row.failed, row.changed_at = False, now
            row.failing_since, row.error, row.checked_at = None, None, now
            session.add(row)
            continue
        row = row or VolumeHealth(server=probe.server, drive=probe.drive)
        stale = row.checked_at is not None and now - row.checked_at > down_after
        if row.failing_since is None or (stale and not row.failed):
            row.failing_since = now           # a gap in probing restarts the count (as for servers)
        row.error = probe.error
        if not row.failed and now - row.failing_since >= down_after:
            row.failed, row.changed_at = True, now
            update.transitions.append(VolumeTransition(probe.server, probe.drive, True, probe.error))
        row.checked_at = now
        session.add(row)
    session.flush()
    update.fail_over = cameras_on_failed_volumes(session)
    return update


def cameras_on_failed_volumes(session: Session) -> dict[str, list[str]]:
    """Server → its cameras (still recording there) whose write paths are all on failed volumes."""
    failed = failed_volumes(session)
    if not failed:
        return {}
    storage = inventory.storage_settings(session)
    drives: dict[str, set[str]] = {}
    for vol in inventory.list_volumes(session):
        drives.setdefault(vol.server_name, set()).add(vol.drive.upper())
    out: dict[str, list[str]] = {}
    for server in sorted({s for s, _ in failed}):
        for cam in inventory.list_cameras(session, current=server):
            own = [d for d in camera_drives(cam, storage) if d in drives.get(server, set())]
            if own and all((server, d) in failed for d in own) and cam.state != CameraState.offline:
                out.setdefault(server, []).append(cam.id)
    return out

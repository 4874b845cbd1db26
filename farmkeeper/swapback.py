"""Swap-back specifics: which cameras go home, moving them back, waiting for closed segments, ending failovers.

The copying itself is a generic copy job (``farmkeeper.copyjobs``) of kind ``swap-back`` whose target
is the cameras' home server; this module adds what only swap-back needs:

* ``select_cameras``: by home server (cameras at home there that record elsewhere, or whose footage
  from a failover is not home yet) or by id; all must share one home.
* ``move_home``: ``current = home`` under row locks (``Camera.version += 1``); the recorder then
  records at home.
* ``open_segments``: the segment-closed rule of ``farmkeeper.failover`` over any volume backend
  (a name starting with ``.`` under the camera's folders, our own ``.fkpart`` copies aside).
* ``end_failovers``: ``FailoverEvent.ended_at`` for the cameras whose footage is home.
* ``no_copy_reason``: why this swap-back copies nothing (SAN failover mode off on the home server):
  the cameras still go home, the footage stays where it was recorded (``Selection.stays``).
* ``on_central_storage``: cameras whose footage is on central storage (a NAS ``unc`` volume) that the
  home and the servers that recorded them all list: they go home, nothing is copied or deleted.
* ``move_home`` also gives a server that recovery made redundant its declared role (primary) back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from farmkeeper import inventory
from farmkeeper.copyjobs.states import UNFINISHED
from farmkeeper.errors import InventoryError
from farmkeeper.failover import camera_drives, is_open_segment, open_failover_events, restore_declared_role
from farmkeeper.layout import camera_roots
from farmkeeper.models import (
    Camera,
    CameraState,
    CopyJob,
    CopyJobState,
    FailoverEvent,
    Server,
    ServerState,
    utcnow,
)
from farmkeeper.storage import Volume

KIND = "swap-back"
TEMP_SUFFIX = ".fkpart"       # our own partial copies (farmkeeper.storage.copy.temp_name)


@dataclass
class Selection:
    """The cameras one swap-back handles, all with the same home."""

    home: str
    cameras: list[str]
    currents: dict[str, str | None]                 # camera -> server recording it before the swap-back
    sources: list[str]                              # servers whose volumes may hold footage to bring home
    skipped: dict[str, str] = field(default_factory=dict)   # camera -> why it is not part of this run
    unreachable: list[str] = field(default_factory=list)     # down servers whose volumes were not read
    no_copy: str | None = None                      # why nothing is copied (the cameras still go home)
    stays: dict[str, list[str]] = field(default_factory=dict)  # camera -> servers its footage stays on (no_copy)
    central: dict[str, str] = field(default_factory=dict)   # camera -> central storage its footage is on already


def select_cameras(session: Session, *, server: str | None = None, cameras: Sequence[str] = ()) -> Selection:
    """The cameras to bring home; raises ``InventoryError`` saying what is wrong (unknown, mixed homes...)."""
    if bool(server) == bool(cameras):
        raise InventoryError("give either a server (all its cameras recording elsewhere) or camera ids, not both")
    skipped: dict[str, str] = {}
    if server:
        home_server = inventory.get_server(session, server)
        chosen = []
        unfinished = {c for j in session.exec(select(CopyJob).where(
            CopyJob.kind == KIND, CopyJob.target == server,
            col(CopyJob.state).in_(UNFINISHED)))
            for c in j.cameras}
        for cam in inventory.list_cameras(session, home=server):
            if cam.current != server or open_failover_events(session, camera=cam.id) or cam.id in unfinished:
                chosen.append(cam)
        home = home_server.name
    else:
        chosen = [inventory.get_camera(session, c) for c in dict.fromkeys(cameras)]
        homes = sorted({c.home for c in chosen})
        if len(homes) > 1:
            by_home = "; ".join(f"{h}: {', '.join(c.id for c in chosen if c.home == h)}" for h in homes)
            raise InventoryError(f"the cameras have different home servers ({by_home}); swap back one home at a time")
        home = homes[0]
        home_server = inventory.get_server(session, home)
    if home_server.state == ServerState.down:
        raise InventoryError(f"home server {home} is down; bring it back before swapping cameras back to it")
    if home_server.maintenance:
        raise InventoryError(f"home server {home} is in maintenance; end it (`farmkeeper server maintenance "
                             f"{home} off`) before swapping back")
    currents = {c.id: c.current for c in chosen}
    sources: set[str] = set()
    for cam in chosen:
        if cam.current and cam.current != home:
            sources.add(cam.current)
        for event in open_failover_events(session, camera=cam.id):
            sources.update({event.to_server, event.from_server})
    for job in session.exec(select(CopyJob).where(CopyJob.kind == KIND, CopyJob.target == home)):
        if set(job.cameras) & set(currents) and job.state != CopyJobState.done:
            sources.update(_job_sources(session, job))
    unreachable = []
    with_volumes = {v.server_name for v in inventory.list_volumes(session)}
    for other in inventory.list_servers(session):   # footage may be anywhere: every other live server is read
        if other.name == home or other.name not in with_volumes:
            continue
        if other.state == ServerState.down:
            unreachable.append(other.name)
        else:
            sources.add(other.name)
    sources.discard(home)
    sel = Selection(home, sorted(currents), currents, sorted(sources), skipped, sorted(unreachable))
    sel.no_copy = no_copy_reason(home_server)
    if sel.no_copy:
        sel.stays = footage_elsewhere(session, sel.cameras, home)
    else:
        sel.central = on_central_storage(session, sel.cameras, home)
    return sel


def on_central_storage(session: Session, cameras: Iterable[str], home: str) -> dict[str, str]:
    """Camera -> its central storage, for cameras with nothing to bring home: every write path of the camera
    is a central storage (NAS, ``unc``) at home, and each server that recorded it meanwhile (open failovers,
    the current server) lists the same storage for that drive letter, so the footage is already there."""
    storage = inventory.storage_settings(session)
    uncs: dict[tuple[str, str], str | None] = {(v.server_name, v.drive.upper()): v.unc
                                               for v in inventory.list_volumes(session)}
    out: dict[str, str] = {}
    for cam_id in cameras:
        cam = inventory.get_camera(session, cam_id)
        drives = sorted(camera_drives(cam, storage))
        recorded_on = {e.to_server for e in open_failover_events(session, camera=cam_id)}
        if cam.current:
            recorded_on.add(cam.current)
        recorded_on.discard(home)
        at_home = [uncs.get((home, d)) for d in drives]
        if not drives or not all(at_home):
            continue
        if all((uncs.get((s, d)) or "").lower() == (u or "").lower() for s in recorded_on
               for d, u in zip(drives, at_home, strict=True)):
            out[cam_id] = ", ".join(sorted({u for u in at_home if u}))
    return out


def no_copy_reason(home: Server) -> str | None:
    """Why a swap-back to ``home`` copies no footage (``None``: it copies).

    The seed's "SAN Failover mode: Copy files to owner server" is the home (owner) server's setting:
    with it off the operator still moves cameras back; only the copy depends on the flag.
    """
    if not home.san_failover_mode:
        return (f"SAN failover mode is off on {home.name} (san_failover_mode: false): footage is copied to the "
                "owner server only in SAN failover mode, so it stays where it was recorded")
    return None


def footage_elsewhere(session: Session, cameras: Iterable[str], home: str) -> dict[str, list[str]]:
    """Camera -> the other servers that recorded it (open failovers, the current server): its footage is there."""
    out: dict[str, list[str]] = {}
    for cam_id in cameras:
        where = {e.to_server for e in open_failover_events(session, camera=cam_id)}
        current = inventory.get_camera(session, cam_id).current
        if current:
            where.add(current)
        where.discard(home)
        if where:
            out[cam_id] = sorted(where)
    return out


def _job_sources(session: Session, job: CopyJob) -> set[str]:
    from farmkeeper.models import CopyItem

    return {str(s) for s in session.exec(select(CopyItem.src_server).where(CopyItem.job_id == job.id).distinct())}


@dataclass(frozen=True)
class MovedHome:
    camera: str
    from_server: str | None
    to_server: str


def move_home(session: Session, cameras: Iterable[str]) -> list[MovedHome]:
    """Set ``current = home`` for each camera (rows locked, version bumped); cameras already home are skipped.

    A home that recovery made redundant (it came back camera-less) records cameras again: it takes its
    declared role (primary) back (``failover.restore_declared_role``, a ``role`` server event).
    """
    moved = []
    homes: set[str] = set()
    for cam_id in sorted(cameras):
        cam: Camera = inventory.get_camera(session, cam_id, for_update=True)
        homes.add(cam.home)
        if cam.current == cam.home:
            continue
        moved.append(MovedHome(cam.id, cam.current, cam.home))
        cam.current = cam.home
        cam.state = CameraState.recording
        cam.version += 1
        session.add(cam)
    if moved:
        by_from: dict[str, list[str]] = {}
        for m in moved:
            by_from.setdefault(m.from_server or "-", []).append(m.camera)
        for src, cams in by_from.items():
            inventory.record_server_event(session, moved[0].to_server, "swap-back", from_server=src, cameras=cams)
    session.flush()
    for home in sorted(homes):
        restore_declared_role(session, home)
    return moved


def open_segments(volume: Volume, cameras: Iterable[str]) -> list[str]:
    """Share-relative paths of the cameras' segments still being written on ``volume``."""
    found: list[str] = []
    for cam in cameras:
        for root in camera_roots(cam):
            for folder, names in volume.list_files_by_dir(root):
                found.extend(f"{folder}/{n}" for n in names if is_open_segment(n) and not n.endswith(TEMP_SUFFIX))
    return sorted(found)


def end_failovers(session: Session, cameras: Iterable[str]) -> list[FailoverEvent]:
    """Close the open failover events of ``cameras`` (their footage is home)."""
    now = utcnow()
    ended = []
    for cam in cameras:
        for event in open_failover_events(session, camera=cam):
            event.ended_at = now
            session.add(event)
            ended.append(event)
    session.flush()
    return ended


def resume_command(selection_server: str | None, cameras: Sequence[str], *, delete_source: bool,
                   max_mbps: float | None, verify: str) -> str:
    """The exact CLI command that resumes this swap-back."""
    parts = ["farmkeeper", "swap-back"]
    if selection_server:
        parts.append(selection_server)
    else:
        for cam in cameras:
            parts += ["--camera", cam]
    if not delete_source:
        parts.append("--keep-source")
    if max_mbps:
        parts += ["--max-mbps", f"{max_mbps:g}"]
    if verify != "size":
        parts += ["--verify", verify]
    return " ".join(parts)

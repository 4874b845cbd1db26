"""Moving cameras to another (often a new) server, with their footage (``move``) or without (``keep``).

The seed warns that moving existing cameras to a new SAN server needs care so that "old data is
accessible, camera ownership changes successfully, and SAN failover continues to work". This module
is the planning and bookkeeping half of the ``move-cameras`` flow; the copying is a copy job of kind
``move`` (``farmkeeper.copyjobs``), exactly like swap-back's:

* ``select_move``: the cameras and the target (known, up, not in maintenance, with volumes, capacity,
  movable cameras) and every other server whose volumes may hold their footage.
* ``build_plan``: files and bytes per source volume and camera, and per target drive the space needed
  against the free space left above the storage settings' floors (``min_free_bytes``,
  ``min_free_percent``); a move that does not fit is refused before anything changes.
* ``assign_cameras``: ``current = home = pinned_home = target`` with ``pin_reason='move'``; every
  change is recorded (``OwnershipChange`` reason ``move``, one ``ServerEvent`` ``cameras-moved``).
* the pin is released by ``recompute-ownership`` (``ownership.release_move_pins``) once the file
  counts alone keep the home on the target (the target holds the footage, or enough of it).

With ``footage: keep`` the footage stays where it is: retention sweeps every volume for every camera
it finds there, ownership counts every server, swap-back and the status read every live server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlmodel import Session

from farmkeeper import inventory
from farmkeeper.copyjobs import PlannedFile, PlanReport
from farmkeeper.errors import InventoryError
from farmkeeper.floors import floor_bytes
from farmkeeper.models import Camera, CameraState, OwnershipChange, PinReason, ServerState, StorageSettings, utcnow
from farmkeeper.specs import human_size
from farmkeeper.storage import Space

log = logging.getLogger(__name__)

KIND = "move"
PIN_REASON = PinReason.move
Footage = Literal["move", "keep"]


class MoveRefused(InventoryError):
    """The move was refused before anything changed; the message says why and what to do."""


# --- selection ------------------------------------------------------------------------------------

@dataclass
class MoveSelection:
    """The cameras one move handles and where their footage may be."""

    target: str
    cameras: list[str]
    currents: dict[str, str | None]                 # camera -> server recording it before the move
    homes: dict[str, str]                           # camera -> home before the move
    sources: list[str]                              # other live servers with volumes (footage may be there)
    unreachable: list[str] = field(default_factory=list)   # down servers with volumes: not read
    target_drives: list[str] = field(default_factory=list)

    @property
    def old_currents(self) -> list[str]:
        """Servers that recorded the cameras before the move (their last segments must close)."""
        return sorted({c for c in self.currents.values() if c and c != self.target})


def select_move(session: Session, cameras: Sequence[str], target: str) -> MoveSelection:
    """Check the cameras and the target; raises ``MoveRefused`` (or ``NotFoundError``) saying what is wrong."""
    ids = list(dict.fromkeys(c.strip() for c in cameras if c.strip()))
    if not ids:
        raise MoveRefused("give at least one camera to move")
    server = inventory.get_server(session, target)
    chosen = [inventory.get_camera(session, c) for c in ids]
    if server.state == ServerState.down:
        raise MoveRefused(f"target server {target} is down; bring it back (or pick another) before moving cameras "
                          "to it")
    if server.maintenance:
        raise MoveRefused(f"target server {target} is in maintenance; end it (maintenance: false in the farm file, "
                          "then `farmkeeper apply`) before moving cameras to it")
    drives = sorted(v.drive.upper() for v in inventory.list_volumes(session, target))
    if not drives:
        raise MoveRefused(f"target server {target} has no volumes in the inventory; add them to the farm file "
                          "and `farmkeeper apply` first")
    fixed = [c.id for c in chosen if not c.movable]
    if fixed:
        raise MoveRefused(f"camera{'s' if len(fixed) != 1 else ''} {', '.join(fixed)} not movable (USB or analog "
                          f"devices are attached to their server); they cannot record on {target}")
    if server.max_cameras is not None:
        staying = [c for c in inventory.list_cameras(session, current=target) if c.id not in ids]
        if len(staying) + len(ids) > server.max_cameras:
            raise MoveRefused(f"{target} records {len(staying)} other camera(s) and takes at most "
                              f"{server.max_cameras} (max_cameras): {len(ids)} more do not fit")
    with_volumes = {v.server_name for v in inventory.list_volumes(session)}
    sources: list[str] = []
    unreachable: list[str] = []
    for other in inventory.list_servers(session):
        if other.name == target or other.name not in with_volumes:
            continue
        (unreachable if other.state == ServerState.down else sources).append(other.name)
    return MoveSelection(target, sorted(ids), {c.id: c.current for c in chosen}, {c.id: c.home for c in chosen},
                         sorted(sources), sorted(unreachable), drives)


# --- the plan -------------------------------------------------------------------------------------

@dataclass
class SourceRow:
    """One camera's footage on one source volume."""

    camera: str
    server: str
    drive: str
    files: int = 0
    bytes: int = 0
    at_target: int = 0          # files already identical (same path and size) on the target's volume

    @property
    def label(self) -> str:
        return f"\\\\{self.server}\\DATA{self.drive}"


@dataclass
class TargetDrive:
    """Space on one target volume: what the move needs against what is free above the floors."""

    server: str
    drive: str
    needed: int = 0
    files: int = 0
    total: int | None = None
    free: int | None = None
    floor: int = 0
    error: str | None = None

    @property
    def label(self) -> str:
        return f"\\\\{self.server}\\DATA{self.drive}"

    @property
    def free_after(self) -> int | None:
        return None if self.free is None else self.free - self.needed

    @property
    def fits(self) -> bool:
        if not self.needed:
            return True
        after = self.free_after
        return after is not None and after >= self.floor

    def describe(self) -> str:
        if self.free is None:
            return f"{self.label}: needs {human_size(self.needed)}; free space unknown ({self.error})"
        return (f"{self.label}: needs {human_size(self.needed)} ({self.files} files), "
                f"{human_size(self.free)} free of {human_size(self.total or 0)}, floor {human_size(self.floor)} "
                f"-> {human_size(max(self.free_after or 0, 0))} free after"
                + ("" if self.fits else f" — DOES NOT FIT (short by {human_size(self.shortfall)})"))

    @property
    def shortfall(self) -> int:
        return max(0, self.floor - (self.free_after or 0))


@dataclass
class MovePlan:
    target: str
    footage: Footage
    cameras: list[str]
    rows: list[SourceRow] = field(default_factory=list)
    drives: list[TargetDrive] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)

    @property
    def files(self) -> int:
        return sum(r.files for r in self.rows)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.rows)

    @property
    def needed(self) -> int:
        return sum(d.needed for d in self.drives)

    @property
    def fits(self) -> bool:
        return all(d.fits for d in self.drives)

    @property
    def holding(self) -> list[str]:
        """Servers (other than the target) holding footage of the cameras."""
        return sorted({r.server for r in self.rows if r.files})

    def problems(self) -> list[str]:
        return [d.describe() for d in self.drives if not d.fits]

    def table(self) -> list[dict[str, Any]]:
        return [{"camera": r.camera, "source": r.label, "files": r.files, "bytes": human_size(r.bytes),
                 "already on target": r.at_target,
                 "action": "copy to " + f"\\\\{self.target}\\DATA{r.drive}, then delete"
                 if self.footage == "move" else "stays (footage: keep)"} for r in self.rows]

    def lines(self) -> list[str]:
        out = [f"move {', '.join(self.cameras)} to {self.target} (footage: {self.footage}): {self.files} files, "
               f"{human_size(self.bytes)} on other servers"]
        out += [f"  {r.camera} {r.label}: {r.files} files, {human_size(r.bytes)}"
                + (f" ({r.at_target} already on {self.target})" if r.at_target else "") for r in self.rows]
        out += [f"  space {d.describe()}" for d in self.drives]
        out += [f"  not copied: {u}" for u in self.unmapped]
        if self.unreachable:
            out.append(f"  not read (server down): {', '.join(self.unreachable)}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "footage": self.footage, "cameras": self.cameras, "files": self.files,
            "bytes": self.bytes, "needed": self.needed, "fits": self.fits,
            "sources": [{"camera": r.camera, "volume": r.label, "server": r.server, "drive": r.drive,
                         "files": r.files, "bytes": r.bytes, "already_on_target": r.at_target} for r in self.rows],
            "space": [{"volume": d.label, "drive": d.drive, "needed": d.needed, "files": d.files, "free": d.free,
                       "total": d.total, "floor": d.floor, "free_after": d.free_after, "fits": d.fits,
                       "error": d.error} for d in self.drives],
            "unmapped": self.unmapped, "unreachable": self.unreachable,
        }


def build_plan(selection: MoveSelection, footage: Footage, files: Sequence[PlannedFile], scan: PlanReport,
               on_target: Mapping[tuple[str, str], int], spaces: Mapping[str, Space | str],
               storage: StorageSettings) -> MovePlan:
    """The plan of a move from the scanned source files.

    ``on_target``: (drive, relpath) -> size of the cameras' files already on the target (a resumed move
    does not need their space again); ``spaces``: drive -> the target volume's ``Space`` or why unknown.
    """
    plan = MovePlan(selection.target, footage, list(selection.cameras), unmapped=list(scan.unmapped),
                    unreachable=list(selection.unreachable))
    rows: dict[tuple[str, str, str], SourceRow] = {}
    drives = {d: TargetDrive(selection.target, d) for d in selection.target_drives}
    for f in files:
        row = rows.setdefault((f.camera, f.src_server, f.src_drive), SourceRow(f.camera, f.src_server, f.src_drive))
        row.files += 1
        row.bytes += f.size
        if on_target.get((f.src_drive, f.relpath)) == f.size:
            row.at_target += 1
        elif footage == "move" and f.src_drive in drives:
            drives[f.src_drive].needed += f.size
            drives[f.src_drive].files += 1
    plan.rows = sorted(rows.values(), key=lambda r: (r.camera, r.server, r.drive))
    for drive, td in drives.items():
        space = spaces.get(drive, "not read")
        if isinstance(space, Space):
            td.total, td.free, td.floor = space.total, space.free, floor_bytes(space.total, storage)
        else:
            td.error = space
    plan.drives = [drives[d] for d in sorted(drives)]
    return plan


def refusal(plan: MovePlan) -> str | None:
    """Why the plan cannot run (``None``: it can)."""
    if plan.footage == "move" and not plan.fits:
        return (f"the footage does not fit on {plan.target} above the free-space floors (storage min_free / "
                f"min_free_percent): " + "; ".join(plan.problems())
                + f". Free space on {plan.target}, move fewer cameras, or move with --footage keep")
    return None


# --- bookkeeping ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Assigned:
    camera: str
    from_current: str | None
    from_home: str
    to_server: str


def assign_cameras(session: Session, cameras: Iterable[str], target: str, *, footage: Footage,
                   run_id: str | None = None) -> list[Assigned]:
    """``current = home = pinned_home = target`` (``pin_reason='move'``) under row locks; records every change.

    Idempotent: a camera already recording on the target with its home pinned there by a move is skipped.
    """
    inventory.get_server(session, target)
    now = utcnow()
    done: list[Assigned] = []
    for cam_id in sorted(set(cameras)):
        cam: Camera = inventory.get_camera(session, cam_id, for_update=True)
        if cam.current == cam.home == cam.pinned_home == target and cam.pin_reason == PIN_REASON:
            continue
        done.append(Assigned(cam.id, cam.current, cam.home, target))
        if cam.home != target:
            session.add(OwnershipChange(camera_id=cam.id, at=now, from_server=cam.home, to_server=target,
                                        reason="move"))
        cam.current = cam.home = cam.pinned_home = target
        cam.pin_reason = PIN_REASON
        cam.state = CameraState.recording
        cam.version += 1
        session.add(cam)
    if done:
        inventory.record_server_event(
            session, target, "cameras-moved", footage=footage, run_id=run_id,
            cameras=[a.camera for a in done], from_current={a.camera: a.from_current for a in done},
            from_home={a.camera: a.from_home for a in done})
    session.flush()
    return done


def resume_command(cameras: Sequence[str], target: str, *, footage: Footage, max_mbps: float | None,
                   verify: str) -> str:
    """The exact CLI command that resumes (re-runs) this move."""
    parts = ["farmkeeper", "move", *cameras, "--to", target, "--footage", footage]
    if max_mbps:
        parts += ["--max-mbps", f"{max_mbps:g}"]
    if verify != "size":
        parts += ["--verify", verify]
    return " ".join(parts)

"""Camera ownership: the home of a camera is the server holding most of its video files.

Counting goes through the storage layer (local or SMB), all volumes at once in a thread pool;
``decide_home`` is the pure rule (pin wins; the current home keeps it unless a challenger has more than
``(1 + margin)`` times its count; a home that could not be counted, or no files at all, keeps the home);
``apply_ownership`` applies the decisions under row locks and records every change.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import pandas as pd
from sqlmodel import Session, col, delete, select

from farmkeeper import inventory
from farmkeeper.errors import FarmkeeperError, SpecError
from farmkeeper.layout import CAMERA_ID_RE, VIDEO
from farmkeeper.models import Camera, OwnershipChange, OwnershipCount, PinReason, utcnow
from farmkeeper.specs import StoragePathList
from farmkeeper.storage import open_volume
from farmkeeper.volumes import ServerVolume

log = logging.getLogger(__name__)

Prefer = Literal["auto", "local", "smb"]
COLUMNS = ["server", "drive", "camera", "stream", "day", "files"]


# --- counting ------------------------------------------------------------------------------------

@dataclass
class CountResult:
    """Video files per (server, drive, camera, stream, day); ``errors`` names servers that could not be counted."""

    frame: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=COLUMNS))
    servers: list[str] = field(default_factory=list)        # every server asked for (with volumes)
    errors: dict[str, str] = field(default_factory=dict)    # server → why its count is unknown
    seconds: float = 0.0

    @property
    def counted(self) -> list[str]:
        return [s for s in self.servers if s not in self.errors]

    @property
    def files(self) -> int:
        return int(self.frame["files"].sum()) if len(self.frame) else 0

    def totals(self) -> dict[str, dict[str, int]]:
        """camera → server → files (counted servers only)."""
        return totals_by_camera(self.frame)

    @staticmethod
    def merge(parts: Iterable[CountResult]) -> CountResult:
        parts = list(parts)
        frames = [p.frame for p in parts if len(p.frame)]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
        out = CountResult(frame=frame)
        for p in parts:
            out.servers += [s for s in p.servers if s not in out.servers]
            out.errors.update(p.errors)
            out.seconds = max(out.seconds, p.seconds)
        return out


def count_volume(volume: ServerVolume, *, prefer: Prefer = "auto", camera: str | None = None) -> pd.DataFrame:
    """Video files of one volume (of one camera if given) as rows of ``COLUMNS``; storage errors propagate."""
    prefix = VIDEO if camera is None else f"{VIDEO}/{camera}"
    with open_volume(volume.access, prefer=prefer) as vol:
        counts = vol.count(prefix)
    rows = [(volume.server, volume.drive, cam, stream, day, n)
            for (cam, stream, day), n in counts.items() if stream is not None]
    return pd.DataFrame(rows, columns=COLUMNS)


def count_footage(volumes: Sequence[ServerVolume], *, prefer: Prefer = "auto", camera: str | None = None,
                  workers: int = 16, raise_errors: bool = False) -> CountResult:
    """Count every volume at once; a server with any volume that fails is reported in ``errors``.

    Central storage (a volume with a ``unc``) is not counted: every server listing it sees the same files,
    so its footage says nothing about which server owns a camera.
    """
    import time

    started = time.monotonic()
    volumes = [v for v in volumes if not v.unc]
    result = CountResult(servers=sorted({v.server for v in volumes}))
    if not volumes:
        return result
    frames: list[pd.DataFrame] = []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(volumes))),
                            thread_name_prefix="fk-count") as pool:
        futures = [(v, pool.submit(count_volume, v, prefer=prefer, camera=camera)) for v in volumes]
        for v, fut in futures:
            try:
                frames.append(fut.result())
            except Exception as exc:  # one server's failure, expected or not, never stops the others' count
                if raise_errors:
                    raise
                what = str(exc) if isinstance(exc, (FarmkeeperError, OSError)) else \
                    f"unexpected {type(exc).__name__}: {exc}"
                if v.access.password:
                    what = what.replace(v.access.password, "***")
                log.warning("cannot count %s: %s", v.label, what)
                result.errors.setdefault(v.server, f"{v.label}: {what}")
    frames = [f for f in frames if len(f) and f["server"].iloc[0] not in result.errors]
    if frames:
        result.frame = pd.concat(frames, ignore_index=True)
    result.seconds = time.monotonic() - started
    return result


def read_drives(cameras: Iterable[Camera]) -> dict[str, str]:
    """Camera → the drive of its read path, for cameras writing to several paths (``'D:\\Data;*E:\\Data'``)."""
    out: dict[str, str] = {}
    for cam in cameras:
        if cam.storage_path and ";" in cam.storage_path:
            try:
                out[cam.id] = StoragePathList.parse(cam.storage_path).read_path.drive.upper()
            except SpecError:
                continue
    return out


def on_read_paths(frame: pd.DataFrame, read: Mapping[str, str]) -> pd.DataFrame:
    """Only the rows of a camera's read path, for cameras in ``read``: the copies on its other write paths
    (redundant availability writes every recording to all of them) are not counted twice."""
    if not len(frame) or not read:
        return frame
    want = frame["camera"].map(read)
    keep = want.isna() | (frame["drive"].str.upper() == want)
    return frame[keep]


def totals_by_camera(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    if not len(frame):
        return {}
    sums = frame.groupby(["camera", "server"])["files"].sum()
    out: dict[str, dict[str, int]] = {}
    index = sums.index
    for cam, server, n in zip(index.get_level_values(0), index.get_level_values(1), sums.to_numpy(), strict=True):
        out.setdefault(str(cam), {})[str(server)] = int(n)
    return out


@dataclass(frozen=True)
class ServerSummary:
    """One camera's video on one server: files, per stream, the days it spans."""

    files: int
    streams: dict[str, int]
    first_day: str | None
    last_day: str | None
    days: int


def summarize(frame: pd.DataFrame, camera: str | None = None) -> dict[str, dict[str, ServerSummary]]:
    """camera → server → ``ServerSummary``."""
    if camera is not None and len(frame):
        frame = frame[frame["camera"] == camera]
    out: dict[str, dict[str, ServerSummary]] = {}
    if not len(frame):
        return out
    for (cam, server), g in frame.groupby(["camera", "server"]):
        streams = g.groupby("stream")["files"].sum()
        days = sorted(set(g["day"]))
        out.setdefault(str(cam), {})[str(server)] = ServerSummary(
            files=int(g["files"].sum()), streams={str(s): int(n) for s, n in streams.items()},
            first_day=days[0] if days else None, last_day=days[-1] if days else None, days=len(days))
    return out


# --- the decision --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    """What the home of one camera should be, and why."""

    camera: str
    home: str                      # the home before
    new_home: str
    reason: str
    counts: dict[str, int]         # files per counted server (0 when none)
    pinned: str | None = None
    unknown: tuple[str, ...] = ()  # servers whose count is unknown

    @property
    def changed(self) -> bool:
        return self.new_home != self.home


def decide_home(camera: str, home: str, counts: Mapping[str, int], *, margin: float, pinned: str | None = None,
                unknown: Iterable[str] = (), movable: bool = True) -> Decision:
    """The home of ``camera`` given its video files per server.

    The pin always wins; a camera that is not movable (USB, analog) keeps its home whatever the counts
    (it cannot record anywhere else); a home whose count is unknown keeps it; with no files anywhere the
    home stays; otherwise the server with most files takes the home only if it has more than
    ``(1 + margin)`` times the current home's count (ties go to the current home, then by name).
    """
    unknown_t = tuple(sorted(set(unknown)))
    known = {s: int(n) for s, n in counts.items() if s not in unknown_t}

    def keep(reason: str) -> Decision:
        return Decision(camera, home, home, reason, known, pinned, unknown_t)

    if pinned:
        if pinned == home:
            return keep(f"pinned to {pinned} by the operator")
        return Decision(camera, home, pinned, f"pinned to {pinned} by the operator", known, pinned, unknown_t)
    if not movable:
        return keep(f"not movable: it records only on {home} (its device is attached there); file counts do not "
                    "move its home")
    if home in unknown_t:
        return keep(f"{home} (the home) could not be counted; home kept until it can be")
    home_n = known.get(home, 0)
    if not known or max(known.values(), default=0) <= 0:
        return keep("no video files counted on any server; home kept")
    best = min(known, key=lambda s: (-known[s], s != home, s))
    best_n = known[best]
    if best == home:
        return keep(f"{home} has the most video files ({best_n})")
    if best_n > (1 + margin) * home_n:
        return Decision(camera, home, best, f"{best} has {best_n} video files, more than (1+{margin:g})× the "
                        f"{home_n} on {home}", known, pinned, unknown_t)
    return keep(f"{best} has {best_n} video files, not more than (1+{margin:g})× the {home_n} on {home}; "
                "home kept (margin)")


def plan_ownership(cameras: Iterable[Camera], totals: Mapping[str, Mapping[str, int]], *, servers: Iterable[str],
                   margin: float, unknown: Iterable[str] = ()) -> list[Decision]:
    """One decision per camera; ``servers`` are the counted servers (0 files where absent from ``totals``)."""
    servers = list(servers)
    unknown = list(unknown)
    out = []
    for cam in cameras:
        counts = {s: 0 for s in servers} | dict(totals.get(cam.id, {}))
        out.append(decide_home(cam.id, cam.home, counts, margin=margin, pinned=cam.pinned_home, unknown=unknown,
                               movable=cam.movable))
    return out


# --- applying ------------------------------------------------------------------------------------

@dataclass
class OwnershipOutcome:
    decisions: list[Decision]
    changes: list[Decision]
    unknown_servers: dict[str, str]
    unknown_cameras: list[str]          # footage folders of cameras not in the inventory
    margin: float
    dry_run: bool
    files: int

    def table(self) -> list[dict[str, Any]]:
        """Counts per camera and server, for the artifact (one row per camera)."""
        servers = sorted({s for d in self.decisions for s in d.counts} | set(self.unknown_servers))
        rows = []
        for d in self.decisions:
            row: dict[str, Any] = {"camera": d.camera, "home before": d.home, "home": d.new_home,
                                   "changed": "yes" if d.changed else "", "pinned": d.pinned or ""}
            for s in servers:
                row[s] = "?" if s in self.unknown_servers else d.counts.get(s, 0)
            row["why"] = d.reason
            rows.append(row)
        return rows

    def summary(self) -> str:
        verb = "would change" if self.dry_run else "changed"
        text = (f"{len(self.decisions)} cameras, {self.files} video files counted; {len(self.changes)} homes "
                f"{verb} (margin {self.margin:g})")
        if self.unknown_servers:
            text += f"; not counted: {', '.join(sorted(self.unknown_servers))}"
        return text


def apply_ownership(session: Session, result: CountResult, *, dry_run: bool = False,
                    margin: float | None = None, now: datetime | None = None) -> OwnershipOutcome:
    """Decide every camera's home from ``result`` and (unless ``dry_run``) apply and record the changes.

    Camera rows are locked (``SELECT ... FOR UPDATE``) so a concurrent pin or move is not overwritten;
    each change bumps ``Camera.version`` and adds an ``OwnershipChange``. The counts are stored as the
    last recorded counts (``OwnershipCount``) of every counted server.
    """
    now = now or utcnow()
    margin = inventory.farm_settings(session).ownership_margin if margin is None else margin
    query = select(Camera).order_by(col(Camera.id))
    if not dry_run:
        query = query.with_for_update()
    cameras = list(session.exec(query).all())
    totals = totals_by_camera(on_read_paths(result.frame, read_drives(cameras)))
    decisions = plan_ownership(cameras, totals, servers=result.counted, margin=margin,
                               unknown=result.errors)
    known_ids = {c.id for c in cameras}
    unknown_cams = sorted(c for c in totals if c not in known_ids)
    outcome = OwnershipOutcome(decisions, [d for d in decisions if d.changed], dict(result.errors), unknown_cams,
                               margin, dry_run, result.files)
    if dry_run:
        return outcome
    by_id = {c.id: c for c in cameras}
    for d in outcome.changes:
        cam = by_id[d.camera]
        cam.home = d.new_home
        cam.version += 1
        session.add(OwnershipChange(camera_id=d.camera, at=now, from_server=d.home, to_server=d.new_home,
                                    counts=d.counts, reason="operator pin" if d.pinned else "file count"))
        log.info("camera %s: home %s -> %s (%s)", d.camera, d.home, d.new_home, d.reason)
    release_move_pins(session, cameras, totals, counted=result.counted, unknown=result.errors, margin=margin)
    record_counts(session, result, now)
    return outcome


def release_move_pins(session: Session, cameras: Iterable[Camera], totals: Mapping[str, Mapping[str, int]], *,
                      counted: Iterable[str], unknown: Iterable[str], margin: float) -> list[str]:
    """Release the pins of moved cameras whose file counts now agree with the pin; returns those cameras.

    A move pins the home to the target "until the next ownership recomputation agrees": the counts
    agree when the target has video of the camera and the file-count rule alone, starting from the
    target as home, keeps it there. Operator pins (``pin_reason`` not ``move``) are never touched.
    """
    counted, unknown = list(counted), set(unknown)
    released: list[str] = []
    for cam in cameras:
        pin = cam.pinned_home
        if not pin or cam.pin_reason != PinReason.move or pin in unknown or pin not in counted:
            continue
        counts = {s: 0 for s in counted} | dict(totals.get(cam.id, {}))
        if counts.get(pin, 0) <= 0:
            continue
        decision = decide_home(cam.id, pin, counts, margin=margin, unknown=unknown)
        if decision.new_home != pin:
            continue
        cam.pinned_home, cam.pin_reason = None, None
        cam.version += 1
        session.add(cam)
        released.append(cam.id)
        log.info("camera %s: move pin to %s released (%s)", cam.id, pin, decision.reason)
    return released


def record_counts(session: Session, result: CountResult, now: datetime) -> None:
    """Replace the recorded counts of every counted server with ``result``."""
    counted = result.counted
    if not counted:
        return
    session.execute(delete(OwnershipCount).where(col(OwnershipCount.server).in_(counted)))
    for cam, per_server in summarize(result.frame).items():
        if not CAMERA_ID_RE.match(cam):
            continue
        for server, s in per_server.items():
            if server in counted:
                session.add(OwnershipCount(camera_id=cam, server=server, files=s.files, streams=s.streams,
                                           first_day=s.first_day, last_day=s.last_day, days=s.days,
                                           counted_at=now))
    session.flush()


# --- explaining ----------------------------------------------------------------------------------

@dataclass
class Explanation:
    camera: str
    home: str
    declared_home: str
    current: str | None
    pinned: str | None
    margin: float
    source: str                                   # "fresh count" | "recorded counts of <when>"
    per_server: dict[str, ServerSummary]
    decision: Decision
    history: list[OwnershipChange]
    unknown: dict[str, str]

    def lines(self) -> list[str]:
        out = [f"camera {self.camera}: home {self.home}"
               + (f" (pinned to {self.pinned})" if self.pinned else "")
               + (f", recording on {self.current}" if self.current and self.current != self.home else ""),
               f"counts ({self.source}), margin {self.margin:g}:"]
        servers = sorted(set(self.decision.counts) | set(self.per_server) | set(self.unknown))
        for s in servers:
            if s in self.unknown:
                out.append(f"  {s}: unknown ({self.unknown[s]})")
                continue
            summ = self.per_server.get(s)
            if summ is None or not summ.files:
                out.append(f"  {s}: 0 files")
                continue
            streams = ", ".join(f"stream {k}: {v}" for k, v in sorted(summ.streams.items()))
            out.append(f"  {s}: {summ.files} files ({streams}; {summ.days} days {summ.first_day}..{summ.last_day})")
        d = self.decision
        if d.changed:
            out.append(f"why: the home is still {self.home}, but the next recompute-ownership would make it "
                       f"{d.new_home}: {d.reason}")
        else:
            out.append(f"why: {d.reason}")
        if self.declared_home != self.home:
            out.append(f"the farm file declares {self.declared_home}; the home moved with the file counts or a pin")
        for ch in self.history:
            out.append(f"  {ch.at:%Y-%m-%d %H:%M}Z {ch.from_server or '-'} -> {ch.to_server} ({ch.reason}; "
                       f"counts {ch.counts})")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "camera": self.camera, "home": self.home, "declared_home": self.declared_home,
            "current": self.current, "pinned": self.pinned, "margin": self.margin, "source": self.source,
            "counts": self.decision.counts, "unknown": self.unknown,
            "servers": {s: vars(v) for s, v in self.per_server.items()},
            "would_be_home": self.decision.new_home, "why": self.decision.reason,
            "history": [{"at": c.at.isoformat(), "from": c.from_server, "to": c.to_server, "reason": c.reason,
                         "counts": c.counts} for c in self.history],
        }


def explain_camera(session: Session, camera_id: str, fresh: CountResult | None = None) -> Explanation:
    """Why ``camera_id`` has its home: from a fresh count of that camera, or from the last recorded counts."""
    cam = inventory.get_camera(session, camera_id)
    margin = inventory.farm_settings(session).ownership_margin
    servers = [s.name for s in inventory.list_servers(session)]
    if fresh is not None:
        per_server = summarize(on_read_paths(fresh.frame, read_drives([cam])), camera_id).get(camera_id, {})
        counted = fresh.counted
        unknown = dict(fresh.errors)
        source = "fresh count"
    else:
        rows = session.exec(select(OwnershipCount).where(OwnershipCount.camera_id == camera_id)).all()
        per_server = {r.server: ServerSummary(r.files, dict(r.streams), r.first_day, r.last_day, r.days)
                      for r in rows}
        counted = servers
        unknown = {}
        when = max((r.counted_at for r in rows), default=None)
        source = f"recorded counts of {when:%Y-%m-%d %H:%M}Z" if when else "no recorded counts yet"
    counts = {s: 0 for s in counted} | {s: v.files for s, v in per_server.items()}
    decision = decide_home(cam.id, cam.home, counts, margin=margin, pinned=cam.pinned_home, unknown=unknown,
                           movable=cam.movable)
    history = list(session.exec(select(OwnershipChange).where(OwnershipChange.camera_id == camera_id)
                                .order_by(col(OwnershipChange.at).desc()).limit(5)).all())
    return Explanation(cam.id, cam.home, cam.declared_home, cam.current, cam.pinned_home, margin, source,
                       per_server, decision, history, unknown)

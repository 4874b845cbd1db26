"""Retention: which footage files a sweep deletes from one volume, and doing it with an audit trail.

Planning is pure (pandas over the streamed listing): age rules first (per camera, per stream, metadata),
then the free-space floors (oldest video first across cameras, metadata only when no video is left),
then the guards. Nothing under a hold, nothing of a running swap-back or move, nothing of an unknown
camera and nothing outside the footage layout is ever planned. Execution goes through the one audited
delete (``farmkeeper.audit``): rows written ``pending`` before a batch is deleted, each settled to its
true outcome (deleted, missing, failed: reason) after.

A footage file's age comes from its name (the segment start). Its time range, for holds, is
``[start, close)`` where the close is its modification time (the recorder's last write), bounded by the
start of the next segment of the same camera/stream on the volume; a file without a usable
modification time (none, or not after its start) ends at the next segment's start, or at ``start +
the series' typical segment length`` for the newest one. So a hold days after a recording does not keep
it: a file older than its limit is deleted even next to a hold, only files overlapping one are kept.

**In step** (``availability: redundant``): the recorder writes every recording of a camera whose storage
path lists several drives (``'D:\\Data;*E:\\Data'``) to all of them. The age rules delete every copy at
the same age; a free-space floor is per volume, so after the volumes' own plans a second step
(``in_step_targets`` / ``plan_in_step``) deletes, on the camera's other write-path volumes of the *same
server*, the copies of the recordings a floor deleted (same relpath under ``video/`` or ``meta/``), rule
``in_step``, through the same audited delete: a recording a floor took from one write path is not kept
on the others. Copies that are held or used by a copy job stay (the plan's guards apply); failover
availability writes one path only, so it has no in-step deletions.

Metadata is kept for ``default_metadata_days`` when ``keep_metadata_longer`` is on (exactly that long,
also when it is shorter than a stream's video days: ``apply`` warns), else as long as the camera's
longest-kept stream.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlmodel import Session, col, select

from farmkeeper import audit, claims, hooks
from farmkeeper.copyjobs.states import ACTIVE
from farmkeeper.errors import SpecError
from farmkeeper.layout import FOOTAGE_RE
from farmkeeper.models import (
    Availability,
    Camera,
    CopyItem,
    CopyJob,
    FarmSettings,
    Hold,
    RetentionCamera,
    RetentionVolume,
    StorageSettings,
    utcnow,
)
from farmkeeper.specs import StoragePathList, WindowsPath, human_size, parse_stream_days
from farmkeeper.storage.base import Entry, Space, Volume

log = logging.getLogger(__name__)

DAY: Final = 86400
FLOOR_RULES: Final = ("min_free", "min_free_percent")
IN_STEP: Final = "in_step"               # a copy of a recording a floor deleted from another write path
RULES: Final = ("age", "metadata_age", *FLOOR_RULES, IN_STEP)
DEFAULT_SEGMENT_S: Final = 3600          # a lone segment is assumed to span at most its hour folder
SHORTFALL_TOLERANCE_DAYS: Final = 1 / 24
MAX_STREAM: Final = 9999
NON_LAYOUT_EXAMPLES: Final = 5

SessionFactory = Callable[[], AbstractContextManager[Session]]


# --- policy --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CameraRule:
    """How long a camera's footage is kept; ``None`` means no age limit."""

    video_days: tuple[int, ...] | None   # per stream
    meta_days: int | None

    def days_for_stream(self, stream: int) -> int | None:
        if self.video_days is None:
            return None
        return self.video_days[stream] if stream < len(self.video_days) else max(self.video_days)

    @property
    def longest_video_days(self) -> int | None:
        return max(self.video_days) if self.video_days else None


@dataclass(frozen=True)
class RetentionPolicy:
    cameras: dict[str, CameraRule]
    min_free_bytes: int = 0
    min_free_percent: float = 0.0
    guard_fraction: float = 0.5
    problems: tuple[str, ...] = ()       # cameras whose days setting did not parse (kept like no limit)


def camera_rule(storage: StorageSettings, camera: Camera) -> CameraRule:
    """The seed's rules for one camera: global days, per-camera override, per-stream list, metadata."""
    if not storage.limit_storage_days:
        return CameraRule(None, None)
    streams = max(1, camera.streams)
    text = camera.max_storage_days
    days = parse_stream_days(text, streams) if text else (storage.default_max_storage_days,) * streams
    meta = storage.default_metadata_days if storage.keep_metadata_longer else max(days)
    return CameraRule(days, meta)


def build_policy(storage: StorageSettings, farm: FarmSettings, cameras: Iterable[Camera]) -> RetentionPolicy:
    rules: dict[str, CameraRule] = {}
    problems: list[str] = []
    for camera in cameras:
        try:
            rules[camera.id] = camera_rule(storage, camera)
        except SpecError as exc:
            # A bad days value never widens deletion: the camera is kept as if it had no age limit.
            problems.append(f"camera {camera.id}: max_storage_days {camera.max_storage_days!r}: {exc}")
            rules[camera.id] = CameraRule(None, None)
    return RetentionPolicy(rules, storage.min_free_bytes, storage.min_free_percent, farm.purge_guard_fraction,
                           tuple(problems))


@dataclass(frozen=True)
class HoldRange:
    camera: str
    start: float   # epoch seconds, inclusive
    end: float     # exclusive


def hold_ranges(holds: Iterable[Hold]) -> list[HoldRange]:
    return [HoldRange(h.camera_id, h.start.timestamp(), h.end.timestamp()) for h in holds]


def in_flight_paths(session: Session, server: str, drive: str) -> set[str]:
    """Paths on this volume that a planned or running copy job reads or writes (never deleted by retention)."""
    query = (select(CopyItem)
             .join(CopyJob, col(CopyJob.id) == col(CopyItem.job_id))
             .where(col(CopyJob.state).in_(ACTIVE))
             .where(sa.or_(sa.and_(col(CopyItem.src_server) == server, col(CopyItem.src_drive) == drive),
                           sa.and_(col(CopyItem.dst_server) == server, col(CopyItem.dst_drive) == drive))))
    out: set[str] = set()
    for item in session.exec(query):
        if item.src_server == server and item.src_drive == drive:
            out.add(item.relpath)
        if item.dst_server == server and item.dst_drive == drive:
            out.add(item.dst_relpath or item.relpath)
    return out


def once_per_storage(volumes: Sequence[tuple[str, str, str | None]],
                     down: Collection[str]) -> dict[tuple[str, str], str]:
    """Central storage is swept once: (server, drive) → why it is skipped, for every volume of a central
    storage (``unc``) but the one swept (the first, by server name, of a server that is not down)."""
    by_unc: dict[str, list[tuple[str, str]]] = {}
    for server, drive, unc in volumes:
        if unc:
            by_unc.setdefault(unc.lower(), []).append((server, drive))
    skip: dict[tuple[str, str], str] = {}
    for members in by_unc.values():
        members.sort()
        chosen = next((m for m in members if m[0] not in down), None)
        if chosen is None:
            continue
        unc = next(u for s, d, u in volumes if (s, d) == chosen)
        for m in members:
            if m != chosen:
                skip[m] = f"central storage {unc}: swept once, through {chosen[0]} ({chosen[1]}:)"
    return skip


def redundant_write_drives(storage: StorageSettings, cameras: Iterable[Camera]) -> dict[str, tuple[str, ...]]:
    """Camera → the drives of its write paths, for cameras whose recordings are written to several drives
    (``availability: redundant`` and a storage path list over two or more drives); empty under failover
    availability (each recording is on one path only)."""
    if storage.availability != Availability.redundant:
        return {}
    try:
        default: tuple[str, ...] = (WindowsPath.parse(storage.default_path).drive.upper(),)
    except SpecError:
        default = ()
    out: dict[str, tuple[str, ...]] = {}
    for cam in cameras:
        try:
            drives = StoragePathList.parse(cam.storage_path).drives if cam.storage_path else default
        except SpecError:
            continue                          # a bad path list widens nothing
        unique = tuple(dict.fromkeys(d.upper() for d in drives))
        if len(unique) > 1:
            out[cam.id] = unique
    return out


def in_step_targets(sources: Mapping[str, Mapping[str, Iterable[str]]], write_drives: Mapping[str, Sequence[str]],
                    server_drives: Collection[str]) -> dict[str, dict[str, set[str]]]:
    """The copies to delete in step on one server: sibling drive → camera → relpaths.

    ``sources``: drive → camera → relpaths a free-space floor deleted there in this sweep. Each such
    recording of a camera in ``write_drives`` is wanted on the camera's other write drives that are volumes
    of the server (``server_drives``); only footage paths (``video/``, ``meta/`` of the layout) are taken.
    """
    have = {d.upper() for d in server_drives}
    out: dict[str, dict[str, set[str]]] = {}
    for drive, by_camera in sources.items():
        for cam, relpaths in by_camera.items():
            drives = write_drives.get(cam)
            if not drives or drive.upper() not in drives:
                continue
            paths = {p for p in relpaths if _is_footage_of(p, cam)}
            for other in drives:
                if other != drive.upper() and other in have and paths:
                    out.setdefault(other, {}).setdefault(cam, set()).update(paths)
    return out


def _is_footage_of(relpath: str, camera: str) -> bool:
    m = _LAYOUT_RE.match(relpath)
    return m is not None and (m.group(1) or m.group(3)) == camera


# --- listing -------------------------------------------------------------------------------------

_LAYOUT_RE = FOOTAGE_RE        # conflict copies (<stamp>~<server>.<ext>) are footage like any segment
_COLUMNS = ("relpath", "size", "start", "video", "camera", "stream", "mtime")


@dataclass
class Listing:
    """One volume's footage as a frame (relpath, size, start [epoch s], video, camera, stream [-1: meta], mtime)."""

    frame: pd.DataFrame
    other_files: int = 0
    other_bytes: int = 0
    other_examples: list[str] = field(default_factory=list)

    @property
    def files(self) -> int:
        return len(self.frame)

    @property
    def bytes(self) -> int:
        return int(self.frame["size"].sum()) if len(self.frame) else 0


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame({"relpath": pd.Series([], dtype=object), "size": pd.Series([], dtype="int64"),
                         "start": pd.Series([], dtype="int64"), "video": pd.Series([], dtype=bool),
                         "camera": pd.Series([], dtype="category"), "stream": pd.Series([], dtype="int16"),
                         "mtime": pd.Series([], dtype="float64")})


def read_listing(entries: Iterable[Entry], chunk_size: int = 100_000) -> Listing:
    """Parse a streamed listing in chunks; files outside the layout are counted, never kept."""
    listing = Listing(empty_frame())
    frames: list[pd.DataFrame] = []
    rel: list[str] = []
    sizes: list[int] = []
    cams: list[str] = []
    streams: list[int] = []
    stamps: list[str] = []
    mtimes: list[float] = []
    match = _LAYOUT_RE.match

    def flush() -> None:
        if not rel:
            return
        start = pd.to_datetime(pd.Series(stamps, dtype=object), format="%Y%m%dT%H%M%SZ", errors="coerce", utc=True)
        ok = start.notna().to_numpy()
        frame = pd.DataFrame({"relpath": pd.Series(rel, dtype=object), "size": pd.Series(sizes, dtype="int64"),
                              "stream": pd.Series(streams, dtype="int16"), "camera": pd.Series(cams, dtype=object),
                              "mtime": pd.Series(mtimes, dtype="float64")})
        if not ok.all():
            bad = frame[~ok]
            _count_other(listing, bad["relpath"].tolist(), int(bad["size"].sum()))
            frame, start = frame[ok].reset_index(drop=True), start[ok].reset_index(drop=True)
        frame["start"] = start.dt.as_unit("s").astype("int64").to_numpy()
        frame["video"] = frame["stream"].to_numpy() >= 0
        frames.append(frame)
        for buf in (rel, sizes, cams, streams, stamps, mtimes):
            buf.clear()

    for entry in entries:
        m = match(entry.relpath)
        if (m is None or m.group(9) != m.group(4) + m.group(5) + m.group(6) or m.group(10) != m.group(7)):
            _count_other(listing, [entry.relpath], entry.size)
            continue
        rel.append(entry.relpath)
        sizes.append(entry.size)
        if m.group(1) is not None:
            cams.append(m.group(1))
            streams.append(int(m.group(2)))
        else:
            cams.append(m.group(3))
            streams.append(-1)
        stamps.append(m.group(8))
        mtimes.append(entry.mtime)
        if len(rel) >= chunk_size:
            flush()
    flush()
    if frames:
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        frame["camera"] = frame["camera"].astype("category")
        listing.frame = frame.loc[:, list(_COLUMNS)]
    return listing


def _count_other(listing: Listing, relpaths: list[str], size: int) -> None:
    listing.other_files += len(relpaths)
    listing.other_bytes += size
    room = NON_LAYOUT_EXAMPLES - len(listing.other_examples)
    if room > 0:
        listing.other_examples.extend(relpaths[:room])


# --- planning ------------------------------------------------------------------------------------

@dataclass
class CameraUsage:
    """A camera's footage left on one volume after the plan is carried out."""

    camera: str
    video_files: int = 0
    video_bytes: int = 0
    meta_files: int = 0
    meta_bytes: int = 0
    oldest_video: float | None = None
    newest_video: float | None = None
    rule_days: int | None = None
    worst_stream: int | None = None
    held_days: float | None = None        # of the worst stream
    worst_rule_days: int | None = None
    floor_deleted: bool = False           # the floors deleted some of its video in this run

    def in_shortfall(self, previously: bool) -> bool:
        """Fewer days than its rule because of disk pressure (now, or still since an earlier sweep)."""
        if self.held_days is None or self.worst_rule_days is None:
            return False
        short = self.held_days < self.worst_rule_days - SHORTFALL_TOLERANCE_DAYS
        return short and (self.floor_deleted or previously)

    def shortfall_text(self) -> str:
        stream = f" stream {self.worst_stream}" if self.worst_stream else ""
        return f"{self.camera}{stream} holds {self.held_days or 0:.1f} of {self.worst_rule_days} days"


@dataclass
class VolumePlan:
    server: str
    drive: str
    now: float
    space: Space | None
    deletions: pd.DataFrame                       # relpath, size, start, video, camera, stream, rule
    footage_files: int = 0
    footage_bytes: int = 0
    floor_rule: str | None = None
    floor_need: int = 0                           # bytes the floors needed after the age rules
    floors_met: bool = True
    blocked: bool = False                         # a guard tripped and force was off: delete nothing
    alerts: list[tuple[str, str]] = field(default_factory=list)   # (kind, text)
    kept: dict[str, dict[str, int]] = field(default_factory=dict)  # held / in_flight: files, bytes
    unknown_cameras: dict[str, int] = field(default_factory=dict)
    other_files: int = 0
    other_bytes: int = 0
    other_examples: list[str] = field(default_factory=list)
    cameras: list[CameraUsage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"\\\\{self.server}\\DATA{self.drive}"

    def totals(self) -> dict[str, dict[str, int]]:
        out = {rule: {"files": 0, "bytes": 0} for rule in RULES}
        if len(self.deletions):
            grouped = self.deletions.groupby("rule", observed=True)["size"].agg(["count", "sum"])
            for rule, row in grouped.iterrows():
                out[str(rule)] = {"files": int(row["count"]), "bytes": int(row["sum"])}
        return out

    @property
    def planned_bytes(self) -> int:
        return int(self.deletions["size"].sum()) if len(self.deletions) else 0

    @property
    def expected_free(self) -> int | None:
        if self.space is None:
            return None
        return self.space.free + (0 if self.blocked else self.planned_bytes)

    def batches(self, size: int) -> Iterator[pd.DataFrame]:
        if self.blocked:
            return
        ordered = self.deletions.sort_values(["start", "relpath"], kind="stable")
        for i in range(0, len(ordered), size):
            yield ordered.iloc[i:i + size]

    def summary(self) -> dict[str, Any]:
        """JSON-able report of the plan (the dry run's answer)."""
        return {
            "server": self.server, "drive": self.drive, "volume": self.label,
            "total_bytes": self.space.total if self.space else None,
            "free_before": self.space.free if self.space else None,
            "free_after_expected": self.expected_free,
            "footage_files": self.footage_files, "footage_bytes": self.footage_bytes,
            "rules": self.totals(), "floor_rule": self.floor_rule, "floor_need_bytes": self.floor_need,
            "floors_met": self.floors_met, "blocked": self.blocked,
            "alerts": [text for _, text in self.alerts], "alert_kinds": sorted({k for k, _ in self.alerts}),
            "kept": self.kept, "unknown_cameras": self.unknown_cameras,
            "non_layout": {"files": self.other_files, "bytes": self.other_bytes, "examples": self.other_examples},
            "shortfall_candidates": [c.shortfall_text() for c in self.cameras if c.in_shortfall(False)],
            "problems": self.problems,
        }


def segment_ends(frame: pd.DataFrame) -> np.ndarray[Any, np.dtype[np.float64]]:
    """End of each file's time range: its close (mtime) bounded by the next distinct start of its series.

    Without a usable mtime (no ``mtime`` column, or not after the start): the next distinct start, else
    start + the series' typical segment length.
    """
    n = len(frame)
    if n == 0:
        return np.empty(0, dtype=np.float64)
    cam = frame["camera"].cat.codes.to_numpy().astype(np.int64)
    stream = frame["stream"].to_numpy().astype(np.int64)
    start = frame["start"].to_numpy().astype(np.float64)
    order = np.lexsort((start, stream, cam))
    c, s, t = cam[order], stream[order], start[order]
    same = (c[1:] == c[:-1]) & (s[1:] == s[:-1])
    series = np.concatenate(([0], np.cumsum(~same)))
    nxt = np.full(n, np.nan)
    nxt[:-1] = np.where(same, t[1:], np.nan)
    nxt[nxt <= t] = np.nan                       # equal starts: look further for the next distinct one
    nxt_s = pd.Series(nxt).groupby(series).bfill().to_numpy(dtype=np.float64)  # rows after i start later
    gaps = pd.Series(nxt_s - t)
    typical = gaps.groupby(series).transform("median").to_numpy()
    fallback = t + np.where(np.isnan(typical), DEFAULT_SEGMENT_S, typical)
    end_sorted = np.where(np.isnan(nxt_s), fallback, nxt_s)
    if "mtime" in frame.columns:
        close = frame["mtime"].to_numpy().astype(np.float64)[order]
        closed = close > t
        end_sorted = np.where(closed, np.fmin(close, np.where(np.isnan(nxt_s), np.inf, nxt_s)), end_sorted)
    end = np.empty(n, dtype=np.float64)
    end[order] = end_sorted
    return end


def held_mask(frame: pd.DataFrame, holds: Sequence[HoldRange],
              ends: np.ndarray[Any, np.dtype[np.float64]] | None = None) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Files whose range [start, end) overlaps a hold of their camera (exact times, both edges)."""
    mask = np.zeros(len(frame), dtype=bool)
    if not holds or not len(frame):
        return mask
    ends = segment_ends(frame) if ends is None else ends
    categories = frame["camera"].cat.categories
    codes = frame["camera"].cat.codes.to_numpy()
    start = frame["start"].to_numpy().astype(np.float64)
    for hold in holds:
        if hold.camera not in categories:
            continue
        code = categories.get_loc(hold.camera)
        mask |= (codes == code) & (start < hold.end) & (ends > hold.start)
    return mask


def _keep_seconds(frame: pd.DataFrame, policy: RetentionPolicy) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Per file: seconds it is kept by the age rules (inf = no limit, unknown camera, bad setting)."""
    n = len(frame)
    if n == 0:
        return np.empty(0, dtype=np.float64)
    codes = frame["camera"].cat.codes.to_numpy().astype(np.int64)
    stream = frame["stream"].to_numpy().astype(np.int64)
    key = codes * (MAX_STREAM + 2) + (stream + 1)
    uniq, inverse = np.unique(key, return_inverse=True)
    categories = frame["camera"].cat.categories
    values = np.full(len(uniq), np.inf)
    for i, k in enumerate(uniq.tolist()):
        camera = str(categories[k // (MAX_STREAM + 2)])
        s = k % (MAX_STREAM + 2) - 1
        rule = policy.cameras.get(camera)
        if rule is None:
            continue
        days = rule.meta_days if s < 0 else rule.days_for_stream(s)
        if days is not None:
            values[i] = days * DAY
    keep: np.ndarray[Any, np.dtype[np.float64]] = values[inverse.reshape(-1)]
    return keep


def _empty_plan(listing: Listing, policy: RetentionPolicy, space: Space | None, now: float, server: str,
                drive: str) -> VolumePlan:
    """A plan of one listed volume that deletes nothing yet."""
    frame = listing.frame
    return VolumePlan(server, drive, now, space, frame.iloc[0:0].assign(rule=pd.Series([], dtype=object)),
                      footage_files=len(frame), footage_bytes=listing.bytes, other_files=listing.other_files,
                      other_bytes=listing.other_bytes, other_examples=list(listing.other_examples),
                      problems=list(policy.problems))


def plan_volume(listing: Listing, policy: RetentionPolicy, *, space: Space | None, now: float,
                holds: Sequence[HoldRange] = (), protected: Collection[str] = (), force: bool = False,
                server: str = "", drive: str = "") -> VolumePlan:
    """Plan one volume: age rules, then floors (oldest first), then the guards (see module docstring)."""
    frame = listing.frame
    n = len(frame)
    plan = _empty_plan(listing, policy, space, now, server, drive)
    if n == 0:
        plan.floors_met = _floor_deficit(policy, space, 0)[0] <= 0
        if not plan.floors_met:
            plan.floor_need, plan.floor_rule = _floor_deficit(policy, space, 0)
            plan.alerts.append(("floors_unmet", f"{plan.label}: free space is below the "
                                f"{_floor_text(plan.floor_rule)} floor and the volume holds no footage to delete"))
        return plan
    cameras = frame["camera"]
    known = cameras.isin(list(policy.cameras)).to_numpy()
    if not known.all():
        counts = cameras[~known].value_counts()
        plan.unknown_cameras = {str(k): int(v) for k, v in counts.items() if v}
    video = frame["video"].to_numpy()
    start = frame["start"].to_numpy().astype(np.float64)
    size = frame["size"].to_numpy()
    ends = segment_ends(frame)
    held = held_mask(frame, holds, ends) & known
    in_flight = frame["relpath"].isin(protected).to_numpy() if protected else np.zeros(n, dtype=bool)
    eligible = known & ~held & ~in_flight

    keep = _keep_seconds(frame, policy)
    too_old = start < now - keep
    age = too_old & eligible
    plan.kept = {
        "held": {"files": int(held.sum()), "bytes": int(size[held].sum()),
                 "past_rule_files": int((too_old & held).sum())},
        "in_flight": {"files": int((in_flight & known).sum()), "bytes": int(size[in_flight & known].sum()),
                      "past_rule_files": int((too_old & in_flight & known).sum())},
    }
    rule = np.full(n, None, dtype=object)
    rule[age & video] = "age"
    rule[age & ~video] = "metadata_age"

    need, floor_rule = _floor_deficit(policy, space, int(size[age].sum()))
    floor = np.zeros(n, dtype=bool)
    if need > 0 and floor_rule is not None:
        plan.floor_need, plan.floor_rule = need, floor_rule
        candidates = eligible & ~age
        picked, freed = _oldest_first(frame, candidates & video, need)
        if freed < need:
            more, freed_meta = _oldest_first(frame, candidates & ~video, need - freed)
            picked = np.concatenate([picked, more])
            freed += freed_meta
        if freed >= need:
            floor[picked] = True
            rule[floor] = floor_rule
        else:
            plan.floors_met = False
            blockers = []
            if plan.kept["held"]["files"]:
                blockers.append(f"{plan.kept['held']['files']} held files ({human_size(plan.kept['held']['bytes'])})")
            if plan.kept["in_flight"]["files"]:
                blockers.append(f"{plan.kept['in_flight']['files']} files of a running copy job")
            if plan.unknown_cameras:
                blockers.append(f"footage of unknown cameras {', '.join(sorted(plan.unknown_cameras)[:5])}")
            if listing.other_files:
                blockers.append(f"{listing.other_files} files outside the footage layout "
                                f"({human_size(listing.other_bytes)})")
            kind = "holds_block_floors" if plan.kept["held"]["files"] else "floors_unmet"
            plan.alerts.append((kind, (
                f"{plan.label}: the {_floor_text(floor_rule)} floor cannot be met: it needs "
                f"{human_size(need)} more but only {human_size(freed)} of footage may be deleted"
                + (f"; kept: {'; '.join(blockers)}" if blockers else "")
                + ". No footage was deleted for the floors on this volume.")))

    selected = age | floor
    deletions = frame[selected].copy()
    deletions["rule"] = rule[selected]
    plan.deletions = deletions
    _guard(plan, frame, selected, age, policy, force)
    if plan.blocked and floor.any():
        plan.alerts.append(("floors_blocked", (
            f"{plan.label}: free space is below the {_floor_text(plan.floor_rule)} floor and the purge guard "
            f"blocked the {int(floor.sum())} floor deletions ({human_size(int(size[floor].sum()))}): the volume "
            "stays below its floor. Check it, then run the retention sweep with force")))
    nothing = np.zeros(n, dtype=bool)
    done, floor_done = (nothing, nothing) if plan.blocked else (selected, floor)
    plan.cameras = _usage(frame, known & ~done, floor_done, policy, now)
    return plan


def plan_in_step(listing: Listing, wanted: Mapping[str, Collection[str]], policy: RetentionPolicy, *,
                 space: Space | None, now: float, holds: Sequence[HoldRange] = (), protected: Collection[str] = (),
                 server: str = "", drive: str = "", sources: Sequence[str] = ()) -> VolumePlan:
    """Plan the in-step deletions on one sibling volume: the listed files among ``wanted`` (camera → relpaths,
    from ``in_step_targets``), rule ``in_step``; held files and files of a copy job stay (``kept``).

    No age rule, floor or purge guard runs here: the volume's own plan did that; these are the copies of
    recordings the floors (guarded) already deleted from the camera's other write paths (``sources``).
    """
    frame = listing.frame
    n = len(frame)
    plan = _empty_plan(listing, policy, space, now, server, drive)
    if n == 0 or not wanted:
        return plan
    known = frame["camera"].isin(list(policy.cameras)).to_numpy()
    paths = {p for cam, ps in wanted.items() if cam in policy.cameras for p in ps}
    want = frame["relpath"].isin(paths).to_numpy() & known
    size = frame["size"].to_numpy()
    held = held_mask(frame, holds, segment_ends(frame)) & want
    in_flight = (frame["relpath"].isin(protected).to_numpy() & want) if protected else np.zeros(n, dtype=bool)
    selected = want & ~held & ~in_flight
    plan.kept = {"held": {"files": int(held.sum()), "bytes": int(size[held].sum()), "past_rule_files": 0},
                 "in_flight": {"files": int(in_flight.sum()), "bytes": int(size[in_flight].sum()),
                               "past_rule_files": 0}}
    deletions = frame[selected].copy()
    deletions["rule"] = IN_STEP
    plan.deletions = deletions
    if held.any() or in_flight.any():
        log.info("\\\\%s\\DATA%s: %d held and %d copy-job copies kept although a floor deleted them on %s",
                 server, drive, int(held.sum()), int(in_flight.sum()), ", ".join(sources) or "another write path")
    plan.cameras = _usage(frame, known & ~selected, selected, policy, now)
    return plan


def _floor_deficit(policy: RetentionPolicy, space: Space | None, freed: int) -> tuple[int, str | None]:
    """Bytes still missing to satisfy both floors after ``freed`` more bytes, and the binding floor."""
    if space is None:
        return 0, None
    free = space.free + freed
    need_abs = policy.min_free_bytes - free
    need_pct = math.ceil(policy.min_free_percent / 100 * space.total) - free if policy.min_free_percent else 0
    need = max(need_abs, need_pct)
    if need <= 0:
        return 0, None
    return need, "min_free" if need_abs >= need_pct else "min_free_percent"


def _floor_text(rule: str | None) -> str:
    return {"min_free": "minimum free space (min_free)",
            "min_free_percent": "minimum free percent (min_free_percent)"}.get(rule or "", str(rule))


def _oldest_first(frame: pd.DataFrame, mask: np.ndarray[Any, np.dtype[np.bool_]],
                  need: int) -> tuple[np.ndarray[Any, np.dtype[np.int64]], int]:
    """Positions of the oldest files under ``mask`` until their sizes reach ``need`` (all if they do not)."""
    idx = np.flatnonzero(mask)
    if not len(idx) or need <= 0:
        return np.empty(0, dtype=np.int64), 0
    sub = pd.DataFrame({"start": frame["start"].to_numpy()[idx], "relpath": frame["relpath"].to_numpy()[idx],
                        "pos": idx, "size": frame["size"].to_numpy()[idx]})
    sub = sub.sort_values(["start", "relpath"], kind="stable")
    total = np.cumsum(sub["size"].to_numpy())
    k = int(np.searchsorted(total, need, side="left"))
    take = min(k + 1, len(sub))
    return sub["pos"].to_numpy()[:take].astype(np.int64), int(total[take - 1])


def _guard(plan: VolumePlan, frame: pd.DataFrame, selected: np.ndarray[Any, np.dtype[np.bool_]],
           age: np.ndarray[Any, np.dtype[np.bool_]], policy: RetentionPolicy, force: bool) -> None:
    """The implausible-purge guard: too large a share of the volume, or all of a camera's footage by age.

    The whole-camera check looks at the age rules only: the floors delete the oldest footage first by
    design, and a camera whose only footage on the volume is old (it records elsewhere now) must not keep
    the volume below its floor. The share-of-the-volume check covers everything planned.
    """
    files, nbytes = int(selected.sum()), plan.planned_bytes
    if not files:
        return
    reasons = []
    frac = policy.guard_fraction
    if files > frac * plan.footage_files or nbytes > frac * plan.footage_bytes:
        reasons.append(f"{files} of {plan.footage_files} footage files ({human_size(nbytes)} of "
                       f"{human_size(plan.footage_bytes)}) is more than {frac:.0%} of the volume")
    cams = frame["camera"]
    total = cams.value_counts()
    planned = cams[age].value_counts()
    wiped = sorted(str(c) for c, v in planned.items() if v and v == total.get(c, -1))
    if wiped:
        reasons.append(f"the age rules would delete every footage file of {', '.join(wiped[:10])}"
                       f"{'...' if len(wiped) > 10 else ''} on this volume")
    if not reasons:
        return
    if force:
        plan.alerts.append(("purge_guard_forced", f"{plan.label}: purge guard overridden (force): "
                            + "; ".join(reasons)))
        return
    plan.blocked = True
    plan.alerts.append(("purge_guard", f"{plan.label}: deleting nothing: " + "; ".join(reasons)
                        + ". Check the volume and the camera settings; run with force to delete anyway."))


def _usage(frame: pd.DataFrame, remaining: np.ndarray[Any, np.dtype[np.bool_]],
           floor: np.ndarray[Any, np.dtype[np.bool_]], policy: RetentionPolicy, now: float) -> list[CameraUsage]:
    out: dict[str, CameraUsage] = {}
    known = frame["camera"].isin(list(policy.cameras)).to_numpy()
    present = frame[known]
    if not len(present):
        return []
    rest = frame[remaining].assign(floor=False)
    video = rest[rest["video"]]
    meta = rest[~rest["video"]]
    for cam in sorted({str(c) for c in present["camera"].unique()}):
        rule = policy.cameras[cam]
        out[cam] = CameraUsage(cam, rule_days=rule.longest_video_days)
    if len(video):
        agg = video.groupby("camera", observed=True).agg(files=("size", "count"), bytes=("size", "sum"),
                                                         oldest=("start", "min"), newest=("start", "max"))
        for key, row in agg.iterrows():
            u = out[str(key)]
            u.video_files, u.video_bytes = int(row["files"]), int(row["bytes"])
            u.oldest_video, u.newest_video = float(row["oldest"]), float(row["newest"])
    if len(meta):
        agg = meta.groupby("camera", observed=True)["size"].agg(["count", "sum"])
        for key, row in agg.iterrows():
            out[str(key)].meta_files, out[str(key)].meta_bytes = int(row["count"]), int(row["sum"])
    # per stream: days held vs the stream's rule (streams present before the plan)
    all_video = present[present["video"]]
    oldest = video.groupby(["camera", "stream"], observed=True)["start"].min() if len(video) else None
    hit = frame[floor & frame["video"].to_numpy()]
    hit_streams = {(str(c), int(s)) for c, s in zip(hit["camera"], hit["stream"], strict=True)}
    for (cam_obj, stream_obj) in all_video.groupby(["camera", "stream"], observed=True).size().index:
        cam, stream = str(cam_obj), int(stream_obj)
        days = policy.cameras[cam].days_for_stream(stream)
        u = out[cam]
        if (cam, stream) in hit_streams:
            u.floor_deleted = True
        if days is None:
            continue
        first = oldest.get((cam_obj, stream_obj)) if oldest is not None else None
        held = max(0.0, (now - float(first)) / DAY) if first is not None else 0.0
        if u.held_days is None or u.worst_rule_days is None or held / days < u.held_days / u.worst_rule_days:
            u.held_days, u.worst_rule_days, u.worst_stream = held, days, stream
    return list(out.values())


# --- execution -----------------------------------------------------------------------------------

@dataclass
class Execution:
    """What a sweep did on one volume."""

    deleted: dict[str, dict[str, int]] = field(default_factory=lambda: {r: {"files": 0, "bytes": 0} for r in RULES})
    missing: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    pruned_dirs: int = 0
    reconciled: int = 0
    claimed: int = 0                       # files kept: another flow claimed their camera, or a copy job uses them
    claimed_by: set[str] = field(default_factory=set)
    floor_deleted: dict[str, list[str]] = field(default_factory=dict)   # camera → relpaths a floor deleted

    @property
    def files(self) -> int:
        return sum(v["files"] for v in self.deleted.values())

    @property
    def bytes(self) -> int:
        return sum(v["bytes"] for v in self.deleted.values())


def reconcile_pending(session: Session, server: str, drive: str, listing: Listing, *, owner: str | None = None) -> int:
    """Settle audit rows an interrupted run left ``pending`` (``audit.reconcile_pending`` over the listing).

    With ``owner``: only that owner's rows and those of owners whose claims are no longer live (a running
    copy job's rows are its own to settle, ``claims.settleable``).
    """
    def exists(paths: Sequence[str]) -> set[str]:
        relpaths = listing.frame["relpath"]
        return set(relpaths[relpaths.isin(list(paths))])
    may_settle = claims.settleable(session, owner) if owner is not None else None
    return audit.reconcile_pending(session, server, drive, exists, may_settle=may_settle)


def claim_batch(sessions: SessionFactory, owner: claims.Owner, plan: VolumePlan, batch: pd.DataFrame,
                result: Execution) -> pd.DataFrame:
    """Right before a batch is deleted: take the claims of its cameras on this volume, then read the protected
    set again under them; returns the batch without the files of cameras another flow claimed and without
    the files a copy job reads or writes now (the plan's view of them may be minutes old)."""
    hooks.reached("retention.before-claim", server=plan.server, drive=plan.drive, paths=list(batch["relpath"]))
    cams = sorted({str(c) for c in batch["camera"]})
    with sessions() as session:
        busy = claims.take(session, owner, [(c, plan.server, plan.drive) for c in cams])
        protected = in_flight_paths(session, plan.server, plan.drive)
    by_claim = batch["camera"].astype(str).isin([c for c, _s, _d in busy])
    in_use = batch["relpath"].isin(protected) & ~by_claim
    blocked = by_claim | in_use
    if blocked.any():
        result.claimed += int(blocked.sum())
        result.claimed_by |= set(busy.values()) | ({"a running copy job"} if in_use.any() else set())
        log.info("%s: %d files kept: their cameras are claimed by %s", plan.label, int(blocked.sum()),
                 ", ".join(sorted(set(busy.values()))) or "a running copy job")
    hooks.reached("retention.batch-claimed", server=plan.server, drive=plan.drive, owner=owner.id)
    return batch[~blocked]


def execute_plan(volume: Volume, plan: VolumePlan, *, sessions: SessionFactory, run_id: str,
                 batch_size: int = 2000, on_batch: Callable[[Execution], None] | None = None) -> Execution:
    """Carry out a plan in batches through the audited delete (``audit.audited_delete``, owner ``run_id``).

    Each batch is deleted under the claims of its cameras on the volume (owner ``run_id``, released after
    the batch), with the protected set read again right before (``claim_batch``).
    """
    result = Execution()
    owner = claims.Owner.here(run_id)
    for batch in plan.batches(batch_size):
        batch = claim_batch(sessions, owner, plan, batch, result)
        try:
            if not batch.empty:
                _delete_batch(volume, plan, batch, sessions=sessions, run_id=run_id, result=result)
        finally:
            with sessions() as session:
                claims.release(session, run_id)
        if on_batch is not None:
            on_batch(result)
    return result


def _delete_batch(volume: Volume, plan: VolumePlan, batch: pd.DataFrame, *, sessions: SessionFactory, run_id: str,
                  result: Execution) -> None:
    """One batch through the one audited delete (rows ``pending`` first, each settled to its true outcome)."""
    doomed = [audit.Doomed(p, int(s), r, str(c))
              for p, s, r, c in zip(batch["relpath"], batch["size"], batch["rule"], batch["camera"], strict=True)]
    outcome = audit.audited_delete(volume, doomed, sessions=sessions, owner=run_id, server=plan.server,
                                   drive=plan.drive, chunk=max(1, len(doomed)))
    ok = ~batch["relpath"].isin(list(outcome.failed)) if outcome.failed else None
    done = batch[ok] if ok is not None else batch
    for rule_name, group in done.groupby("rule"):
        result.deleted[str(rule_name)]["files"] += len(group)
        result.deleted[str(rule_name)]["bytes"] += int(group["size"].sum())
        if rule_name in FLOOR_RULES:
            for cam, relpath in zip(group["camera"], group["relpath"], strict=True):
                result.floor_deleted.setdefault(str(cam), []).append(str(relpath))
    result.missing += len(outcome.missing)
    result.failed.update(outcome.failed)
    result.pruned_dirs += outcome.pruned_dirs


# --- state: lease, last sweep, shortfalls --------------------------------------------------------

def claim_volume(session: Session, server: str, drive: str, run_id: str, ttl_s: float = 900.0) -> str | None:
    """Take (or renew) this run's lease on a volume; returns the other run's id if it holds a live lease."""
    now = utcnow()
    state = session.get(RetentionVolume, (server, drive), with_for_update=True)
    if state is None:
        state = RetentionVolume(server=server, drive=drive)
    elif (state.lease_run_id and state.lease_run_id != run_id and state.lease_until is not None
          and state.lease_until > now):
        return state.lease_run_id
    state.lease_run_id, state.lease_until = run_id, now + timedelta(seconds=ttl_s)
    session.add(state)
    return None


def release_volume(session: Session, server: str, drive: str, run_id: str) -> None:
    state = session.get(RetentionVolume, (server, drive))
    if state is not None and state.lease_run_id == run_id:
        state.lease_run_id, state.lease_until = None, None
        session.add(state)


@dataclass
class StateChanges:
    new_shortfalls: list[str] = field(default_factory=list)
    shortfalls: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    new_alerts: list[str] = field(default_factory=list)


def record_sweep(session: Session, plan: VolumePlan, space_after: Space | None, *,
                 keep_alerts: bool = False) -> StateChanges:
    """Save the volume's and cameras' state after a sweep; say which shortfalls and alerts are new.

    ``keep_alerts`` (the in-step step, which does not re-plan the volume's own rules): the volume's last
    alerts stay, the plan's are added.
    """
    now = utcnow()
    changes = StateChanges()
    state = session.get(RetentionVolume, (plan.server, plan.drive)) or RetentionVolume(server=plan.server,
                                                                                       drive=plan.drive)
    before = set((state.alert or "").split(",")) - {""}
    kinds = sorted({k for k, _ in plan.alerts} | (before if keep_alerts else set()))
    changes.new_alerts = [text for k, text in plan.alerts if k not in before]
    space = space_after or plan.space
    deleted_files = 0 if plan.blocked else len(plan.deletions)
    state.total_bytes = space.total if space else None
    state.free_bytes = space.free if space else None
    state.footage_files = plan.footage_files - deleted_files
    state.footage_bytes = plan.footage_bytes - (0 if plan.blocked else plan.planned_bytes)
    state.swept_at, state.alert = now, ",".join(kinds) or None
    session.add(state)
    previous = {row.camera_id: row for row in session.exec(
        select(RetentionCamera).where(RetentionCamera.server == plan.server, RetentionCamera.drive == plan.drive))}
    for usage in plan.cameras:
        row = previous.pop(usage.camera, None)
        was = bool(row and row.shortfall)
        row = row or RetentionCamera(camera_id=usage.camera, server=plan.server, drive=plan.drive, updated_at=now)
        short = usage.in_shortfall(was)
        if short:
            text = f"{usage.shortfall_text()} on {plan.label}"
            changes.shortfalls.append(text)
            if not was:
                changes.new_shortfalls.append(text)
                row.shortfall_since = now
        elif was:
            changes.resolved.append(f"{usage.camera} on {plan.label}")
            row.shortfall_since = None
        row.shortfall = short
        row.video_files, row.video_bytes = usage.video_files, usage.video_bytes
        row.meta_files, row.meta_bytes = usage.meta_files, usage.meta_bytes
        row.oldest_video_at = _dt(usage.oldest_video)
        row.newest_video_at = _dt(usage.newest_video)
        row.rule_days, row.held_days = usage.rule_days, usage.held_days
        row.worst_stream, row.worst_rule_days = usage.worst_stream, usage.worst_rule_days
        row.updated_at = now
        session.add(row)
    for gone in previous.values():
        session.delete(gone)
    return changes


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


__all__ = ["FLOOR_RULES", "IN_STEP", "RULES", "CameraRule", "CameraUsage", "Execution", "HoldRange", "Listing",
           "RetentionPolicy", "StateChanges", "VolumePlan", "build_policy", "camera_rule", "claim_volume",
           "execute_plan", "held_mask", "hold_ranges", "in_flight_paths", "in_step_targets", "plan_in_step",
           "plan_volume", "read_listing", "reconcile_pending", "record_sweep", "redundant_write_drives",
           "release_volume", "segment_ends"]

"""The farm at a glance, read from the inventory: the ``farm-status`` artifact and the Prometheus metrics.

``read_farm_view`` gathers servers (state, role, master, cameras, last seen), the cameras that do not
record, volumes (free space against the floors, oldest footage, days held against the configured days,
from what the last retention sweep saw) and running copy jobs. ``render_markdown`` is the Server Farm
Summary as an operator reads it; ``fingerprint`` changes only when something an operator cares about
changed (not every sweep's "last seen").
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Session, select

from farmkeeper import inventory
from farmkeeper.models import (
    Camera,
    CameraState,
    RetentionCamera,
    RetentionVolume,
    Server,
    ServerState,
    StorageSettings,
    Volume,
    utcnow,
)
from farmkeeper.specs import human_size

DAY_S = 86400.0


@dataclass(frozen=True)
class ServerRow:
    name: str
    state: str
    role: str
    master: bool
    maintenance: bool
    cameras: int
    last_seen: datetime | None
    probe_error: str | None


@dataclass(frozen=True)
class CameraRow:
    id: str
    state: str
    home: str
    current: str | None


@dataclass(frozen=True)
class VolumeRow:
    server: str
    drive: str
    total_bytes: int | None
    free_bytes: int | None
    floor_bytes: int                 # the larger of min_free and min_free_percent of the volume
    oldest_at: datetime | None       # oldest video on the volume (last retention sweep)
    days_held: float | None          # age of that footage in days
    days_configured: int | None      # the longest video retention of the cameras kept there (None: no limit)
    shortfall_cameras: int
    swept_at: datetime | None

    @property
    def label(self) -> str:
        return rf"\\{self.server}\DATA{self.drive}"

    @property
    def below_floor(self) -> bool:
        return self.free_bytes is not None and self.floor_bytes > 0 and self.free_bytes < self.floor_bytes


@dataclass(frozen=True)
class JobRow:
    id: int
    kind: str
    target: str
    cameras: tuple[str, ...]
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


@dataclass
class FarmView:
    farm: str
    at: datetime
    servers: list[ServerRow] = field(default_factory=list)
    cameras: Counter[str] = field(default_factory=Counter)          # state → count
    not_recording: list[CameraRow] = field(default_factory=list)
    volumes: list[VolumeRow] = field(default_factory=list)
    jobs: list[JobRow] = field(default_factory=list)
    last_sweep_at: datetime | None = None                              # the newest probe of any server


def floor_bytes(storage: StorageSettings, total: int | None) -> int:
    """The free-space floor of a volume: ``min_free`` or ``min_free_percent`` of its size, the larger."""
    by_percent = int(total * storage.min_free_percent / 100) if total and storage.min_free_percent else 0
    return max(int(storage.min_free_bytes or 0), by_percent)


def read_farm_view(session: Session, now: datetime | None = None) -> FarmView:
    now = now or utcnow()
    view = FarmView(inventory.farm_settings(session).name, now)
    cameras = list(session.exec(select(Camera).order_by(Camera.id)))
    per_server = Counter(c.current for c in cameras if c.current)
    for s in session.exec(select(Server).order_by(Server.name)):
        view.servers.append(ServerRow(s.name, s.state.value, s.role.value, s.master, s.maintenance,
                                      per_server.get(s.name, 0), s.last_seen, s.probe_error))
        if s.probed_at is not None and (view.last_sweep_at is None or s.probed_at > view.last_sweep_at):
            view.last_sweep_at = s.probed_at
    for c in cameras:
        view.cameras[c.state.value] += 1
        if c.state != CameraState.recording:
            view.not_recording.append(CameraRow(c.id, c.state.value, c.home, c.current))
    view.volumes = _volumes(session, now)
    view.jobs = [JobRow(j.id or 0, j.kind, j.target, tuple(j.cameras), j.files_done, j.files_total, j.bytes_done,
                        j.bytes_total) for j in inventory.running_copy_jobs(session)]
    return view


def _volumes(session: Session, now: datetime) -> list[VolumeRow]:
    storage = inventory.storage_settings(session)
    swept = {(r.server, r.drive): r for r in session.exec(select(RetentionVolume))}
    t = RetentionCamera.__table__.c  # type: ignore[attr-defined]
    query = (sa.select(t.server, t.drive, sa.func.min(t.oldest_video_at), sa.func.max(t.rule_days),
                       sa.func.sum(sa.case((t.rule_days.is_(None), 1), else_=0)),
                       sa.func.sum(sa.case((t.shortfall, 1), else_=0)))
             .group_by(t.server, t.drive))
    per_volume = {(row[0], row[1]): tuple(row[2:]) for row in session.execute(query)}
    rows = []
    for vol in session.exec(select(Volume).order_by(Volume.server_name, Volume.drive)):
        key = (vol.server_name, vol.drive)
        seen = swept.get(key)
        total = seen.total_bytes if seen else vol.capacity_bytes
        oldest, rule_days, unlimited, shortfall = per_volume.get(key, (None, None, 0, 0))
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        held = (now - oldest).total_seconds() / DAY_S if oldest is not None else None
        configured = None if unlimited else rule_days
        rows.append(VolumeRow(vol.server_name, vol.drive, total, seen.free_bytes if seen else None,
                              floor_bytes(storage, total), oldest, held, configured, int(shortfall or 0),
                              seen.swept_at if seen else None))
    return rows


# --- the markdown artifact --------------------------------------------------------------------------

def _when(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "never"
    ago = (now - at).total_seconds()
    if ago < 120:
        span = f"{ago:.0f} s ago"
    elif ago < 7200:
        span = f"{ago / 60:.0f} min ago"
    elif ago < 2 * DAY_S:
        span = f"{ago / 3600:.1f} h ago"
    else:
        span = f"{ago / DAY_S:.1f} d ago"
    return f"{at:%Y-%m-%d %H:%M:%S}Z ({span})"


def _n(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _size(n: int | None) -> str:
    return human_size(n) if n is not None else "-"


def _state(row: ServerRow) -> str:
    text = {"down": "**DOWN**", "up": "up", "unknown": "unknown"}.get(row.state, row.state)
    return text + (" (maintenance)" if row.maintenance else "")


def render_markdown(view: FarmView) -> str:
    """The farm as the Server Farm Summary shows it (markdown)."""
    now = view.at
    down = [s.name for s in view.servers if s.state == ServerState.down.value]
    head = [f"# Farm {_cell(view.farm)}",
            "",
            f"{_n(len(view.servers), 'server')} ({len(down)} down{': ' + ', '.join(down) if down else ''}), "
            f"{_n(sum(view.cameras.values()), 'camera')} ({len(view.not_recording)} not recording), "
            f"{_n(len(view.jobs), 'copy job')} running. "
            f"Last health sweep: {_when(view.last_sweep_at, now)}. Updated {now:%Y-%m-%d %H:%M:%S}Z.",
            "", "## Servers", "",
            "| server | state | role | master | cameras | last seen | last probe error |",
            "|---|---|---|---|---:|---|---|"]
    for s in view.servers:
        head.append(f"| {_cell(s.name)} | {_state(s)} | {s.role} | {'**master**' if s.master else ''} | "
                    f"{s.cameras} | {_when(s.last_seen, now)} | {_cell(s.probe_error or '')} |")
    body = ["", "## Cameras not recording", ""]
    if view.not_recording:
        body += ["| camera | state | home | records on |", "|---|---|---|---|"]
        body += [f"| {_cell(c.id)} | {c.state} | {_cell(c.home)} | {_cell(c.current or '-')} |"
                 for c in view.not_recording]
    else:
        body.append("Every camera records.")
    body += ["", "## Volumes", ""]
    if view.volumes:
        body += ["| volume | free | floor | oldest footage | days held / configured | shortfall | swept |",
                 "|---|---:|---:|---|---|---:|---|"]
        for v in view.volumes:
            free = _size(v.free_bytes)
            if v.free_bytes is not None and v.total_bytes:
                free += f" ({100 * v.free_bytes / v.total_bytes:.0f} %)"
            if v.below_floor:
                free = f"**{free} BELOW FLOOR**"
            held = f"{v.days_held:.1f}" if v.days_held is not None else "-"
            configured = (str(v.days_configured) if v.days_configured is not None
                          else "no limit" if v.oldest_at is not None else "-")
            oldest = f"{v.oldest_at:%Y-%m-%d %H:%M}Z" if v.oldest_at else "-"
            body.append(f"| `{v.label}` | {free} | {_size(v.floor_bytes) if v.floor_bytes else '-'} | "
                        f"{oldest} | {held} / {configured} | {v.shortfall_cameras or ''} | "
                        f"{_when(v.swept_at, now) if v.swept_at else 'not swept yet'} |")
    else:
        body.append("No volumes.")
    body += ["", "## Copy jobs running", ""]
    if view.jobs:
        body += ["| job | kind | to | cameras | files | bytes | progress |", "|---:|---|---|---|---:|---:|---:|"]
        for j in view.jobs:
            pct = f"{100 * j.bytes_done / j.bytes_total:.0f} %" if j.bytes_total else "-"
            cams = ", ".join(j.cameras[:8]) + (f" (+{len(j.cameras) - 8})" if len(j.cameras) > 8 else "")
            body.append(f"| #{j.id} | {j.kind} | {_cell(j.target)} | {_cell(cams)} | {j.files_done}/{j.files_total} "
                        f"| {_size(j.bytes_done)} / {_size(j.bytes_total)} | {pct} |")
    else:
        body.append("None.")
    return "\n".join(head + body) + "\n"


def fingerprint(view: FarmView) -> str:
    """Changes when the farm changed for an operator; not with every sweep's last-seen of a live server."""
    parts: list[object] = [view.farm]
    parts += [(s.name, s.state, s.role, s.master, s.maintenance, s.cameras,
               s.last_seen if s.state != ServerState.up.value else None) for s in view.servers]
    parts += [(c.id, c.state, c.current) for c in view.not_recording]
    parts += [(v.server, v.drive, v.free_bytes, v.floor_bytes, v.oldest_at, v.days_configured, v.shortfall_cameras)
              for v in view.volumes]
    parts += [(j.id, j.files_done, j.bytes_done, j.bytes_total) for j in view.jobs]
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest()

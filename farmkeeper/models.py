"""The inventory: SQLModel entities (``XBase`` → ``X(table=True)`` → ``XPublic``).

Declared state comes from the farm file; runtime state (``current``, ``state``, ``last_seen``,
the effective ``home``/``role``/``master``, events, copy jobs, holds, audit) is kept across applies.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import JSON, Column, Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite stores naive UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    # SQLite keeps datetimes as text: ``YYYY-MM-DD HH:MM:SS.ffffff``, the format SQLAlchemy's own SQLite DATETIME
    # writes and reads. Converting straight to and from it (``isoformat``/``fromisoformat``, in C) costs a
    # tenth of SQLAlchemy's regex and %-formatting chain, which every sweep pays thousands of times.
    def bind_processor(self, dialect: sa.Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is not None:
                value = value.astimezone(UTC).replace(tzinfo=None)
            return value.isoformat(" ", "microseconds")
        return process

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def process(value: str | datetime | None) -> datetime | None:
            if value is None:
                return None
            moment = datetime.fromisoformat(value) if isinstance(value, str) else value
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        return process


def _ts(nullable: bool = True, **kw: Any) -> Any:
    return Field(default=None if nullable else ..., sa_type=UTCDateTime, nullable=nullable, **kw)


class Role(StrEnum):
    primary = "primary"
    redundant = "redundant"


class ServerState(StrEnum):
    unknown = "unknown"
    up = "up"
    down = "down"


class CameraState(StrEnum):
    recording = "recording"
    offline = "offline"    # its server is down and it cannot move (not movable)
    stranded = "stranded"  # movable, but no live redundant capacity yet
    stalled = "stalled"    # should record, but no new closed segment for stall_after (farmkeeper.watchdog)


class PinReason(StrEnum):
    """Why a camera's home is pinned (``Camera.pin_reason``); an operator pin has none."""

    move = "move"          # pinned by move-cameras until the file counts agree (``ownership.release_move_pins``)


class Availability(StrEnum):
    failover = "failover"
    redundant = "redundant"


# --- settings (one row each, id=1) -------------------------------------------------------------

class FarmSettings(SQLModel, table=True):
    __tablename__ = "farm_settings"
    id: int = Field(default=1, primary_key=True)
    name: str = "farm"
    down_after_s: float = 30.0
    health_interval_s: float = 10.0
    # apprise URLs, or references to them: {"env": NAME} / {"secret": BLOCK}
    notify: list[str | dict[str, str]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    ownership_margin: float = 0.1          # a challenger needs this much more (fraction) to take a home
    auto_swap_back_after_s: float | None = None
    purge_guard_fraction: float = 0.5      # retention refuses to delete more than this share of a volume
    clock_skew_max_s: float = 60.0
    stall_after_s: float = 120.0           # a recording camera without a new closed segment this long is stalled
    failover_stalled: bool = False         # fail a stalled movable camera over alone (camera may override)


class StorageSettings(SQLModel, table=True):
    __tablename__ = "storage_settings"
    id: int = Field(default=1, primary_key=True)
    min_free_bytes: int = Field(default=0, sa_type=sa.BigInteger)
    min_free_percent: float = 0.0
    availability: Availability = Availability.failover
    limit_storage_days: bool = False
    default_max_storage_days: int = 30
    keep_metadata_longer: bool = False
    default_metadata_days: int = 90
    default_path: str = "D:\\Data"


# --- servers and volumes ------------------------------------------------------------------------

class ServerBase(SQLModel):
    name: str = Field(primary_key=True, max_length=64)
    host: str
    role: Role = Role.primary
    master: bool = False
    health: str = ""                      # tcp://h:p | http(s)://... | smb
    san_failover_mode: bool = False
    smb_port: int = 445
    smb_username: str = ""
    smb_password_env: str | None = None   # credential reference, never the secret itself
    smb_password_secret: str | None = None  # Prefect Secret block name
    smb_signing: bool = True
    max_cameras: int | None = None
    maintenance: bool = False


class Server(ServerBase, table=True):
    __tablename__ = "server"
    # The master is one fact: the database refuses a second ``master`` row (writers lock the rows first).
    __table_args__ = (sa.Index("uq_server_one_master", "master", unique=True,
                               sqlite_where=sa.text("master"), postgresql_where=sa.text("master")),)
    declared_role: Role = Role.primary
    declared_master: bool = False
    state: ServerState = ServerState.unknown
    last_seen: datetime | None = _ts()
    failing_since: datetime | None = _ts()   # down_after counts from here: the last success before failing
    state_changed_at: datetime | None = _ts()
    probed_at: datetime | None = _ts()     # last health sweep that probed it (swept_at; a stop restarts the count)
    probe_error: str | None = None         # why the last probe failed (no credentials)
    failover_to: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # preferred targets
    version: int = 1


class ServerPublic(ServerBase):
    state: ServerState
    last_seen: datetime | None
    cameras: int = 0


class VolumeBase(SQLModel):
    server_name: str = Field(foreign_key="server.name", ondelete="CASCADE", index=True)
    drive: str = Field(max_length=1)
    path: str | None = None               # local mount of the share root
    capacity_bytes: int | None = Field(default=None, sa_type=sa.BigInteger)
    unc: str | None = None                # central storage (NAS): '\\nas01\cctv'; the same unc is one storage


class Volume(VolumeBase, table=True):
    __tablename__ = "volume"
    __table_args__ = (sa.UniqueConstraint("server_name", "drive"),)
    id: int | None = Field(default=None, primary_key=True)

    @property
    def share(self) -> str:
        return f"DATA{self.drive}"


# --- cameras ------------------------------------------------------------------------------------

class CameraBase(SQLModel):
    id: str = Field(primary_key=True, max_length=64)
    name: str = ""
    movable: bool = True
    streams: int = 1
    storage_path: str | None = None        # 'D:\Data;*E:\Data'
    max_storage_days: str | None = None    # '3;20'


class Camera(CameraBase, table=True):
    __tablename__ = "camera"
    declared_home: str = Field(foreign_key="server.name")
    home: str = Field(foreign_key="server.name", index=True)
    current: str | None = Field(default=None, foreign_key="server.name", index=True)
    pinned_home: str | None = Field(default=None, foreign_key="server.name")
    pin_reason: str | None = None          # a ``PinReason`` value (None: pinned by the operator)
    state: CameraState = CameraState.recording
    priority: int = 3                      # 1..5: higher takes the last free places on failover first
    stall_after_s: float | None = None     # None: the farm's stall_after
    failover_stalled: bool | None = None   # None: the farm's failover_stalled
    version: int = 1


class CameraPublic(CameraBase):
    home: str
    current: str | None
    state: CameraState
    pinned_home: str | None


# --- runtime records ----------------------------------------------------------------------------

class FailoverEvent(SQLModel, table=True):
    """A camera moved off a down server: swap-back copies footage recorded since ``started_at``."""

    __tablename__ = "failover_event"
    id: int | None = Field(default=None, primary_key=True)
    camera_id: str = Field(foreign_key="camera.id", ondelete="CASCADE", index=True)
    from_server: str
    to_server: str
    started_at: datetime = _ts(nullable=False)
    ended_at: datetime | None = _ts()       # set when swap-back finished for this camera
    reason: str = "server down"


class ServerEvent(SQLModel, table=True):
    """State changes of servers (down, up, maintenance, master change), for status and notifications."""

    __tablename__ = "server_event"
    id: int | None = Field(default=None, primary_key=True)
    server: str = Field(index=True)
    at: datetime = _ts(nullable=False)
    kind: str
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class OwnershipChange(SQLModel, table=True):
    __tablename__ = "ownership_change"
    id: int | None = Field(default=None, primary_key=True)
    camera_id: str = Field(index=True)
    at: datetime = _ts(nullable=False)
    from_server: str | None = None
    to_server: str
    counts: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    reason: str = "file count"


class OwnershipCount(SQLModel, table=True):
    """The last file count of a camera's video on one server (``recompute-ownership``, for ``--explain``)."""

    __tablename__ = "ownership_count"
    camera_id: str = Field(primary_key=True, max_length=64)
    server: str = Field(primary_key=True, max_length=64)
    files: int = Field(default=0, sa_type=sa.BigInteger)
    streams: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    first_day: str | None = None
    last_day: str | None = None
    days: int = 0
    counted_at: datetime = _ts(nullable=False)


class CopyJobState(StrEnum):
    planned = "planned"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


class CopyJob(SQLModel, table=True):
    __tablename__ = "copy_job"
    id: int | None = Field(default=None, primary_key=True)
    kind: str = "swap-back"                 # swap-back | move
    state: CopyJobState = CopyJobState.planned
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)
    finished_at: datetime | None = _ts()
    cameras: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    target: str = ""                        # destination server
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    files_total: int = 0
    files_done: int = 0
    bytes_total: int = Field(default=0, sa_type=sa.BigInteger)
    bytes_done: int = Field(default=0, sa_type=sa.BigInteger)
    flow_run_id: str | None = None
    error: str | None = None


class CopyItemState(StrEnum):
    pending = "pending"
    copied = "copied"        # verified at the destination, source still there
    skipped = "skipped"      # identical file already at the destination
    conflict = "conflict"    # different file with the same name: both kept
    removed = "removed"      # verified copy and source deleted
    failed = "failed"


class CopyItem(SQLModel, table=True):
    __tablename__ = "copy_item"
    __table_args__ = (sa.UniqueConstraint("job_id", "src_server", "src_drive", "relpath"),)
    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="copy_job.id", ondelete="CASCADE", index=True)
    camera_id: str = Field(index=True)
    src_server: str
    src_drive: str
    dst_server: str
    dst_drive: str
    relpath: str
    dst_relpath: str | None = None
    size: int = Field(default=0, sa_type=sa.BigInteger)
    mtime: float = 0.0
    state: CopyItemState = CopyItemState.pending
    error: str | None = None
    # A resumable partial copy: the temporary file, the length the destination acknowledged, and the origin
    # (source server, drive, path, size, mtime) it was written from; a partial is resumed only when all match.
    partial_path: str | None = None
    partial_bytes: int = Field(default=0, sa_type=sa.BigInteger)
    partial_origin: str | None = None


class Hold(SQLModel, table=True):
    """Evidence lock: footage of ``camera_id`` overlapping [start, end) is never deleted."""

    __tablename__ = "hold"
    id: int | None = Field(default=None, primary_key=True)
    camera_id: str = Field(index=True)
    start: datetime = _ts(nullable=False)
    end: datetime = _ts(nullable=False)
    reason: str
    created_at: datetime = _ts(nullable=False)


class DeletionAudit(SQLModel, table=True):
    __tablename__ = "deletion_audit"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(nullable=False, index=True)
    server: str
    drive: str
    path: str
    size: int = Field(sa_type=sa.BigInteger)
    rule: str                              # age | metadata_age | min_free | min_free_percent | in_step | source_copied
    camera_id: str | None = None
    run_id: str | None = None
    outcome: str = "deleted"               # pending: written before the delete, not yet confirmed | deleted


class RetentionVolume(SQLModel, table=True):
    """What the last retention sweep saw on one volume, its last alert, and a lease against parallel sweeps."""

    __tablename__ = "retention_volume"
    server: str = Field(primary_key=True, max_length=64)
    drive: str = Field(primary_key=True, max_length=1)
    total_bytes: int | None = Field(default=None, sa_type=sa.BigInteger)
    free_bytes: int | None = Field(default=None, sa_type=sa.BigInteger)
    footage_files: int = Field(default=0, sa_type=sa.BigInteger)
    footage_bytes: int = Field(default=0, sa_type=sa.BigInteger)
    swept_at: datetime | None = _ts()
    alert: str | None = None               # last alert (notified when it changes)
    lease_run_id: str | None = None
    lease_until: datetime | None = _ts()


class RetentionCamera(SQLModel, table=True):
    """A camera's footage on one volume after the last sweep: the storage forecast and shortfall state."""

    __tablename__ = "retention_camera"
    camera_id: str = Field(primary_key=True, max_length=64)
    server: str = Field(primary_key=True, max_length=64)
    drive: str = Field(primary_key=True, max_length=1)
    video_files: int = Field(default=0, sa_type=sa.BigInteger)
    video_bytes: int = Field(default=0, sa_type=sa.BigInteger)
    meta_files: int = Field(default=0, sa_type=sa.BigInteger)
    meta_bytes: int = Field(default=0, sa_type=sa.BigInteger)
    oldest_video_at: datetime | None = _ts()
    newest_video_at: datetime | None = _ts()
    rule_days: int | None = None           # longest video retention of the camera (None: no age limit)
    held_days: float | None = None         # days kept by its worst stream (relative to that stream's rule)
    worst_stream: int | None = None
    worst_rule_days: int | None = None
    shortfall: bool = False                # holds fewer days than its rule because of disk pressure
    shortfall_since: datetime | None = _ts()
    updated_at: datetime = _ts(nullable=False)


class CameraWatch(SQLModel, table=True):
    """The recording watchdog's view of one camera (``farmkeeper.watchdog``): its newest closed segment."""

    __tablename__ = "camera_watch"
    camera_id: str = Field(primary_key=True, max_length=64)
    server: str = ""                       # where it is expected to record (``current`` when last checked)
    since: datetime = _ts(nullable=False)  # expected on ``server`` since (a move or a start restarts the clock)
    last_segment_at: datetime | None = _ts()   # start of the newest closed segment seen on ``server``
    segment_s: float | None = None         # usual segment length (between the two newest segment starts)
    checked_at: datetime | None = _ts()
    stalled_at: datetime | None = _ts()    # set while stalled


class VolumeHealth(SQLModel, table=True):
    """Whether a server can write a volume (``farmkeeper.watchdog``): failing since when, failed or not."""

    __tablename__ = "volume_health"
    server: str = Field(primary_key=True, max_length=64)
    drive: str = Field(primary_key=True, max_length=1)
    failed: bool = False
    failing_since: datetime | None = _ts()
    error: str | None = None
    checked_at: datetime | None = _ts()
    changed_at: datetime | None = _ts()


class ValidationFinding(SQLModel, table=True):
    """Last result per (server, requirement) so a new failure can be notified once."""

    __tablename__ = "validation_finding"
    server: str = Field(primary_key=True)
    requirement: str = Field(primary_key=True)
    ok: bool
    message: str = ""
    fix: str = ""
    at: datetime = _ts(nullable=False)


class WatchLease(SQLModel, table=True):
    """Who sweeps now: one row per lease name, renewed by its holder, taken over once it expires."""

    __tablename__ = "watch_lease"
    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=200)          # host:pid:token of the watching process
    flow_run_id: str | None = Field(default=None, max_length=64)
    acquired_at: datetime = _ts(nullable=False)
    renewed_at: datetime = _ts(nullable=False)
    expires_at: datetime = _ts(nullable=False)


class MetricCounter(SQLModel, table=True):
    """A monotonic counter kept in the inventory (``farmkeeper.metrics``), so every process adds to one value.

    ``label`` tells series of one name apart (a histogram bucket's upper bound, ``sum``, ``count``).
    """

    __tablename__ = "metric_counter"
    name: str = Field(primary_key=True, max_length=64)
    label: str = Field(default="", primary_key=True, max_length=64)
    value: float = 0.0
    updated_at: datetime | None = _ts()


class FootageClaim(SQLModel, table=True):
    """One flow at a time acts on a camera's footage on a volume: the claim of (camera, server, drive).

    ``owner`` is the run holding it (``retention-<run>``, ``copy-job-<id>``); ``host``/``pid`` say which
    process works for it and ``until`` how long its lease runs (see ``farmkeeper.claims``).
    """

    __tablename__ = "footage_claim"
    camera_id: str = Field(primary_key=True, max_length=64)
    server: str = Field(primary_key=True, max_length=64)
    drive: str = Field(primary_key=True, max_length=1)
    owner: str = Field(index=True)
    host: str
    pid: int
    claimed_at: datetime = _ts(nullable=False)
    until: datetime = _ts(nullable=False)

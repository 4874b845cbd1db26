"""The farm file (YAML): parse with line numbers, validate everything, apply in one transaction, export.

Every problem is reported as ``file:line: field: message`` and nothing is changed when any exists.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from sqlmodel import Session, select

from farmkeeper.errors import FarmFileError, SpecError
from farmkeeper.layout import CAMERA_ID_RE, default_data_root
from farmkeeper.models import (
    Availability,
    Camera,
    FarmSettings,
    Role,
    Server,
    StorageSettings,
    Volume,
)
from farmkeeper.specs import (
    StoragePathList,
    WindowsPath,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
    parse_stream_days,
)

Path_ = tuple[str | int, ...]


# --- YAML with line numbers ---------------------------------------------------------------------

def load_yaml_with_lines(text: str, filename: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML into plain data plus a map from each key path to its 1-based line."""
    lines: dict[Path_, int] = {}
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        if "stream end" in problem and getattr(exc, "context_mark", None) is not None:
            mark = exc.context_mark  # type: ignore[attr-defined]  # unclosed bracket or quote: point at where it opened
        line = mark.line + 1 if mark else 1
        raise FarmFileError([f"{filename}:{line}: not valid YAML: {problem}"]) from None
    if node is None:
        return {}, lines

    def build(n: yaml.Node, path: Path_) -> Any:
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in n.value:
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
                if key in out:
                    raise FarmFileError([f"{filename}:{key_node.start_mark.line + 1}: {_dotted((*path, key))}: "
                                         "key given twice"])
                lines[(*path, key)] = key_node.start_mark.line + 1
                out[key] = build(value_node, (*path, key))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(item, (*path, i)) for i, item in enumerate(n.value)]
        loader = yaml.SafeLoader("")
        return loader.construct_object(n, deep=True)

    return build(node, ()), lines


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# --- schema -------------------------------------------------------------------------------------

def _duration(v: Any) -> float:
    try:
        return parse_duration(v)
    except SpecError as exc:
        raise ValueError(str(exc)) from None


def _size(v: Any) -> int:
    try:
        return parse_size(v)
    except SpecError as exc:
        raise ValueError(str(exc)) from None


Duration = Annotated[float, BeforeValidator(_duration)]
Size = Annotated[int, BeforeValidator(_size)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class FarmSpec(_Spec):
    name: str = Field("farm", min_length=1)
    down_after: Duration = Field(30.0, ge=5, description="a server is down after failing probes this long")
    health_interval: Duration = Field(10.0, ge=1)
    notify: list[str] = Field(default_factory=list)
    ownership_margin: float = Field(0.1, ge=0, le=10)
    auto_swap_back_after: Duration | None = None
    purge_guard_percent: float = Field(50, gt=0, le=100)
    clock_skew_max: Duration = 60.0
    stall_after: Duration = Field(120.0, ge=5, description="a recording camera without a new segment is stalled")
    failover_stalled: bool = False

    @field_validator("notify")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if "://" not in url:
                raise ValueError(f"not an apprise URL: {url!r}")
        return urls


class StorageSpec(_Spec):
    min_free: Size = 0
    min_free_percent: float = Field(0, ge=0, lt=100)
    availability: Availability = Availability.failover
    limit_storage_days: bool = False
    default_max_storage_days: int = Field(30, ge=1)
    keep_metadata_longer: bool = False
    default_metadata_days: int = Field(90, ge=1)
    default_path: str = "D:\\Data"

    @field_validator("default_path")
    @classmethod
    def _path(cls, v: str) -> str:
        try:
            return str(WindowsPath.parse(v))
        except SpecError as exc:
            raise ValueError(str(exc)) from None


class SmbSpec(_Spec):
    port: int = Field(445, ge=1, le=65535)
    username: str = ""
    password_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    password_secret: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9-]*$")
    signing: bool = True


class VolumeSpec(_Spec):
    drive: str = Field(pattern=r"^[A-Za-z]$")
    path: str | None = None
    capacity: Size | None = None

    @field_validator("drive")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()


_HEALTH_RE = re.compile(r"^(tcp://[^/:]+:\d{1,5}|https?://\S+|smb)$")


class ServerSpec(_Spec):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    host: str = Field(min_length=1)
    role: Role = Role.primary
    master: bool = False
    health: str = "smb"
    san_failover_mode: bool = False
    smb: SmbSpec = Field(default_factory=SmbSpec)
    max_cameras: int | None = Field(None, ge=0)
    maintenance: bool = False
    volumes: list[VolumeSpec] = Field(default_factory=list)
    failover_to: list[str] = Field(default_factory=list)

    @field_validator("health")
    @classmethod
    def _probe(cls, v: str) -> str:
        if not _HEALTH_RE.match(v):
            raise ValueError(f"not a health probe: {v!r} (use tcp://host:port, http(s)://..., or smb)")
        return v


class CameraSpec(_Spec):
    id: str
    name: str = ""
    home: str
    movable: bool = True
    streams: int = Field(1, ge=1, le=16)
    storage_path: str | None = None
    max_storage_days: str | None = None
    priority: int = Field(3, ge=1, le=5)
    stall_after: Duration | None = Field(None, ge=5)
    failover_stalled: bool | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not CAMERA_ID_RE.match(v):
            raise ValueError(f"{v!r} is not a camera id ([A-Za-z0-9_-], 1 to 64 characters)")
        return v

    @field_validator("max_storage_days", mode="before")
    @classmethod
    def _days_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class FarmFile(_Spec):
    farm: FarmSpec = Field(default_factory=FarmSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    servers: list[ServerSpec] = Field(min_length=1)
    cameras: list[CameraSpec] = Field(default_factory=list)


# --- loading and cross-checks -------------------------------------------------------------------

@dataclass
class _Problems:
    filename: str
    lines: dict[Path_, int]
    items: list[str] = field(default_factory=list)

    def add(self, path: Path_, message: str) -> None:
        line = self.line(path)
        self.items.append(f"{self.filename}:{line}: {_dotted(path)}: {message}" if path
                          else f"{self.filename}:{line}: {message}")

    def line(self, path: Path_) -> int:
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.lines:
                return self.lines[path[:cut]]
        return 1


def parse_farm_file(text: str, filename: str = "farm.yaml") -> FarmFile:
    """Parse and validate a farm file; raises ``FarmFileError`` with every problem found."""
    data, lines = load_yaml_with_lines(text, filename)
    problems = _Problems(filename, lines)
    if not isinstance(data, dict):
        raise FarmFileError([f"{filename}:1: the farm file must be a mapping with farm, storage, servers, cameras"])
    _reject_plain_passwords(data, problems)
    try:
        spec = FarmFile.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function"))))
            message = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            elif err["type"] == "missing":
                message = "required field missing"
            problems.add(loc, message)
        raise FarmFileError(problems.items) from None
    _cross_check(spec, problems)
    if problems.items:
        raise FarmFileError(problems.items)
    return spec


def load_farm_file(path: str | Path) -> FarmFile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise FarmFileError([f"{p}: cannot read the farm file: {exc.strerror}"]) from None
    return parse_farm_file(text, str(path))


def _reject_plain_passwords(data: dict[str, Any], problems: _Problems) -> None:
    servers = data.get("servers")
    for i, server in enumerate(servers if isinstance(servers, list) else []):
        smb = server.get("smb") if isinstance(server, dict) else None
        if isinstance(smb, dict) and "password" in smb:
            problems.add(("servers", i, "smb", "password"),
                         "passwords do not belong in the farm file: name an environment variable with "
                         "password_env or a Prefect Secret block with password_secret")
            del smb["password"]


def _cross_check(spec: FarmFile, problems: _Problems) -> None:
    names = {s.name for s in spec.servers}
    drives_by_server: dict[str, set[str]] = {}
    for i, server in enumerate(spec.servers):
        if server.name in drives_by_server:
            problems.add(("servers", i, "name"), f"duplicate server name {server.name!r}")
        drives: set[str] = set()
        for j, volume in enumerate(server.volumes):
            if volume.drive in drives:
                problems.add(("servers", i, "volumes", j, "drive"),
                             f"drive {volume.drive}: given twice for server {server.name}")
            drives.add(volume.drive)
        if not server.volumes:
            problems.add(("servers", i, "volumes"), f"server {server.name} has no volumes")
        if server.smb.password_env and server.smb.password_secret:
            problems.add(("servers", i, "smb"), "give password_env or password_secret, not both")
        drives_by_server.setdefault(server.name, set(drives))
    _check_failover_to(spec, names, problems)
    masters = [i for i, s in enumerate(spec.servers) if s.master]
    for i in masters[1:]:
        problems.add(("servers", i, "master"),
                     f"two masters: {spec.servers[masters[0]].name} and {spec.servers[i].name}")

    default_path = WindowsPath.parse(spec.storage.default_path)
    if default_path != default_data_root(default_path.drive) and not default_path.same_folder(
            default_data_root(default_path.drive)):
        problems.add(("storage", "default_path"),
                     f"{default_path} is not a shared Data folder (footage lives in X:\\Data, shared as DATAX)")
    seen: set[str] = set()
    per_server: Counter[str] = Counter()
    for i, camera in enumerate(spec.cameras):
        if camera.id in seen:
            problems.add(("cameras", i, "id"), f"duplicate camera id {camera.id!r}")
        seen.add(camera.id)
        if camera.home not in names:
            problems.add(("cameras", i, "home"), f"unknown server {camera.home!r}")
            continue
        per_server[camera.home] += 1
        paths: list[WindowsPath]
        if camera.storage_path:
            try:
                paths = list(StoragePathList.parse(camera.storage_path).paths)
            except SpecError as exc:
                problems.add(("cameras", i, "storage_path"), str(exc))
                paths = []
        else:
            paths = [default_path]
        field_name = "storage_path" if camera.storage_path else "home"
        for path in paths:
            if not path.same_folder(default_data_root(path.drive)):
                problems.add(("cameras", i, "storage_path"),
                             f"{path} is not a shared Data folder (use {default_data_root(path.drive)})")
            if path.drive not in drives_by_server[camera.home]:
                problems.add(("cameras", i, field_name),
                             f"path {path} is on drive {path.drive}: which server {camera.home} does not have "
                             f"(it has {', '.join(sorted(drives_by_server[camera.home])) or 'no volumes'})")
        if camera.max_storage_days is not None:
            try:
                parse_stream_days(camera.max_storage_days, camera.streams)
            except SpecError as exc:
                problems.add(("cameras", i, "max_storage_days"), str(exc))
    for i, server in enumerate(spec.servers):
        if server.max_cameras is not None and per_server[server.name] > server.max_cameras:
            problems.add(("servers", i, "max_cameras"),
                         f"{per_server[server.name]} cameras have home {server.name}, more than max_cameras "
                         f"{server.max_cameras}")


def _check_failover_to(spec: FarmFile, names: set[str], problems: _Problems) -> None:
    for i, server in enumerate(spec.servers):
        for j, target in enumerate(server.failover_to):
            if target not in names:
                problems.add(("servers", i, "failover_to", j), f"unknown server {target!r}")
            elif target == server.name:
                problems.add(("servers", i, "failover_to", j), f"{server.name} cannot fail over to itself")
        if len(set(server.failover_to)) != len(server.failover_to):
            problems.add(("servers", i, "failover_to"), "a server is named twice")


# --- apply and export ---------------------------------------------------------------------------

@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.removed)


def _assign(obj: Any, values: dict[str, Any], label: str, result: ApplyResult) -> None:
    changed = [k for k, v in values.items() if getattr(obj, k) != v]
    for key in changed:
        setattr(obj, key, values[key])
    if changed:
        result.updated.append(f"{label} ({', '.join(changed)})")


def apply_farm_file(session: Session, spec: FarmFile) -> ApplyResult:
    """Make the inventory match ``spec`` inside the caller's transaction; runtime state is kept.

    Declared values (home, role, master) override the runtime ones only when the file changes them.
    """
    from farmkeeper.inventory import check_server_removal  # late: inventory imports this module's types

    result = ApplyResult()
    farm = session.get(FarmSettings, 1)
    if farm is None:
        farm = FarmSettings(id=1)
        session.add(farm)
        result.created.append("farm settings")
    _assign(farm, {
        "name": spec.farm.name, "down_after_s": spec.farm.down_after,
        "health_interval_s": spec.farm.health_interval, "notify": list(spec.farm.notify),
        "ownership_margin": spec.farm.ownership_margin, "auto_swap_back_after_s": spec.farm.auto_swap_back_after,
        "purge_guard_fraction": spec.farm.purge_guard_percent / 100, "clock_skew_max_s": spec.farm.clock_skew_max,
        "stall_after_s": spec.farm.stall_after, "failover_stalled": spec.farm.failover_stalled,
    }, "farm", result)
    storage = session.get(StorageSettings, 1)
    if storage is None:
        storage = StorageSettings(id=1)
        session.add(storage)
        result.created.append("storage settings")
    s = spec.storage
    _assign(storage, {
        "min_free_bytes": s.min_free, "min_free_percent": s.min_free_percent, "availability": s.availability,
        "limit_storage_days": s.limit_storage_days, "default_max_storage_days": s.default_max_storage_days,
        "keep_metadata_longer": s.keep_metadata_longer, "default_metadata_days": s.default_metadata_days,
        "default_path": s.default_path,
    }, "storage", result)

    existing = {srv.name: srv for srv in session.exec(select(Server))}
    wanted = {srv.name for srv in spec.servers}
    declared_master = next((srv.name for srv in spec.servers if srv.master), spec.servers[0].name)
    for server_spec in spec.servers:
        declared: dict[str, Any] = {
            "host": server_spec.host, "health": server_spec.health,
            "san_failover_mode": server_spec.san_failover_mode, "smb_port": server_spec.smb.port,
            "smb_username": server_spec.smb.username, "smb_password_env": server_spec.smb.password_env,
            "smb_password_secret": server_spec.smb.password_secret, "smb_signing": server_spec.smb.signing,
            "max_cameras": server_spec.max_cameras, "maintenance": server_spec.maintenance,
            "failover_to": list(server_spec.failover_to),
        }
        is_master = server_spec.name == declared_master
        server = existing.get(server_spec.name)
        if server is None:
            server = Server(name=server_spec.name, role=server_spec.role, declared_role=server_spec.role,
                            master=is_master, declared_master=is_master, **declared)
            session.add(server)
            result.created.append(f"server {server.name}")
        else:
            if server.declared_role != server_spec.role:
                declared |= {"role": server_spec.role, "declared_role": server_spec.role}
            if server.declared_master != is_master:
                declared |= {"declared_master": is_master}
                if is_master:
                    for other in existing.values():
                        if other.master and other.name != server.name:
                            other.master = False
                    declared["master"] = True
            _assign(server, declared, f"server {server.name}", result)
        _apply_volumes(session, server_spec, result)
    session.flush()

    cams = {cam.id: cam for cam in session.exec(select(Camera))}
    for camera_spec in spec.cameras:
        values: dict[str, Any] = {"name": camera_spec.name, "movable": camera_spec.movable,
                                  "streams": camera_spec.streams, "storage_path": camera_spec.storage_path,
                                  "max_storage_days": camera_spec.max_storage_days,
                                  "priority": camera_spec.priority, "stall_after_s": camera_spec.stall_after,
                                  "failover_stalled": camera_spec.failover_stalled}
        camera = cams.get(camera_spec.id)
        if camera is None:
            session.add(Camera(id=camera_spec.id, declared_home=camera_spec.home, home=camera_spec.home,
                               current=camera_spec.home, **values))
            result.created.append(f"camera {camera_spec.id}")
            continue
        if camera.declared_home != camera_spec.home:
            values |= {"declared_home": camera_spec.home, "home": camera_spec.home}
        _assign(camera, values, f"camera {camera.id}", result)
    wanted_cams = {c.id for c in spec.cameras}
    for cam_id, camera in cams.items():
        if cam_id not in wanted_cams:
            session.delete(camera)
            result.removed.append(f"camera {cam_id}")
    session.flush()
    for name, server in existing.items():
        if name not in wanted:
            check_server_removal(session, server)
            session.delete(server)
            result.removed.append(f"server {name}")
    session.flush()
    return result


def _apply_volumes(session: Session, server_spec: ServerSpec, result: ApplyResult) -> None:
    current = {v.drive: v for v in session.exec(select(Volume).where(Volume.server_name == server_spec.name))}
    for vol_spec in server_spec.volumes:
        vol = current.pop(vol_spec.drive, None)
        values: dict[str, Any] = {"path": vol_spec.path, "capacity_bytes": vol_spec.capacity}
        if vol is None:
            session.add(Volume(server_name=server_spec.name, drive=vol_spec.drive, **values))
            result.created.append(f"volume {server_spec.name} {vol_spec.drive}:")
        else:
            _assign(vol, values, f"volume {server_spec.name} {vol_spec.drive}:", result)
    for drive, vol in current.items():
        session.delete(vol)
        result.removed.append(f"volume {server_spec.name} {drive}:")


def export_farm(session: Session) -> dict[str, Any]:
    """The inventory as farm-file data: applying it to an empty inventory gives this one back."""
    farm = session.get(FarmSettings, 1) or FarmSettings()
    st = session.get(StorageSettings, 1) or StorageSettings()
    out: dict[str, Any] = {
        "farm": {
            "name": farm.name, "down_after": format_duration(farm.down_after_s),
            "health_interval": format_duration(farm.health_interval_s), "notify": list(farm.notify),
            "ownership_margin": farm.ownership_margin, "purge_guard_percent": round(farm.purge_guard_fraction * 100, 6),
            "clock_skew_max": format_duration(farm.clock_skew_max_s),
            "stall_after": format_duration(farm.stall_after_s), "failover_stalled": farm.failover_stalled,
        },
        "storage": {
            "min_free": format_size(st.min_free_bytes), "min_free_percent": st.min_free_percent,
            "availability": st.availability.value, "limit_storage_days": st.limit_storage_days,
            "default_max_storage_days": st.default_max_storage_days,
            "keep_metadata_longer": st.keep_metadata_longer, "default_metadata_days": st.default_metadata_days,
            "default_path": st.default_path,
        },
        "servers": [],
        "cameras": [],
    }
    if farm.auto_swap_back_after_s is not None:
        out["farm"]["auto_swap_back_after"] = format_duration(farm.auto_swap_back_after_s)
    for server in session.exec(select(Server).order_by(Server.name)):
        smb: dict[str, Any] = {"port": server.smb_port, "username": server.smb_username, "signing": server.smb_signing}
        if server.smb_password_env:
            smb["password_env"] = server.smb_password_env
        if server.smb_password_secret:
            smb["password_secret"] = server.smb_password_secret
        entry: dict[str, Any] = {
            "name": server.name, "host": server.host, "role": server.role.value, "master": server.master,
            "health": server.health, "san_failover_mode": server.san_failover_mode, "smb": smb,
            "maintenance": server.maintenance, "volumes": [],
        }
        if server.max_cameras is not None:
            entry["max_cameras"] = server.max_cameras
        if server.failover_to:
            entry["failover_to"] = list(server.failover_to)
        for vol in session.exec(select(Volume).where(Volume.server_name == server.name).order_by(Volume.drive)):
            v: dict[str, Any] = {"drive": vol.drive}
            if vol.path is not None:
                v["path"] = vol.path
            if vol.capacity_bytes is not None:
                v["capacity"] = format_size(vol.capacity_bytes)
            entry["volumes"].append(v)
        out["servers"].append(entry)
    for cam in session.exec(select(Camera).order_by(Camera.id)):
        c: dict[str, Any] = {"id": cam.id, "name": cam.name, "home": cam.home, "movable": cam.movable,
                             "streams": cam.streams}
        if cam.storage_path:
            c["storage_path"] = cam.storage_path
        if cam.max_storage_days:
            c["max_storage_days"] = cam.max_storage_days
        if cam.priority != 3:
            c["priority"] = cam.priority
        if cam.stall_after_s is not None:
            c["stall_after"] = format_duration(cam.stall_after_s)
        if cam.failover_stalled is not None:
            c["failover_stalled"] = cam.failover_stalled
        out["cameras"].append(c)
    return out


def dump_farm_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)


__all__ = ["ApplyResult", "FarmFile", "apply_farm_file", "dump_farm_yaml", "export_farm", "load_farm_file",
           "parse_farm_file"]

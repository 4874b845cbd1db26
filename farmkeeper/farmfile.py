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
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError, field_validator
from sqlmodel import Session, select

from farmkeeper import hooks
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
from farmkeeper.notify import readable_target, redact_target
from farmkeeper.samestorage import VolumeRef, same_storage_pairs
from farmkeeper.specs import (
    BOUNDS,
    StoragePathList,
    WindowsPath,
    format_duration,
    format_size,
    parse_duration,
    parse_stream_days,
)
from farmkeeper.volumes import normalize_unc

Path_ = tuple[str | int, ...]


# --- YAML with line numbers ---------------------------------------------------------------------

MAX_FILE_CHARS = 16 * 2**20    # a 4 500-camera farm file is ~0.5 MB
MAX_DEPTH = 64                 # the farm file nests 5 deep; YAML bombs and stack overflows nest thousands
MAX_NODES = 50_000             # values, keys included: ~4 500 cameras written as flow mappings
MAX_SCALAR_CHARS = 4096
# control characters, lone surrogates, line/paragraph separators, bidirectional overrides: never in a farm file
_BAD_CHARS_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NOTHING = object()
_STR_TAG = "tag:yaml.org,2002:str"
_CSafeLoader: Any = getattr(yaml, "CSafeLoader", None)
_EVENT_LOADER: Any = _CSafeLoader or yaml.SafeLoader


@dataclass
class _Open:
    """A mapping or sequence being built from YAML events."""

    value: dict[str, Any] | list[Any]
    path: Path_
    key: str | None = None


class _Builder:
    """Plain data from YAML events, one event at a time (no recursion, no alias expansion).

    Refuses aliases and anchors, nesting deeper than ``MAX_DEPTH``, more than ``MAX_NODES`` values and
    over-long or control-character scalars as it reads, so a hostile file costs what its first bad event costs.
    """

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines: dict[Path_, int] = {}
        self.problems: list[str] = []
        self.stack: list[_Open] = []
        self.root: Any = _NOTHING
        self.nodes = 0
        self.documents = 0
        self.scalars = yaml.SafeLoader("")   # tag resolution and scalar construction only

    def fail(self, line: int, path: Path_, message: str) -> FarmFileError:
        where = f"{_dotted(path)}: " if path else ""
        return FarmFileError([*self.problems, f"{self.filename}:{line}: {where}{message}"])

    def feed(self, event: yaml.Event) -> None:
        kind = type(event)
        if kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            self.stack.pop()
            return
        line = event.start_mark.line + 1 if event.start_mark is not None else 1
        if kind is yaml.DocumentStartEvent:
            self.documents += 1
            if self.documents > 1:
                raise self.fail(line, (), "one YAML document per farm file (found a second '---')")
            return
        if kind is yaml.StreamStartEvent or kind is yaml.StreamEndEvent or kind is yaml.DocumentEndEvent:
            return
        parent = self.stack[-1] if self.stack else None
        is_key = parent is not None and parent.key is None and type(parent.value) is dict
        path: Path_ = () if parent is None else parent.path
        if parent is not None and not is_key:
            path = (*path, parent.key if parent.key is not None else len(parent.value))
        if kind is yaml.AliasEvent:
            raise self.fail(line, path, f"YAML aliases (*{event.anchor}) are not allowed in a farm file; "  # type: ignore[attr-defined]
                                        "write the value out")
        if event.anchor is not None:  # type: ignore[attr-defined]
            raise self.fail(line, path, f"YAML anchors (&{event.anchor}) are not allowed in a farm file")  # type: ignore[attr-defined]
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(line, path, f"more than {MAX_NODES} values in one farm file")
        if is_key:
            self._key(event, parent, line)  # type: ignore[arg-type]
            return
        if path not in self.lines:
            self.lines[path] = line
        value: Any
        if kind is yaml.ScalarEvent:
            value = self._scalar(event, path, line)  # type: ignore[arg-type]
        else:
            if len(self.stack) >= MAX_DEPTH:
                raise self.fail(line, path, f"nested deeper than {MAX_DEPTH} levels")
            value = {} if kind is yaml.MappingStartEvent else []
        if parent is None:
            self.root = value
        elif parent.key is not None:
            parent.value[parent.key] = value  # type: ignore[call-overload]
            parent.key = None
        else:
            parent.value.append(value)  # type: ignore[union-attr]
        if kind is not yaml.ScalarEvent:
            self.stack.append(_Open(value, path))

    def _key(self, event: yaml.Event, parent: _Open, line: int) -> None:
        if type(event) is not yaml.ScalarEvent:
            raise self.fail(line, parent.path, "a key must be a plain name, not a list or mapping")
        key = event.value
        self._check_text(key, parent.path, line)
        if key in parent.value:
            raise self.fail(line, (*parent.path, key), "key given twice")
        self.lines[(*parent.path, key)] = line
        parent.key = key

    def _scalar(self, event: yaml.ScalarEvent, path: Path_, line: int) -> Any:
        tag, text = event.tag, event.value
        if tag is None or tag == "!":
            tag = self.scalars.resolve(yaml.ScalarNode, text, event.implicit)  # type: ignore[no-untyped-call]
        if tag == _STR_TAG:
            value: Any = text
        else:
            if len(text) > 100:
                raise self.fail(line, path, f"too long for a YAML {tag.rsplit(':', 1)[-1]} (more than 100 characters)")
            construct = self.scalars.yaml_constructors.get(tag)
            if construct is None:
                raise self.fail(line, path, f"the YAML tag {tag} is not allowed in a farm file")
            node = yaml.ScalarNode(tag, text, None, None, event.style)
            try:
                value = construct(self.scalars, node)
            except (yaml.YAMLError, ValueError, OverflowError, TypeError) as exc:
                problem = getattr(exc, "problem", None) or str(exc)
                raise self.fail(line, path, f"not a valid value: {_one_line(problem)}") from None
        if type(value) is str:
            self._check_text(value, path, line)
        return value

    def _check_text(self, text: str, path: Path_, line: int) -> None:
        if len(text) > MAX_SCALAR_CHARS:
            self.problems.append(f"{self.filename}:{line}: {_dotted(path) or 'value'}: longer than "
                                 f"{MAX_SCALAR_CHARS} characters")
        bad = _BAD_CHARS_RE.search(text)
        if bad:
            self.problems.append(f"{self.filename}:{line}: {_dotted(path) or 'value'}: control character "
                                 f"{ascii(bad.group())} is not allowed")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _yaml_error(exc: yaml.YAMLError, text: str, filename: str) -> FarmFileError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
    opened = getattr(exc, "context_mark", None)
    context = str(getattr(exc, "context", None) or "")
    if opened is not None and mark is not None and opened.line < mark.line and (
            "stream end" in problem or "flow" in context or "quoted" in context):
        mark = opened   # an unclosed bracket or quote: point at where it opened
    if mark is not None:
        line = mark.line + 1
    elif isinstance(getattr(exc, "position", None), int):
        line = text.count("\n", 0, exc.position) + 1  # type: ignore[attr-defined]
    else:
        line = 1
    character = getattr(exc, "character", None)
    if isinstance(character, int | str) and not getattr(exc, "problem", None):
        code = character if isinstance(character, int) else ord(character[:1] or "\0")
        problem = f"character #x{code:04x} is not allowed"
    if "nesting depth" in problem:   # libyaml's own limit (1000), met while reading ahead of ours
        return FarmFileError([f"{filename}:{line}: nested deeper than {MAX_DEPTH} levels"])
    return FarmFileError([f"{filename}:{line}: not valid YAML: {_one_line(problem)}"])


def load_yaml_with_lines(text: str, filename: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML into plain data plus a map from each key path to its 1-based line.

    Hostile input is refused before it costs anything: no aliases or anchors (nothing is expanded), at most
    ``MAX_DEPTH`` levels, ``MAX_NODES`` values and ``MAX_SCALAR_CHARS`` per value, no control characters.
    """
    if len(text) > MAX_FILE_CHARS:
        raise FarmFileError([f"{filename}:1: the farm file is larger than {MAX_FILE_CHARS // 2**20} MiB"])
    builder = _Builder(filename)
    try:
        for event in yaml.parse(text, Loader=_EVENT_LOADER):
            builder.feed(event)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, filename) from None
    if builder.problems:
        raise FarmFileError(builder.problems)
    return ({} if builder.root is _NOTHING else builder.root), builder.lines


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, str) and not part.isprintable():
            part = ascii(part)
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# --- schema -------------------------------------------------------------------------------------

def _bounded(key: str, kind: str) -> BeforeValidator:
    """A validator that reads a farm-file number of ``kind`` and checks it against ``BOUNDS[key]``."""
    bounds = BOUNDS[key]
    read = {"duration": bounds.duration, "size": bounds.size, "integer": bounds.integer,
            "number": bounds.number}[kind]
    return BeforeValidator(read)


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, _bounded("size", "size")]
Days = Annotated[int, _bounded("days", "integer")]
Percent = Annotated[float, _bounded("percent", "number")]


def _notify_entry(v: Any) -> str | dict[str, str]:
    """A notify entry: an apprise URL, ``{env: NAME}`` or ``{secret: BLOCK}``."""
    if isinstance(v, str):
        if "://" not in v:
            raise ValueError(f"not an apprise URL: {redact_target(v)} (give scheme://..., {{env: NAME}} or "
                             "{secret: BLOCK})")
        if not readable_target(v):
            raise ValueError(f"apprise cannot send to {redact_target(v)}: unknown service or a part missing "
                             "(see the apprise wiki for the service's URL)")
        return v
    if isinstance(v, dict):
        if set(v) - {"env", "secret"} or len(v) != 1:
            raise ValueError("a reference is {env: NAME} or {secret: BLOCK}, one key")
        (kind, name), = v.items()
        pattern = r"[A-Za-z_][A-Za-z0-9_]{0,127}" if kind == "env" else r"[a-z0-9][a-z0-9-]{0,127}"
        if not isinstance(name, str) or not re.fullmatch(pattern, name):
            what = "an environment variable name" if kind == "env" else "a Prefect block name (a-z, 0-9, -)"
            raise ValueError(f"{kind}: {name!r} is not {what}")
        return {kind: name}
    raise ValueError("a notify entry is an apprise URL, {env: NAME} or {secret: BLOCK}")


NotifyEntry = Annotated[str | dict[str, str], BeforeValidator(_notify_entry)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)


class FarmSpec(_Spec):
    name: str = Field("farm", min_length=1, max_length=200)
    down_after: Annotated[float, _bounded("down_after", "duration")] = Field(
        30.0, description="a server is down after failing probes this long")
    health_interval: Annotated[float, _bounded("health_interval", "duration")] = 10.0
    notify: list[NotifyEntry] = Field(default_factory=list, max_length=100)
    ownership_margin: Annotated[float, _bounded("ownership_margin", "number")] = 0.1
    auto_swap_back_after: Annotated[float, _bounded("auto_swap_back_after", "duration")] | None = None
    purge_guard_percent: Percent = 50
    clock_skew_max: Annotated[float, _bounded("clock_skew_max", "duration")] = 60.0
    stall_after: Annotated[float, _bounded("stall_after", "duration")] = Field(
        120.0, description="a recording camera without a new segment is stalled")
    failover_stalled: bool = False

    @field_validator("purge_guard_percent")
    @classmethod
    def _above_zero(cls, v: float) -> float:
        if v <= 0:
            raise ValueError(f"{v:g} is out of range: more than 0, at most 100")
        return v


class StorageSpec(_Spec):
    min_free: Size = 0
    min_free_percent: Percent = Field(0, lt=100)
    availability: Availability = Availability.failover
    limit_storage_days: bool = False
    default_max_storage_days: Days = 30
    keep_metadata_longer: bool = False
    default_metadata_days: Days = 90
    default_path: str = "D:\\Data"

    @field_validator("default_path")
    @classmethod
    def _path(cls, v: str) -> str:
        try:
            return str(WindowsPath.parse(v))
        except SpecError as exc:
            raise ValueError(str(exc)) from None


class SmbSpec(_Spec):
    port: Annotated[int, _bounded("port", "integer")] = 445
    username: str = Field("", max_length=256)
    password_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    password_secret: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9-]*$")
    signing: bool = True


class VolumeSpec(_Spec):
    drive: str = Field(pattern=r"^[A-Za-z]$")
    path: str | None = Field(None, max_length=4096)
    capacity: Size | None = None
    unc: str | None = None                 # central storage (NAS): '\\nas01\cctv'

    @field_validator("unc")
    @classmethod
    def _unc(cls, v: str | None) -> str | None:
        return None if v is None else normalize_unc(v)

    @field_validator("drive")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()


_HEALTH_RE = re.compile(r"^(tcp://[^/:]+:\d{1,5}|https?://\S+|smb)$")


class ServerSpec(_Spec):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    host: str = Field(min_length=1, max_length=253)
    role: Role = Role.primary
    master: bool = False
    health: str = "smb"
    san_failover_mode: bool = False
    smb: SmbSpec = Field(default_factory=SmbSpec)
    max_cameras: Annotated[int, _bounded("max_cameras", "integer")] | None = None
    maintenance: bool = False
    volumes: list[VolumeSpec] = Field(default_factory=list)
    failover_to: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("health")
    @classmethod
    def _probe(cls, v: str) -> str:
        if not _HEALTH_RE.match(v):
            raise ValueError(f"not a health probe: {v!r} (use tcp://host:port, http(s)://..., or smb)")
        return v


class CameraSpec(_Spec):
    id: str
    name: str = Field("", max_length=200)
    home: str
    movable: bool = True
    streams: Annotated[int, _bounded("streams", "integer")] = 1
    storage_path: str | None = None
    max_storage_days: str | None = None
    priority: Annotated[int, _bounded("priority", "integer")] = 3
    stall_after: Annotated[float, _bounded("stall_after", "duration")] | None = None
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
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """``file:line: field: message`` for settings that parse but do not do what they seem to (not errors)."""
        return self._warnings


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
    notes = _Problems(filename, lines)
    _storage_warnings(spec, notes)
    spec._warnings = notes.items
    return spec


def _storage_warnings(spec: FarmFile, notes: _Problems) -> None:
    """Storage settings that have no effect, or whose effect surprises (metadata going before video)."""
    st = spec.storage
    given = st.model_fields_set
    if not st.limit_storage_days:
        off = "has no effect: storage.limit_storage_days is false (no footage is deleted by age)"
        for key in ("default_max_storage_days", "default_metadata_days"):
            if key in given:
                notes.add(("storage", key), off)
        for i, cam in enumerate(spec.cameras):
            if cam.max_storage_days is not None:
                notes.add(("cameras", i, "max_storage_days"), off)
        return
    if not st.keep_metadata_longer:
        if "default_metadata_days" in given:
            notes.add(("storage", "default_metadata_days"),
                      "has no effect: storage.keep_metadata_longer is false (metadata goes with each camera's "
                      "longest-kept video)")
        return
    shorter = []
    for cam in spec.cameras:
        try:
            days = (parse_stream_days(cam.max_storage_days, cam.streams) if cam.max_storage_days
                    else (st.default_max_storage_days,) * cam.streams)
        except SpecError:
            continue
        if max(days) > st.default_metadata_days:
            shorter.append(f"{cam.id} ({max(days)})")
    if shorter:
        key = "default_metadata_days" if "default_metadata_days" in given else "keep_metadata_longer"
        notes.add(("storage", key),
                  f"metadata is kept {st.default_metadata_days} days, fewer than the video days of "
                  f"{', '.join(shorter[:5])}{' and more' if len(shorter) > 5 else ''}: their metadata is deleted "
                  "before their video")


def load_farm_file(path: str | Path) -> FarmFile:
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_FILE_CHARS * 4 + 1)
    except OSError as exc:
        raise FarmFileError([f"{p}: cannot read the farm file: {exc.strerror}"]) from None
    if len(raw) > MAX_FILE_CHARS * 4:
        raise FarmFileError([f"{p}:1: the farm file is larger than {MAX_FILE_CHARS // 2**20} MiB"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise FarmFileError([f"{p}:{line}: not UTF-8 (byte {raw[exc.start]:#04x}); save the farm file as UTF-8"]
                            ) from None
    return parse_farm_file(text.removeprefix("\ufeff"), str(path))


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
    if spec.farm.health_interval > spec.farm.down_after:
        problems.add(("farm", "health_interval"),
                     f"{format_duration(spec.farm.health_interval)} is longer than down_after "
                     f"{format_duration(spec.farm.down_after)} (range {BOUNDS['health_interval'].spell(0.5)} .. "
                     "down_after): a server would be down between two probes")
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
    _check_same_storage(spec, problems)
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


def _check_same_storage(spec: FarmFile, problems: _Problems) -> None:
    """Two volumes that are one storage (same folder, nested, same SMB share) are an error naming both."""
    refs: list[VolumeRef] = []
    places: dict[str, Path_] = {}
    for i, server in enumerate(spec.servers):
        for j, volume in enumerate(server.volumes):
            at: Path_ = ("servers", i, "volumes", j)
            where = f"{problems.filename}:{problems.line(at)} ({server.name} {volume.drive}:)"
            places[where] = at
            refs.append(VolumeRef(where, server.name, volume.drive, server.host, server.smb.port, volume.path,
                                  getattr(volume, "unc", None)))
    for a, b, why in same_storage_pairs(refs):
        problems.add(places[b.where], f"the same storage as {a.where}: {why}; footage would be copied onto itself "
                     "(and the only copy deleted). Give each volume its own storage, or declare central storage "
                     "with the same unc on both")


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


def _assign(obj: Any, values: dict[str, Any], label: str, result: ApplyResult) -> bool:
    """Set the values that differ; whether any did."""
    changed = [k for k, v in values.items() if getattr(obj, k) != v]
    for key in changed:
        setattr(obj, key, values[key])
    if changed:
        result.updated.append(f"{label} ({', '.join(changed)})")
    return bool(changed)


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

    from farmkeeper.inventory import lock_servers  # late: inventory imports this module's types

    # The server rows are locked (name order, as failovers do) before they are read: the master is decided
    # on the rows this transaction holds, never on a view another writer changes meanwhile.
    existing = {srv.name: srv for srv in lock_servers(session)}
    hooks.reached("apply.servers-locked", session=session)
    wanted = {srv.name for srv in spec.servers}
    declared_master = next((srv.name for srv in spec.servers if srv.master), spec.servers[0].name)
    master_declared_now = False
    kept: list[Server] = []      # the servers of the file: rows locked above and new ones
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
                            master=False, declared_master=is_master, **declared)
            session.add(server)
            result.created.append(f"server {server.name}")
            master_declared_now |= is_master
        else:
            if server.declared_role != server_spec.role:
                declared |= {"role": server_spec.role, "declared_role": server_spec.role}
            if server.declared_master != is_master:
                declared |= {"declared_master": is_master}
                master_declared_now |= is_master
            _assign(server, declared, f"server {server.name}", result)
        kept.append(server)
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
        if _assign(camera, values, f"camera {camera.id}", result):
            camera.version += 1          # every camera writer bumps it: a watching run's memory reloads
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
    _apply_master(session, kept, declared_master if master_declared_now else None, result)
    return result


def _apply_master(session: Session, servers: list[Server], declared: str | None, result: ApplyResult) -> None:
    """The file names a new master (``declared``): it becomes the one master; a farm left without one elects it."""
    from farmkeeper.failover import ensure_master, set_master
    from farmkeeper.inventory import record_server_event

    servers.sort(key=lambda s: s.name)
    if declared is not None:
        was_master = any(s.master and s.name == declared for s in servers)
        previous = set_master(session, servers, declared)
        if not was_master and f"server {declared}" not in result.created:
            result.updated.append(f"server {declared} (master)")
            record_server_event(session, declared, "master", previous=previous, reason="farm file")
    elif not any(s.master for s in servers):
        ensure_master(session, servers)


def _apply_volumes(session: Session, server_spec: ServerSpec, result: ApplyResult) -> None:
    current = {v.drive: v for v in session.exec(select(Volume).where(Volume.server_name == server_spec.name))}
    for vol_spec in server_spec.volumes:
        vol = current.pop(vol_spec.drive, None)
        values: dict[str, Any] = {"path": vol_spec.path, "capacity_bytes": vol_spec.capacity, "unc": vol_spec.unc}
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
            if vol.unc is not None:
                v["unc"] = vol.unc
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

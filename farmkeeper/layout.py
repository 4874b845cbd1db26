"""The footage layout on a volume, and the mapping between Windows paths and ``\\\\server\\DATAX`` shares.

::

    video/<camera>/<stream>/<YYYY-MM-DD>/<HH>/<YYYYMMDDTHHMMSSZ>.<ext>
    meta/<camera>/<YYYY-MM-DD>/<HH>/<YYYYMMDDTHHMMSSZ>.<ext>

Relative paths always use ``/``; timestamps are UTC and the name gives a file's age without a stat.

A copy that met a different file of the same name at its destination is kept beside it as
``<YYYYMMDDTHHMMSSZ>~<source server>.<ext>`` (a *conflict copy*): footage of the same camera and time,
so retention's age rules, floors and holds apply to it like to any segment. This module is the one
place that grammar lives (``FOOTAGE_RE``, ``FILE_NAME_RE``, ``conflict_name``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from farmkeeper.errors import SpecError
from farmkeeper.specs import WindowsPath

VIDEO: Final = "video"
META: Final = "meta"
FOOTAGE_ROOTS = (VIDEO, META)
CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CONFLICT_SEP: Final = "~"
_TAG = r"[A-Za-z0-9_.-]{1,64}"                 # a source server's name as a conflict copy carries it
_STAMP_RE = re.compile(r"^(\d{8}T\d{6}Z)(?:~(" + _TAG + r"))?\.([A-Za-z0-9]{1,8})$")
#: a footage file name: groups (YYYYMMDD, HH); minutes and seconds checked, conflict tag allowed
FILE_NAME_RE: Final = re.compile(r"^(\d{8})T(\d\d)[0-5]\d[0-5]\dZ(?:~" + _TAG + r")?\.[A-Za-z0-9]{1,8}$")
#: a footage relpath in one match (retention's fast path): groups 1 video camera, 2 stream, 3 meta camera,
#: 4-7 year, month, day, hour folders, 8 the stamp, 9 its YYYYMMDD, 10 its HH
FOOTAGE_RE: Final = re.compile(
    r"^(?:video/([A-Za-z0-9_-]{1,64})/(0|[1-9][0-9]{0,3})|meta/([A-Za-z0-9_-]{1,64}))/"
    r"(\d{4})-(\d\d)-(\d\d)/(\d\d)/((\d{8})T(\d\d)\d{4}Z)(?:~" + _TAG + r")?\.[A-Za-z0-9]{1,8}$")
_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HOUR_RE = re.compile(r"^\d{2}$")

Kind = Literal["video", "meta"]


_BAD_PARTS = frozenset(("", ".", ".."))


def safe_relpath(path: str) -> str:
    """Normalise a share-relative path to ``a/b/c`` or raise ``SpecError``.

    Rejects ``..``, ``.``, empty parts, absolute paths, drive- or UNC-qualified parts and NUL;
    this is the one gate every storage operation passes before any I/O.
    """
    if not isinstance(path, str) or "\x00" in path:
        raise SpecError(f"not a path: {path!r}")
    if "\\" not in path and ":" not in path and not path.startswith("/") and \
            _BAD_PARTS.isdisjoint(path.split("/")):
        return path                        # already normal (every generated path): the checks below pass it as is
    text = path.replace("\\", "/")
    if text.startswith("/"):
        raise SpecError(f"absolute path not allowed: {path!r}")
    parts = text.split("/")
    if parts and parts[-1] == "":
        parts = parts[:-1]
    for part in parts:
        if part in ("", ".", ".."):
            raise SpecError(f"path part {part!r} not allowed in {path!r}")
        if ":" in part:
            raise SpecError(f"drive-qualified or stream part not allowed in {path!r}")
    return "/".join(parts)


@dataclass(frozen=True, order=True)
class FootagePath:
    """One footage file in the layout; ``stream`` is ``None`` for metadata; ``copy_of``: the source server
    of a conflict copy (``<stamp>~<server>.<ext>``), else ``None``."""

    start: datetime
    kind: Kind
    camera: str
    stream: int | None
    ext: str
    copy_of: str | None = None

    @property
    def relpath(self) -> str:
        s = self.start      # formatted by hand: strftime three times was most of the cost (the watchdog's names)
        day = f"{s.year:04d}-{s.month:02d}-{s.day:02d}"
        hour = f"{s.hour:02d}"
        tag = f"{CONFLICT_SEP}{self.copy_of}" if self.copy_of else ""
        name = f"{s.year:04d}{s.month:02d}{s.day:02d}T{hour}{s.minute:02d}{s.second:02d}Z{tag}.{self.ext}"
        if self.kind == VIDEO:
            return f"{VIDEO}/{self.camera}/{self.stream}/{day}/{hour}/{name}"
        return f"{META}/{self.camera}/{day}/{hour}/{name}"

    @property
    def timestamp(self) -> float:
        return self.start.timestamp()


def video_path(camera: str, stream: int, start: datetime, ext: str = "mkv") -> FootagePath:
    return _checked(FootagePath(_utc(start), VIDEO, camera, stream, ext))


def meta_path(camera: str, start: datetime, ext: str = "json") -> FootagePath:
    return _checked(FootagePath(_utc(start), META, camera, None, ext))


def _utc(moment: datetime) -> datetime:
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(microsecond=0)


def _checked(fp: FootagePath) -> FootagePath:
    if not CAMERA_ID_RE.match(fp.camera):
        raise SpecError(f"not a camera id: {fp.camera!r}")
    if fp.stream is not None and fp.stream < 0:
        raise SpecError(f"stream must be >= 0: {fp.stream}")
    if not re.fullmatch(r"[A-Za-z0-9]{1,8}", fp.ext):
        raise SpecError(f"not a file extension: {fp.ext!r}")
    return fp


def parse_footage(relpath: str) -> FootagePath:
    """Parse a share-relative path of the layout, or raise ``SpecError`` naming the path."""
    parts = safe_relpath(relpath).split("/")
    if parts[0] == VIDEO and len(parts) == 6:
        _, camera, stream_text, day, hour, name = parts
        if not stream_text.isdigit() or (len(stream_text) > 1 and stream_text[0] == "0"):
            raise SpecError(f"{relpath}: stream folder {stream_text!r} is not a stream number")
        stream: int | None = int(stream_text)
        kind: Kind = VIDEO
    elif parts[0] == META and len(parts) == 5:
        _, camera, day, hour, name = parts
        stream, kind = None, META
    else:
        raise SpecError(f"{relpath}: not in the footage layout (video/<camera>/<stream>/<day>/<hour>/<stamp>.<ext>"
                        " or meta/<camera>/<day>/<hour>/<stamp>.<ext>)")
    if not CAMERA_ID_RE.match(camera):
        raise SpecError(f"{relpath}: {camera!r} is not a camera id")
    match = _STAMP_RE.match(name)
    if not match or not _DAY_RE.match(day) or not _HOUR_RE.match(hour):
        raise SpecError(f"{relpath}: file or folder name is not a UTC timestamp of the layout")
    try:
        start = parse_stamp(match.group(1))
    except ValueError:
        raise SpecError(f"{relpath}: {match.group(1)!r} is not a valid timestamp") from None
    if start.strftime("%Y-%m-%d") != day or start.strftime("%H") != hour:
        raise SpecError(f"{relpath}: file time does not match its day/hour folders")
    return FootagePath(start, kind, camera, stream, match.group(3), match.group(2))


def try_parse_footage(relpath: str) -> FootagePath | None:
    try:
        return parse_footage(relpath)
    except SpecError:
        return None


def conflict_name(relpath: str, server: str) -> str:
    """``video/c/0/d/h/20240101T000000Z.mkv`` → ``.../20240101T000000Z~rec2.mkv`` (the conflict copy's name)."""
    head, _, name = relpath.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    safe_server = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in server)
    new = f"{stem}{CONFLICT_SEP}{safe_server}.{ext}" if dot and stem else f"{name}{CONFLICT_SEP}{safe_server}"
    return f"{head}/{new}" if head else new


def camera_roots(camera: str, streams: int | None = None) -> list[str]:
    """The folders holding a camera's footage: ``video/<cam>`` (or its stream folders) and ``meta/<cam>``."""
    if not CAMERA_ID_RE.match(camera):
        raise SpecError(f"not a camera id: {camera!r}")
    video = [f"{VIDEO}/{camera}"] if streams is None else [f"{VIDEO}/{camera}/{s}" for s in range(streams)]
    return [*video, f"{META}/{camera}"]


def share_name(drive: str) -> str:
    """Drive letter → share name: ``D`` → ``DATAD``."""
    if not re.fullmatch(r"[A-Za-z]", drive):
        raise SpecError(f"not a drive letter: {drive!r}")
    return f"DATA{drive.upper()}"


def default_data_root(drive: str) -> WindowsPath:
    """The Data folder a volume shares as ``DATAX``: ``D`` → ``D:\\Data``."""
    return WindowsPath(drive.upper(), "Data")


@dataclass(frozen=True)
class ShareLocation:
    server: str
    share: str
    relpath: str  # '' for the share root

    @property
    def unc(self) -> str:
        base = f"\\\\{self.server}\\{self.share}"
        return f"{base}\\{self.relpath.replace('/', chr(92))}" if self.relpath else base


def to_share(server: str, windows_path: str | WindowsPath, data_root: WindowsPath | None = None) -> ShareLocation:
    """``D:\\Data\\video\\x`` on ``rec1`` → ``\\\\rec1\\DATAD\\video\\x``.

    The path must lie inside the drive's Data folder (the share root), else ``SpecError``.
    """
    path = windows_path if isinstance(windows_path, WindowsPath) else WindowsPath.parse(windows_path)
    root = data_root or default_data_root(path.drive)
    if root.drive != path.drive:
        raise SpecError(f"{path} is not on drive {root.drive}:")
    root_parts = [p.lower() for p in root.rest.split("\\") if p]
    parts = [p for p in path.rest.split("\\") if p]
    if [p.lower() for p in parts[: len(root_parts)]] != root_parts:
        raise SpecError(f"{path} is outside the shared Data folder {root} of {server}")
    rel = safe_relpath("/".join(parts[len(root_parts):])) if parts[len(root_parts):] else ""
    return ShareLocation(server, share_name(path.drive), rel)


_UNC_RE = re.compile(r"^\\\\([^\\]+)\\(DATA[A-Za-z])(?:\\(.*))?$", re.IGNORECASE)


def parse_unc(unc: str) -> ShareLocation:
    match = _UNC_RE.match(unc.replace("/", "\\"))
    if not match:
        raise SpecError(f"not a \\\\server\\DATAX path: {unc!r}")
    rest = match.group(3) or ""
    return ShareLocation(match.group(1), match.group(2).upper(), safe_relpath(rest) if rest else "")


def from_share(location: ShareLocation | str, data_root: WindowsPath | None = None) -> WindowsPath:
    """``\\\\rec1\\DATAD\\video\\x`` → ``D:\\Data\\video\\x`` (the inverse of ``to_share``)."""
    loc = parse_unc(location) if isinstance(location, str) else location
    drive = loc.share[-1].upper()
    root = data_root or default_data_root(drive)
    rest = "\\".join(p for p in [root.rest, loc.relpath.replace("/", "\\")] if p)
    return WindowsPath(drive, rest)


def video_hour_folder(camera: str, stream: int, moment: datetime) -> str:
    """``video/<camera>/<stream>/<YYYY-MM-DD>/<HH>``: the folder of the segments starting in ``moment``'s hour."""
    m = _utc(moment)    # formatted by hand: this runs for every camera in every health sweep (strftime is 3x dearer)
    return f"{VIDEO}/{camera}/{stream}/{m.year:04d}-{m.month:02d}-{m.day:02d}/{m.hour:02d}"


def video_day_folder(camera: str, stream: int, day: datetime) -> str:
    """``video/<camera>/<stream>/<YYYY-MM-DD>``: one day of a stream's segments (hour folders below)."""
    return f"{VIDEO}/{camera}/{stream}/{_utc(day).strftime('%Y-%m-%d')}"


def parse_stamp(stamp: str) -> datetime:
    """``YYYYMMDDTHHMMSSZ`` (already matched by ``_STAMP_RE``) as an aware UTC datetime; ``ValueError`` if it
    is not a real moment. The same result as ``strptime(stamp, "%Y%m%dT%H%M%SZ")``, 5x cheaper: the watchdog
    and the continuity report parse tens of thousands of names per run."""
    return datetime(int(stamp[0:4]), int(stamp[4:6]), int(stamp[6:8]), int(stamp[9:11]), int(stamp[11:13]),
                    int(stamp[13:15]), tzinfo=UTC)


def segment_start(name: str) -> datetime | None:
    """The start of a closed segment from its file name (``None`` for an open ``.`` name or another file)."""
    match = _STAMP_RE.match(name)
    if match is None:
        return None
    try:
        return parse_stamp(match.group(1))
    except ValueError:
        return None

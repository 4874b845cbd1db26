"""Value specs of the farm file: sizes, durations, storage path lists and per-stream days."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from farmkeeper.errors import SpecError

_SIZE_UNITS = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15,
    "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "PIB": 2**50,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_size(value: str | int) -> int:
    """``'50GB'`` → 50_000_000_000 bytes, ``'2TiB'`` → 2·2⁴⁰; a bare int is bytes."""
    if isinstance(value, bool):
        raise SpecError(f"not a size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise SpecError(f"size must not be negative: {value}")
        return value
    match = _SIZE_RE.match(str(value))
    unit = match.group(2).upper() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise SpecError(f"not a size: {value!r} (use e.g. 500GB, 2TiB, 1048576)")
    number, factor = match.group(1), _SIZE_UNITS[unit]
    return int(number) * factor if "." not in number else int(Decimal(number) * factor)


def format_size(n: int) -> str:
    """The shortest exact spelling of ``n`` bytes that ``parse_size`` reads back."""
    for unit in ("PiB", "TiB", "GiB", "MiB", "KiB", "PB", "TB", "GB", "MB", "KB"):
        factor = _SIZE_UNITS[unit.upper()]
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


def human_size(n: float) -> str:
    """Approximate, for people: ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def parse_duration(value: str | int | float) -> float:
    """``'30s'`` → 30.0, ``'5m'`` → 300.0, ``'1h30m'`` → 5400.0; a bare number is seconds."""
    if isinstance(value, bool):
        raise SpecError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise SpecError(f"duration must not be negative: {value}")
        return float(value)
    text = str(value).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    if not text or _DURATION_RE.sub("", text):
        raise SpecError(f"not a duration: {value!r} (use e.g. 30s, 5m, 2h)")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_RE.findall(text))


def format_duration(seconds: float) -> str:
    """The exact spelling ``parse_duration`` reads back: ``300`` → ``'5m'``."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    s = int(seconds)
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if s and s % factor == 0:
            return f"{s // factor}{unit}"
    return f"{s}s"


_WIN_PATH_RE = re.compile(r"^([A-Za-z]):[\\/](.*)$")


@dataclass(frozen=True)
class WindowsPath:
    """A drive-qualified Windows path as a recording server sees it: ``D:\\Data``."""

    drive: str
    rest: str  # without leading backslash, no trailing backslash

    @classmethod
    def parse(cls, text: str) -> WindowsPath:
        text = text.strip()
        match = _WIN_PATH_RE.match(text)
        if not match:
            raise SpecError(f"not a drive-qualified Windows path: {text!r} (use e.g. D:\\Data)")
        rest = match.group(2).replace("/", "\\").strip("\\")
        parts = [p for p in rest.split("\\") if p]
        if any(p in (".", "..") for p in parts):
            raise SpecError(f"'.' and '..' are not allowed in a storage path: {text!r}")
        return cls(match.group(1).upper(), "\\".join(parts))

    def __str__(self) -> str:
        return f"{self.drive}:\\{self.rest}"

    def same_folder(self, other: WindowsPath) -> bool:
        return self.drive == other.drive and self.rest.lower() == other.rest.lower()


@dataclass(frozen=True)
class StoragePathList:
    """The seed's per-camera storage path: ``'c:\\data;*d:\\data'``.

    Footage is written to the listed paths (all of them in redundant mode, the first
    writable one in failover mode) and read from the ``*`` one, else the first.
    """

    paths: tuple[WindowsPath, ...]
    read_index: int = 0

    @classmethod
    def parse(cls, text: str) -> StoragePathList:
        items = [item.strip() for item in text.split(";")]
        if not items or any(not item for item in items):
            raise SpecError(f"empty entry in storage path list {text!r}")
        stars = [i for i, item in enumerate(items) if item.startswith("*")]
        if len(stars) > 1:
            raise SpecError(f"at most one path may be marked '*' for reading: {text!r}")
        paths = tuple(WindowsPath.parse(item.lstrip("*")) for item in items)
        for i, path in enumerate(paths):
            if any(path.same_folder(other) for other in paths[:i]):
                raise SpecError(f"path {path} is listed twice in {text!r}")
        return cls(paths, stars[0] if stars else 0)

    @property
    def read_path(self) -> WindowsPath:
        return self.paths[self.read_index]

    @property
    def drives(self) -> tuple[str, ...]:
        return tuple(p.drive for p in self.paths)

    def __str__(self) -> str:
        return ";".join(("*" if i == self.read_index and len(self.paths) > 1 and self.read_index else "") + str(p)
                        for i, p in enumerate(self.paths))


def parse_stream_days(text: str | int, streams: int) -> tuple[int, ...]:
    """``'3;20'`` with 2 streams → (3, 20); one value applies to every stream."""
    if isinstance(text, bool):
        raise SpecError(f"not a number of days: {text!r}")
    raw = [str(text)] if isinstance(text, int) else [v.strip() for v in str(text).split(";")]
    try:
        days = tuple(int(v) for v in raw)
    except ValueError:
        raise SpecError(f"not a list of whole days: {text!r} (use e.g. 30 or 3;20)") from None
    if any(d < 1 for d in days):
        raise SpecError(f"days must be at least 1: {text!r}")
    if len(days) == 1:
        return days * streams
    if len(days) != streams:
        raise SpecError(f"{len(days)} values for {streams} stream{'s' if streams != 1 else ''}")
    return days


def format_stream_days(days: tuple[int, ...]) -> str:
    return str(days[0]) if len(set(days)) == 1 else ";".join(str(d) for d in days)

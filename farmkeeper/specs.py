"""Value specs of the farm file: sizes, durations, storage path lists and per-stream days, and the range of
every number the farm file holds (``BOUNDS``): a value outside its range is refused with the range in the error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from farmkeeper.errors import SpecError

_SIZE_UNITS = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15,
    "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "PIB": 2**50,
}
_SIZE_RE = re.compile(r"^\s*(\d{1,30}(?:\.\d{1,30})?)\s*([A-Za-z]{0,3})\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(r"(\d{1,30}(?:\.\d{1,30})?)(ms|s|m|h|d|w)")

MAX_SIZE = 2**60                  # 1 EiB: no volume is larger, and it fits every database's 64-bit integer
MAX_DURATION_S = 36500 * 86400.0  # 100 years: any longer duration is a typo, and datetime arithmetic overflows


# --- ranges ----------------------------------------------------------------------------------------

def _plain(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Bounds:
    """The inclusive range of one farm-file number; ``check`` refuses NaN, ±inf and anything outside it."""

    low: float
    high: float
    spell: Callable[[float], str] = _plain

    def __str__(self) -> str:
        return f"{self.spell(self.low)} .. {self.spell(self.high)}"

    def check(self, value: float) -> float:
        if not math.isfinite(value):
            raise SpecError(f"must be a finite number in {self} (got {value})")
        if not self.low <= value <= self.high:
            raise SpecError(f"{self.spell(value)} is out of range {self}")
        return value

    def duration(self, value: object) -> float:
        """A duration (``'30s'``, a number of seconds) inside this range."""
        return self.check(parse_duration(value))  # type: ignore[arg-type]

    def size(self, value: object) -> int:
        """A size (``'50GB'``, a number of bytes) inside this range."""
        return int(self.check(parse_size(value)))  # type: ignore[arg-type]

    def integer(self, value: object) -> int:
        """A whole number (an int, or a string of digits) inside this range."""
        return int(self.check(parse_int(value)))

    def number(self, value: object) -> float:
        """A finite number (int, float, or a string of one) inside this range."""
        return self.check(parse_number(value))


def parse_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SpecError(f"not a whole number: {value!r}")
    if isinstance(value, str):
        if not re.fullmatch(r"\s*[-+]?\d{1,30}\s*", value):
            raise SpecError(f"not a whole number: {value!r}")
        value = int(value)
    return value


def parse_number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SpecError(f"not a number: {value!r}")
    if isinstance(value, str):
        if not re.fullmatch(r"\s*[-+]?\d{1,30}(\.\d{1,30})?\s*", value):
            raise SpecError(f"not a number: {value!r}")
        value = float(value)
    return float(value)


# The range of every number in the farm file, by key (DESIGN.md's farm file). Parsers of new keys use these.
BOUNDS: dict[str, Bounds] = {
    "down_after": Bounds(5, 86400, lambda v: format_duration(v)),
    "health_interval": Bounds(0.5, 86400, lambda v: format_duration(v)),   # and at most down_after
    "stall_after": Bounds(5, 86400, lambda v: format_duration(v)),
    "auto_swap_back_after": Bounds(60, 365 * 86400, lambda v: format_duration(v)),
    "clock_skew_max": Bounds(0, 86400, lambda v: format_duration(v)),
    "days": Bounds(1, 36500),                      # default_max_storage_days, default_metadata_days, per stream
    "size": Bounds(0, MAX_SIZE, lambda v: format_size(int(v))),   # min_free, capacity
    "percent": Bounds(0, 100),                     # min_free_percent, purge_guard_percent
    "ownership_margin": Bounds(0, 10),
    "port": Bounds(1, 65535),
    "max_cameras": Bounds(0, 10000),
    "streams": Bounds(1, 16),
    "priority": Bounds(1, 5),
}


def parse_size(value: str | int) -> int:
    """``'50GB'`` → 50_000_000_000 bytes, ``'2TiB'`` → 2·2⁴⁰; a bare int is bytes."""
    if isinstance(value, bool):
        raise SpecError(f"not a size: {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        match = _SIZE_RE.match(value)
        unit = match.group(2).upper() if match else ""
        if not match or unit not in _SIZE_UNITS:
            raise SpecError(f"not a size: {value!r} (use e.g. 500GB, 2TiB, 1048576)")
        number, factor = match.group(1), _SIZE_UNITS[unit]
        n = int(number) * factor if "." not in number else int(Decimal(number) * factor)
    else:
        raise SpecError(f"not a size: {value!r} (use e.g. 500GB, 2TiB, 1048576)")
    if n < 0:
        raise SpecError(f"size must not be negative: {n}")
    if n > MAX_SIZE:
        raise SpecError(f"size {value!r} is larger than 1 EiB")
    return n


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
        seconds = float(value)
    elif isinstance(value, str) and len(value) <= 200:
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d{1,30}(\.\d{1,30})?", text):
            seconds = float(text)
        elif not text or _DURATION_RE.sub("", text):
            raise SpecError(f"not a duration: {value!r} (use e.g. 30s, 5m, 2h)")
        else:
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_RE.findall(text))
    else:
        raise SpecError(f"not a duration: {value!r} (use e.g. 30s, 5m, 2h)")
    if not math.isfinite(seconds):
        raise SpecError(f"not a duration: {value!r} (a finite number of seconds)")
    if seconds < 0:
        raise SpecError(f"duration must not be negative: {value}")
    if seconds > MAX_DURATION_S:
        raise SpecError(f"duration {value!r} is longer than 100 years")
    return seconds


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
    if any(not re.fullmatch(r"[-+]?\d{1,30}", v) for v in raw):
        raise SpecError(f"not a list of whole days: {text!r} (use e.g. 30 or 3;20)")
    days = tuple(int(v) for v in raw)
    bounds = BOUNDS["days"]
    if any(not bounds.low <= d <= bounds.high for d in days):
        raise SpecError(f"days must be at least {bounds.low:g} and at most {bounds.high:g}: {text!r}")
    if len(days) == 1:
        return days * streams
    if len(days) != streams:
        raise SpecError(f"{len(days)} values for {streams} stream{'s' if streams != 1 else ''}")
    return days


def format_stream_days(days: tuple[int, ...]) -> str:
    return str(days[0]) if len(set(days)) == 1 else ";".join(str(d) for d in days)

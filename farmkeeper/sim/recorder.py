"""One simulated recording server: health listener, inventory poller and segment writer."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from farmkeeper.errors import SpecError
from farmkeeper.layout import FOOTAGE_ROOTS, meta_path, video_path
from farmkeeper.sim.control import read_control, set_volume_failed
from farmkeeper.specs import StoragePathList, WindowsPath

logger = logging.getLogger(__name__)

DEFAULT_BITRATES = (2_000_000, 512_000)    # bits/s of stream 0, 1 (the last one repeats)
_RANDOM = os.urandom(4 << 20)              # cheap "video": slices of one random buffer
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:bit/s|bps|b)?\s*$")


def parse_bitrates(text: str) -> tuple[int, ...]:
    """``'2M,512k'`` → (2_000_000, 512_000) bits per second, one per stream (the last repeats)."""
    rates = []
    for item in text.split(","):
        match = _RATE_RE.match(item)
        if not match:
            raise SpecError(f"not a bitrate: {item!r} (use e.g. 2M,512k)")
        factor = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[match.group(2).lower()]
        rates.append(int(float(match.group(1)) * factor))
    if not rates or any(r <= 0 for r in rates):
        raise SpecError(f"bitrates must be positive: {text!r}")
    return tuple(rates)


@dataclass(frozen=True)
class SimOptions:
    database_url: str
    state_dir: Path
    segment_s: float = 2.0
    bitrates: tuple[int, ...] = DEFAULT_BITRATES
    poll_s: float = 1.0
    tick_s: float = 0.25


@dataclass(frozen=True)
class Assignment:
    """What the inventory says this server records now."""

    cameras: dict[str, tuple[int, tuple[str, ...]]]   # id → (streams, drives in storage path order)
    volumes: dict[str, Path]                          # drive → local share root
    redundant: bool                                   # availability mode


@dataclass
class _Segment:
    start: datetime
    started_mono: float
    files: list[tuple[Path, Path]] = field(default_factory=list)   # (temp, final) per stream and root
    target_bytes: list[int] = field(default_factory=list)
    written: list[int] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)


@dataclass
class _CameraStatus:
    last_closed: str | None = None
    segments: int = 0
    bytes: int = 0


class ServerSim:
    """A simulated server; ``run()`` blocks until ``stop()``."""

    def __init__(self, name: str, health: str, options: SimOptions) -> None:
        self.name = name
        self.health = health
        self.options = options
        self._stop = threading.Event()
        self._engine: Engine | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._open: dict[str, _Segment] = {}
        self._last_start: dict[str, datetime] = {}
        self._failed_roots: set[Path] = set()
        self._status: dict[str, _CameraStatus] = {}
        self._offset = (hash(name) & 0xFFFF) * 4096
        self.assignment = Assignment({}, {}, False)

    # --- lifecycle ----------------------------------------------------------------------------

    def start_listener(self) -> None:
        parts = urlsplit(self.health)
        if parts.scheme not in ("tcp", "http", "https") or not parts.hostname or not parts.port:
            logger.warning("%s: health %r is not simulated (only tcp:// and http://)", self.name, self.health)
            return
        sim_name = self.name

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                ok = self.path.split("?")[0] in ("/health", "/")
                body = json.dumps({"server": sim_name, "ok": ok}).encode()
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        ThreadingHTTPServer.allow_reuse_address = True
        self._httpd = ThreadingHTTPServer((parts.hostname, parts.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, name=f"health-{self.name}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        self.options.state_dir.mkdir(parents=True, exist_ok=True)
        self.start_listener()
        next_poll = 0.0
        first = True
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_poll:
                    self.refresh()
                    if first:
                        self.finalize_leftovers()
                        first = False
                    next_poll = now + self.options.poll_s
                    self.write_status()
                self.tick()
                self._stop.wait(self.options.tick_s)
        finally:
            for cam in list(self._open):
                self._close(cam)
            self.write_status()
            if self._httpd is not None:
                self._httpd.shutdown()
                self._httpd.server_close()

    # --- inventory ----------------------------------------------------------------------------

    def _db(self) -> Engine:
        if self._engine is None:
            url = self.options.database_url
            args: dict[str, Any] = {"timeout": 10} if url.startswith("sqlite") else {}
            self._engine = sa.create_engine(url, connect_args=args, pool_pre_ping=True)
        return self._engine

    def refresh(self) -> None:
        """Read this server's cameras, volumes and the availability mode (plain reads, no write lock)."""
        try:
            with self._db().connect() as conn:
                cams = conn.execute(sa.text("SELECT id, streams, storage_path FROM camera WHERE current = :s"),
                                    {"s": self.name}).all()
                vols = conn.execute(sa.text("SELECT drive, path FROM volume WHERE server_name = :s"),
                                    {"s": self.name}).all()
                st = conn.execute(sa.text("SELECT availability, default_path FROM storage_settings WHERE id = 1")
                                  ).first()
        except sa.exc.SQLAlchemyError as exc:
            logger.warning("%s: cannot read the inventory (%s); keeping the last assignment", self.name,
                           str(exc).splitlines()[0])
            return
        default = WindowsPath.parse(st[1]) if st else WindowsPath("D", "Data")
        redundant = st is not None and str(st[0]) in ("redundant", "Availability.redundant")
        cameras: dict[str, tuple[int, tuple[str, ...]]] = {}
        for cam_id, streams, storage_path in cams:
            try:
                drives = StoragePathList.parse(storage_path).drives if storage_path else (default.drive,)
            except SpecError:
                drives = (default.drive,)
            cameras[str(cam_id)] = (int(streams), drives)
        volumes = {str(d).upper(): Path(p) for d, p in vols if p}
        control = read_control(self.options.state_dir)
        cameras = {cam: spec for cam, spec in cameras.items() if cam not in control.stalled}
        for drive, root in volumes.items():
            try:
                if set_volume_failed(root, f"{self.name}:{drive}" in control.failed_volumes):
                    self._failed_roots.discard(root)
                    logger.warning("%s: volume %s: %s", self.name, drive,
                                   "failed (simulated)" if not root.exists() else "restored")
            except OSError as exc:
                logger.warning("%s: cannot fail/restore volume %s: %s", self.name, drive, exc.strerror)
        self.assignment = Assignment(cameras, volumes, redundant)
        for cam in [c for c in self._open if c not in cameras]:
            self._close(cam)   # moved away: close its segment now

    def finalize_leftovers(self) -> None:
        """Segments left open by a killed process are closed (renamed) at restart."""
        for root in self.assignment.volumes.values():
            for top in FOOTAGE_ROOTS:
                base = root / top
                if not base.is_dir():
                    continue
                for dirpath, _dirs, files in os.walk(base):
                    for name in files:
                        if name.startswith("."):
                            src = Path(dirpath, name)
                            with contextlib.suppress(OSError):
                                src.rename(src.with_name(name[1:]))

    # --- recording ----------------------------------------------------------------------------

    def _roots(self, drives: tuple[str, ...]) -> list[Path]:
        usable = []
        for drive in drives:
            root = self.assignment.volumes.get(drive)
            if root is None or root in self._failed_roots:
                continue
            if root.is_dir() and os.access(root, os.W_OK):
                usable.append(root)
                if not self.assignment.redundant:
                    break
        return usable

    def _bitrate(self, stream: int) -> int:
        rates = self.options.bitrates
        return rates[min(stream, len(rates) - 1)]

    def _begin(self, cam: str, streams: int, drives: tuple[str, ...]) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        last = self._last_start.get(cam)
        if last is not None and now <= last:
            now = last + timedelta(seconds=1)
        roots = self._roots(drives)
        if not roots:
            return
        seg = _Segment(start=now, started_mono=time.monotonic(), roots=roots)
        for root in roots:
            for stream in range(streams):
                final = root / video_path(cam, stream, now).relpath
                seg.files.append((final.with_name("." + final.name), final))
                seg.target_bytes.append(int(self._bitrate(stream) * self.options.segment_s / 8))
                seg.written.append(0)
        self._last_start[cam] = now
        self._open[cam] = seg
        for temp, _final in seg.files:
            try:
                temp.parent.mkdir(parents=True, exist_ok=True)
                temp.write_bytes(f"farmkeeper-sim {cam} {now.isoformat()} {temp.parent}\n".encode())
            except OSError as exc:
                self._root_failed(cam, temp, exc)
                return

    def _root_failed(self, cam: str, path: Path, exc: OSError) -> None:
        seg = self._open.pop(cam, None)
        bad = next((r for r in (seg.roots if seg else []) if path.is_relative_to(r)), None)
        logger.warning("%s: cannot write %s (%s); trying the next storage path", self.name, path, exc.strerror)
        if bad is not None:
            self._failed_roots.add(bad)
        for temp, _ in seg.files if seg else []:
            with contextlib.suppress(OSError):
                temp.unlink()

    def _chunk(self, n: int) -> bytes:
        start = self._offset % (len(_RANDOM) - 1)
        self._offset += 7919 * 13
        end = min(len(_RANDOM), start + n)
        data = _RANDOM[start:end]
        while len(data) < n:
            data += _RANDOM[: n - len(data)]
        return data

    def tick(self) -> None:
        now = time.monotonic()
        for cam, (streams, drives) in list(self.assignment.cameras.items()):
            seg = self._open.get(cam)
            if seg is None:
                self._begin(cam, streams, drives)
                continue
            fraction = min(1.0, (now - seg.started_mono) / self.options.segment_s)
            for i, (temp, _final) in enumerate(seg.files):
                want = int(seg.target_bytes[i] * fraction) - seg.written[i]
                if want <= 0:
                    continue
                try:
                    with temp.open("ab") as fh:
                        fh.write(self._chunk(want))
                except OSError as exc:
                    self._root_failed(cam, temp, exc)
                    break
                seg.written[i] += want
            if cam in self._open and fraction >= 1.0:
                self._close(cam)
                self._begin(cam, streams, drives)

    def _close(self, cam: str) -> None:
        seg = self._open.pop(cam, None)
        if seg is None:
            return
        status = self._status.setdefault(cam, _CameraStatus())
        total = 0
        for temp, final in seg.files:
            try:
                total += temp.stat().st_size
                temp.rename(final)
            except OSError as exc:
                logger.warning("%s: cannot close segment %s: %s", self.name, temp, exc.strerror)
        for root in seg.roots:
            meta = root / meta_path(cam, seg.start).relpath
            temp = meta.with_name("." + meta.name)
            try:
                temp.parent.mkdir(parents=True, exist_ok=True)
                temp.write_text(json.dumps({"camera": cam, "server": self.name, "start": seg.start.isoformat(),
                                            "seconds": round(time.monotonic() - seg.started_mono, 3),
                                            "events": []}))
                temp.rename(meta)
            except OSError as exc:
                logger.warning("%s: cannot write metadata %s: %s", self.name, meta, exc.strerror)
        status.last_closed = datetime.now(UTC).isoformat()
        status.segments += 1
        status.bytes += total

    # --- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "server": self.name, "pid": os.getpid(), "updated_at": datetime.now(UTC).isoformat(),
            "recording": sorted(self.assignment.cameras),
            "cameras": {cam: {"last_closed": s.last_closed, "segments": s.segments, "bytes": s.bytes,
                              "open": cam in self._open}
                        for cam, s in sorted(self._status.items())},
        }

    def write_status(self) -> None:
        path = self.options.state_dir / f"{self.name}.status.json"
        temp = path.with_name("." + path.name)
        try:
            temp.write_text(json.dumps(self.status(), indent=1))
            temp.replace(path)
        except OSError as exc:
            logger.warning("%s: cannot write %s: %s", self.name, path, exc.strerror)


def read_status(state_dir: str | os.PathLike[str], server: str) -> dict[str, Any] | None:
    """The last status a simulated server wrote (``None`` before its first write)."""
    try:
        data = json.loads((Path(state_dir) / f"{server}.status.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None

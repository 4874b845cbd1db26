"""Free-space floors between retention sweeps: which volumes are below ``min_free`` / ``min_free_percent`` now.

The seed: "Symphony starts deleting video as soon as free disk space is below this setting." Reading a
volume's free space is cheap (a ``statvfs`` locally, one QUERY_INFO over SMB), so the health check reads
every volume's free space in every sweep (``check_floors``, all volumes at once, bounded by a deadline so
a hung share never delays probing) and starts a retention sweep of the volumes below a floor
(``to_sweep``): within one ``health_interval`` instead of at the next 15-minute run.

A volume is not swept again while a sweep holds its lease, nor while the last sweep (within
``RETRY_UNMET_S``) could not meet its floors (held footage, the purge guard): that sweep already alerted,
and sweeping again would only list the volume once more every few seconds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlmodel import Session

from farmkeeper.errors import FarmkeeperError
from farmkeeper.models import RetentionVolume, StorageSettings, utcnow
from farmkeeper.specs import human_size
from farmkeeper.storage import Space, open_volume
from farmkeeper.volumes import ServerVolume

log = logging.getLogger(__name__)

RETRY_UNMET_S = 600.0
UNMET_ALERTS = frozenset({"floors_unmet", "floors_blocked", "holds_block_floors", "purge_guard"})
Prefer = Literal["auto", "local", "smb"]


def floor_bytes(total: int, storage: StorageSettings) -> int:
    """Free space a volume must keep: the larger of ``min_free`` and ``min_free_percent`` of its size."""
    return max(int(storage.min_free_bytes), math.ceil(total * float(storage.min_free_percent) / 100.0))


@dataclass(frozen=True)
class FloorCheck:
    """One volume's free space against its floor (``error``: why the space could not be read)."""

    server: str
    drive: str
    space: Space | None = None
    floor: int = 0
    error: str | None = None

    @property
    def label(self) -> str:
        return f"\\\\{self.server}\\DATA{self.drive}"

    @property
    def below(self) -> bool:
        return self.space is not None and self.floor > 0 and self.space.free < self.floor

    def text(self) -> str:
        if self.space is None:
            return f"{self.label}: free space unknown ({self.error})"
        return (f"{self.label}: {human_size(self.space.free)} free of {human_size(self.space.total)}, floor "
                f"{human_size(self.floor)}" + (" — BELOW" if self.below else ""))


def _read(volume: ServerVolume, prefer: Prefer) -> Space:
    with open_volume(volume.access, prefer=prefer) as vol:
        return vol.space()


def check_floors(volumes: Sequence[ServerVolume], storage: StorageSettings, *, prefer: Prefer = "auto",
                 deadline_s: float = 5.0, workers: int = 16,
                 known: Mapping[str, tuple[int, int]] | None = None) -> list[FloorCheck]:
    """Read every volume's free space at once; a volume not answered within ``deadline_s`` is reported unknown.

    ``known``: ``"SERVER:DRIVE" → (total, free)`` read moments ago in the same sweep (the watchdog's volume
    probes); those volumes are not read again (over SMB each read is a logon per volume per sweep).
    """
    if not volumes or (not storage.min_free_bytes and not storage.min_free_percent):
        return []
    known = known or {}
    found: dict[tuple[str, str], FloorCheck] = {}
    for v in volumes:
        reading = known.get(f"{v.server}:{v.drive}")
        if reading is not None:
            space = Space(*reading)
            found[(v.server, v.drive)] = FloorCheck(v.server, v.drive, space, floor_bytes(space.total, storage))
    to_read = [v for v in volumes if (v.server, v.drive) not in found]
    if to_read:
        found |= {(c.server, c.drive): c for c in _read_all(to_read, storage, prefer, deadline_s, workers)}
    return [found[(v.server, v.drive)] for v in volumes]


def _read_all(volumes: Sequence[ServerVolume], storage: StorageSettings, prefer: Prefer, deadline_s: float,
              workers: int) -> list[FloorCheck]:
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(volumes))), thread_name_prefix="fk-floors")
    try:
        futures = {pool.submit(_read, v, prefer): v for v in volumes}
        done, _late = wait(futures, timeout=deadline_s)
        out = []
        for fut, v in futures.items():
            if fut not in done:
                out.append(FloorCheck(v.server, v.drive, error=f"no answer within {deadline_s:g} s"))
                continue
            try:
                space = fut.result()
            except (FarmkeeperError, OSError) as exc:
                out.append(FloorCheck(v.server, v.drive, error=str(exc)))
                continue
            out.append(FloorCheck(v.server, v.drive, space, floor_bytes(space.total, storage)))
        return out
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def to_sweep(session: Session, checks: Sequence[FloorCheck], now: datetime | None = None) -> list[FloorCheck]:
    """The volumes below a floor that a sweep should start on now (no live lease, no recent unmet floors)."""
    now = now or utcnow()
    out = []
    for c in checks:
        if not c.below:
            continue
        state = session.get(RetentionVolume, (c.server, c.drive))
        if state is not None:
            if state.lease_run_id and state.lease_until is not None and state.lease_until > now:
                continue
            unmet = set((state.alert or "").split(",")) & UNMET_ALERTS
            if unmet and state.swept_at is not None and now - state.swept_at < timedelta(seconds=RETRY_UNMET_S):
                continue
        out.append(c)
    return out

"""Watchdog tasks: the newest segment of the cameras due a look, volume probes, failing cameras over alone.

Each task handles the whole batch of one sweep (one thread per server inside the core); volumes are
opened once per server volume and kept for a few minutes across sweeps, so SMB logons are not repeated
every ``health_interval``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import task

from farmkeeper import failover as core_failover
from farmkeeper import inventory, watchdog
from farmkeeper.storage import Volume, VolumeAccess, open_volume
from tasks.common import Tag, farm_volumes, inventory_session, run_logger, storage_prefer

KEEP_OPEN_S = 300.0


class VolumePool:
    """Open volumes by (server, drive), reused across sweeps for ``KEEP_OPEN_S`` (then reopened)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[VolumeAccess, tuple[Volume, float]] = {}

    def get(self, access: VolumeAccess, prefer: str) -> Volume:
        with self._lock:
            held = self._open.get(access)
        if held is not None and time.monotonic() - held[1] < KEEP_OPEN_S:
            return held[0]
        volume = open_volume(access, prefer=prefer)  # type: ignore[arg-type]
        with self._lock:
            old = self._open.get(access)
            self._open[access] = (volume, time.monotonic())
        if old is not None:
            old[0].close()
        return volume

    def drop(self, access: VolumeAccess) -> None:
        with self._lock:
            held = self._open.pop(access, None)
        if held is not None:
            held[0].close()

    def close(self) -> None:
        with self._lock:
            held, self._open = list(self._open.values()), {}
        for volume, _ in held:
            volume.close()


POOL = VolumePool()


class FarmAccesses:
    """A watching run's volume accesses (credentials resolved), read again after ``KEEP_S``: both watchdog steps
    of every sweep need them, and reading and resolving 200 servers' volumes costs ~20 ms each time. A volume
    added or a credential changed reaches a watching run within ``KEEP_S``, at once when opening a volume failed
    (one-off sweeps read them each time; open volumes are kept ``KEEP_OPEN_S`` either way)."""

    KEEP_S = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: tuple[float, dict[tuple[str, str], VolumeAccess]] | None = None

    def get(self, servers: set[str] | None = None) -> dict[tuple[str, str], VolumeAccess]:
        """The accesses of the named servers' volumes (``None``: every volume)."""
        with self._lock:
            held = self._held
        if held is None or time.monotonic() - held[0] >= self.KEEP_S:
            held = (time.monotonic(), {(v.server, v.drive): v.access for v in farm_volumes()})
            with self._lock:
                self._held = held
        if servers is None:
            return held[1]
        return {key: access for key, access in held[1].items() if key[0] in servers}

    def forget(self) -> None:
        with self._lock:
            self._held = None

    def held_since(self) -> float | None:
        """When the kept accesses were read (``time.monotonic()``), ``None`` when none are kept."""
        with self._lock:
            return self._held[0] if self._held is not None else None


@contextmanager
def opener(servers: list[str] | None, kept: FarmAccesses | None = None
           ) -> Iterator[tuple[watchdog.VolumeOpener, set[str]]]:
    """``(server, drive) → Volume`` for the named servers (``None``: all; credentials resolved now, or ``kept``
    by a watching run), and the servers whose volumes are all configured as local paths (from the settings:
    nothing is touched here)."""
    if kept is not None:
        accesses = kept.get(set(servers) if servers is not None else None)
    else:
        accesses = {(v.server, v.drive): v.access
                    for v in farm_volumes(sorted(set(servers)) if servers is not None else None)}
    prefer = storage_prefer()
    smb = {server for (server, _), a in accesses.items()
           if prefer == "smb" or (prefer == "auto" and not a.local_path)}
    local = {server for server, _ in accesses} - smb

    def open_one(server: str, drive: str) -> Volume:
        access = accesses.get((server, drive))
        if access is None:
            if kept is not None:
                kept.forget()        # a volume added since: the next sweep reads the accesses again
            raise LookupError(f"no volume {drive}: on {server}")
        try:
            return POOL.get(access, prefer)
        except Exception:
            if kept is not None:     # a rotated credential, a moved share: the next sweep resolves them again,
                kept.forget()        # so one kept access never fails a volume for down_after
            raise

    yield open_one, local


@task(name="watch-recordings", retries=1, retry_delay_seconds=[2], tags=[Tag.uses_db, Tag.uses_smb])
def watch_recordings(memory: watchdog.WatchMemory | None = None,
                     kept: FarmAccesses | None = None) -> watchdog.WatchUpdate:
    """Look at the newest segment of every camera due a look; record stalled and resumed cameras.

    ``memory``, ``kept``: a watching run's (its sweeps are plain calls, never task runs with these parameters):
    its cameras are planned from memory and looked for by name first (``watchdog.watch_sweep``)."""
    logger = run_logger(__name__)
    if memory is not None:
        with opener(None, kept) as (open_one, local):
            update = watchdog.watch_sweep(memory, inventory_session, open_one, local=local)
    else:
        with inventory_session() as session:
            checks = watchdog.plan_checks(session)
            deadline = watchdog.look_deadline(inventory.farm_settings(session))
        if not checks:
            return watchdog.WatchUpdate()
        with opener([c.server for c in checks], kept) as (open_one, local):
            sightings = watchdog.look(checks, open_one, deadline_s=deadline, local=local)
        with inventory_session() as session:
            update = watchdog.record_sightings(session, sightings, checks=checks)
    if update.errors:
        logger.info("watchdog could not look at %d camera(s): %s", len(update.errors),
                    "; ".join(f"{c}: {e}" for c, e in list(update.errors.items())[:5]))
    return update


def save_watch(memory: watchdog.WatchMemory) -> int:
    """Write what a watching run's memory has not written yet (its end); the number of watch rows."""
    with inventory_session() as session:
        return memory.checkpoint(session, watchdog.utcnow(), force=True)


@task(name="check-volumes", retries=1, retry_delay_seconds=[2], tags=[Tag.uses_db, Tag.uses_smb])
def check_volumes(kept: FarmAccesses | None = None) -> watchdog.VolumeUpdate:
    """Probe every volume of a live server (write the probe file, compare the floor); record failures."""
    with inventory_session() as session:
        checks = watchdog.plan_volume_checks(session)
        deadline = watchdog.look_deadline(inventory.farm_settings(session))
    if not checks:
        return watchdog.VolumeUpdate()
    with opener([c.server for c in checks], kept) as (open_one, local):
        probes = watchdog.probe_volumes(checks, open_one, deadline_s=deadline, local=local)
    with inventory_session() as session:
        return watchdog.record_volume_probes(session, probes)


@task(name="fail-over-cameras", retries=3, retry_delay_seconds=[1, 2, 5], tags=[Tag.uses_db])
def fail_over_cameras(server: str, cameras: list[str], reason: str,
                      mark_left: bool = True) -> core_failover.FailoverResult:
    """Fail over only ``cameras`` of a live ``server`` (same planner and events as a server failover)."""
    with inventory_session() as session:
        return core_failover.apply_camera_failover(session, server, cameras, reason=reason, mark_left=mark_left)


@task(name="recover-server-storage", retries=3, retry_delay_seconds=[1, 2, 5], tags=[Tag.uses_db])
def recover_server(server: str) -> core_failover.RecoveryResult:
    """A failed volume takes its probe again: recover the server like one that answers again."""
    with inventory_session() as session:
        return core_failover.apply_recovery(session, server)

"""The memory of a watching health check: probing goes on while the inventory is unavailable.

* ``FarmView``: what to probe (targets, ``down_after``, ``health_interval``), read from the inventory
  whenever it answers and kept from the last time it did;
* ``HeldResults``: probe results the inventory has not taken yet, reduced per server to the few that
  decide its state when replayed in order (its last success, the first failure after it, the latest
  result), so an outage of any length costs a bounded amount of memory and, once the database answers,
  one write: a server that failed every probe during the outage is down as soon as it can be recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from farmkeeper.health import ProbeResult, ProbeTarget
from farmkeeper.models import WatchLease, utcnow


@dataclass(frozen=True)
class FarmView:
    """What one sweep probes, as the inventory said at ``read_at``."""

    targets: tuple[ProbeTarget, ...]
    down_after_s: float
    health_interval_s: float
    read_at: datetime


def reduce_history(history: Sequence[ProbeResult]) -> list[ProbeResult]:
    """The results of one server (in time order) that decide its state when replayed in order.

    A success resets the count, so everything before the last success is irrelevant; after it, the first
    failure fixes when the count started and the latest result where it stands.
    """
    last_ok = max((i for i, r in enumerate(history) if r.ok), default=None)
    keep: list[ProbeResult] = []
    after = list(history)
    if last_ok is not None:
        keep.append(history[last_ok])
        after = list(history[last_ok + 1:])
    if after:
        keep.append(after[0])
        if len(after) > 1:
            keep.append(after[-1])
    return keep


class HeldResults:
    """Probe results waiting for the inventory (thread-safe: the prober adds, the recorder takes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_server: dict[str, list[ProbeResult]] = {}
        self.sweeps_held = 0          # sweeps whose results are (partly) still waiting
        self.held_since: datetime | None = None

    def add(self, results: Iterable[ProbeResult], *, sweep: bool = True) -> None:
        with self._lock:
            added = False
            for result in results:
                history = self._by_server.setdefault(result.server, [])
                history.append(result)
                history.sort(key=lambda r: r.at or datetime.min)
                self._by_server[result.server] = reduce_history(history)
                added = True
                if self.held_since is None or (result.at is not None and result.at < self.held_since):
                    self.held_since = result.at
            if added and sweep:
                self.sweeps_held += 1

    def take(self) -> list[ProbeResult]:
        """Every held result, oldest first; the memory is empty afterwards (``put_back`` on failure)."""
        with self._lock:
            out = sorted((r for rs in self._by_server.values() for r in rs), key=lambda r: r.at or datetime.min)
            self._by_server.clear()
            self.sweeps_held = 0
            self.held_since = None
            return out

    def put_back(self, results: Sequence[ProbeResult], sweeps: int = 1) -> None:
        """Results that could not be recorded go back, merged with anything newer."""
        self.add(results, sweep=False)
        with self._lock:
            self.sweeps_held += sweeps

    def __len__(self) -> int:
        with self._lock:
            return sum(len(rs) for rs in self._by_server.values())


# --- the watch lease: exactly one watching run sweeps; another takes over within the lease -------------

LEASE_NAME = "health-check"
LEASE_MAX_S = 10.0
LEASE_MIN_S = 2.0


def lease_ttl(down_after_s: float) -> float:
    """How long a lease lasts without renewal: ``down_after / 2`` within [2 s, 10 s].

    A standby polls every quarter of it, so a dead holder is replaced within about 1.25 × ttl:
    under ``min(down_after, 15 s)`` for any ``down_after`` ≥ 4 s.
    """
    return max(LEASE_MIN_S, min(LEASE_MAX_S, down_after_s / 2))


@dataclass(frozen=True)
class LeaseGrant:
    held: bool
    taken_from: WatchLease | None = None     # an expired holder this call replaced (its run may be a zombie)
    holder: str | None = None                # who holds it when ``held`` is False


def acquire_lease(session: Session, holder: str, ttl_s: float, *, flow_run_id: str | None = None,
                  now: datetime | None = None, name: str = LEASE_NAME) -> LeaseGrant:
    """Take or renew the lease; atomic (a conditional UPDATE, or an INSERT that only one can win)."""
    now = now or utcnow()
    expires = now + timedelta(seconds=ttl_s)
    table = WatchLease.__table__  # type: ignore[attr-defined]
    row = session.exec(select(WatchLease).where(WatchLease.name == name)
                       .execution_options(populate_existing=True)).first()
    if row is None:
        try:
            with session.begin_nested():
                session.execute(sa.insert(table).values(name=name, holder=holder, flow_run_id=flow_run_id,
                                                        acquired_at=now, renewed_at=now, expires_at=expires))
        except sa.exc.IntegrityError:
            return LeaseGrant(False)
        return LeaseGrant(True)
    if row.holder == holder:
        values: dict[str, object] = {"renewed_at": now, "expires_at": expires}
        if flow_run_id is not None:
            values["flow_run_id"] = flow_run_id
        updated = session.execute(sa.update(table).where(table.c.name == name, table.c.holder == holder)
                                  .values(**values))
        return LeaseGrant(updated.rowcount == 1)  # type: ignore[attr-defined]
    if row.expires_at > now:
        return LeaseGrant(False, holder=row.holder)
    previous = WatchLease.model_validate(row.model_dump())
    updated = session.execute(sa.update(table).where(table.c.name == name, table.c.holder == row.holder,
                                                     table.c.expires_at == row.expires_at)
                              .values(holder=holder, flow_run_id=flow_run_id, acquired_at=now, renewed_at=now,
                                      expires_at=expires))
    if updated.rowcount != 1:  # type: ignore[attr-defined]
        return LeaseGrant(False)
    return LeaseGrant(True, taken_from=previous)


def release_lease(session: Session, holder: str, *, name: str = LEASE_NAME) -> bool:
    """Give the lease up (a watch that ends, or a supervisor whose child died): a standby takes it at once."""
    table = WatchLease.__table__  # type: ignore[attr-defined]
    deleted = session.execute(sa.delete(table).where(table.c.name == name, table.c.holder == holder))
    return bool(deleted.rowcount)  # type: ignore[attr-defined]


def release_leases_of(session: Session, holder_prefix: str, *, name: str = LEASE_NAME) -> list[WatchLease]:
    """Release the lease if its holder starts with ``holder_prefix`` (``host:pid:`` of a dead process)."""
    rows = list(session.exec(select(WatchLease).where(WatchLease.name == name)))
    gone = [WatchLease.model_validate(r.model_dump()) for r in rows if r.holder.startswith(holder_prefix)]
    for row in gone:
        release_lease(session, row.holder, name=name)
    return gone


def lease_holder(session: Session, *, name: str = LEASE_NAME) -> WatchLease | None:
    return session.exec(select(WatchLease).where(WatchLease.name == name)
                        .execution_options(populate_existing=True)).first()

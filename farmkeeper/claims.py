"""Claims: one flow at a time acts on a camera's footage on a volume.

A claim is one ``FootageClaim`` row per (camera, server, drive) naming its owner — the run that deletes or
moves that footage (``retention-<run>``, ``copy-job-<id>``) — with the owner's host and pid and a lease
(``until``) the owner renews while it works. Every flow that deletes or moves footage takes the claims of
what it touches first: retention per batch, right before it re-reads what is protected and deletes;
swap-back and move-cameras for their job's cameras on the volumes they read and write, for the whole job.

A claim is live while its owner is: on the owner's host, while its pid exists (a paused process keeps
its claims; a killed one loses them at once); seen from another host, while its lease runs. A claim whose
owner is dead is taken over by the next flow that asks; its ``pending`` audit rows may then be settled by
anyone (``audit.reconcile_pending`` with ``may_settle=claims.settleable(...)``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from farmkeeper.models import FootageClaim, utcnow

CLAIM_TTL_S = 120.0

Key = tuple[str, str, str]   # (camera, server, drive)


@dataclass(frozen=True)
class Owner:
    """Who holds claims: a run or job id, and the process working for it."""

    id: str
    host: str
    pid: int

    @classmethod
    def here(cls, owner_id: str) -> Owner:
        return cls(owner_id, socket.gethostname(), os.getpid())


def alive(claim: FootageClaim, now: datetime | None = None) -> bool:
    """Is the owner of ``claim`` still working (its process exists here, or its lease runs elsewhere)?"""
    if claim.host == socket.gethostname():
        if claim.pid == os.getpid():
            return True
        try:
            os.kill(claim.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return claim.until > (now or utcnow())


def _insert(session: Session) -> Callable[..., sa.Insert]:
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert
    return sqlite_insert


def take(session: Session, owner: Owner, keys: Iterable[Key], ttl_s: float = CLAIM_TTL_S) -> dict[Key, str]:
    """Take (or renew) the claims of ``keys`` for ``owner``; returns the keys held by another live owner.

    Free keys are inserted (a concurrent insert of the same key waits for the other transaction and then
    finds its row), dead owners' claims are taken over; the rows are locked until the caller commits.
    """
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    now = utcnow()
    until = now + timedelta(seconds=ttl_s)
    values = [{"camera_id": c, "server": s, "drive": d, "owner": owner.id, "host": owner.host, "pid": owner.pid,
               "claimed_at": now, "until": until} for c, s, d in wanted]
    insert = _insert(session)
    session.execute(insert(FootageClaim).values(values).on_conflict_do_nothing())  # type: ignore[attr-defined]
    busy: dict[Key, str] = {}
    rows = session.exec(select(FootageClaim).where(sa.tuple_(FootageClaim.camera_id, FootageClaim.server,
                                                             FootageClaim.drive).in_(wanted))
                        .order_by(col(FootageClaim.camera_id), col(FootageClaim.server), col(FootageClaim.drive))
                        .with_for_update().execution_options(populate_existing=True)).all()
    for row in rows:
        key = (row.camera_id, row.server, row.drive)
        if row.owner != owner.id and alive(row, now):
            busy[key] = row.owner
            continue
        if row.owner != owner.id:
            row.claimed_at = now
        row.owner, row.host, row.pid, row.until = owner.id, owner.host, owner.pid, until
        session.add(row)
    session.flush()
    return busy


def renew(session: Session, owner: Owner, ttl_s: float = CLAIM_TTL_S) -> int:
    """Extend the lease of every claim of ``owner``; returns how many it still holds."""
    table = FootageClaim.__table__  # type: ignore[attr-defined]
    done = session.execute(sa.update(table).where(table.c.owner == owner.id)
                           .values(until=utcnow() + timedelta(seconds=ttl_s), host=owner.host, pid=owner.pid))
    return int(done.rowcount)  # type: ignore[attr-defined]


def release(session: Session, owner_id: str, keys: Iterable[Key] | None = None) -> None:
    """Give back the claims of ``owner_id`` (all, or those of ``keys``)."""
    table = FootageClaim.__table__  # type: ignore[attr-defined]
    query = sa.delete(table).where(table.c.owner == owner_id)
    if keys is not None:
        wanted = list(keys)
        if not wanted:
            return
        query = query.where(sa.tuple_(table.c.camera_id, table.c.server, table.c.drive).in_(wanted))
    session.execute(query)


def live_owners(session: Session) -> set[str]:
    """Owners with at least one live claim."""
    now = utcnow()
    return {c.owner for c in session.exec(select(FootageClaim)) if alive(c, now)}


def claimed_by_others(session: Session, owner_id: str, server: str, drive: str) -> dict[str, str]:
    """camera -> owner of the live claims of other owners on one volume."""
    now = utcnow()
    return {c.camera_id: c.owner for c in session.exec(select(FootageClaim).where(FootageClaim.server == server,
                                                                                 FootageClaim.drive == drive))
            if c.owner != owner_id and alive(c, now)}


def settleable(session: Session, owner_id: str) -> Callable[[str | None], bool]:
    """``may_settle`` for ``audit.reconcile_pending``: our own rows, and rows of owners with no live claim."""
    live = live_owners(session) - {owner_id}
    return lambda row_owner: row_owner is None or row_owner not in live

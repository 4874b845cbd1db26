"""Health probes and the down/up state machine of servers.

Probes (``tcp://host:port`` connect, ``http(s)://...`` 2xx, ``smb`` session + tree connect to the
server's first ``DATAX`` share) run for all servers at once on one asyncio loop, each with a short
timeout. ``next_health`` is the pure state machine: given a server's recorded health, one probe
result, the time and ``down_after`` it says what the server's state becomes and which transition
(if any) happened. ``apply_probe_results`` writes that to the inventory with an optimistic version
check on every server row, so two sweeps running at once never both report the same transition.

Rules:

* a server is **down** once no probe has succeeded for ``down_after``, counted from its last successful
  probe (``failing_since`` is set to that moment at the first failure; to the first failure when the
  server never answered since the control plane started). Detection therefore takes at most
  ``down_after`` plus one probe timeout after the server died (the watching run sweeps again at the
  moment a failing server's time is up, see ``next_deadline``);
* how sweeps are driven does not matter (a watching run, or ``farmkeeper run health-check`` from cron):
  only a gap in probing longer than ``stopped_gap(health_interval)`` = max(2 min, 3 × interval) means the
  control plane itself was stopped; then the count restarts at the next failure, so a stale failure
  never fails a server over on its own;
* a down server that answers again is **recovered** (state ``up``); an ``unknown`` server that
  answers is simply ``up``;
* a server in **maintenance** goes down the same way, but the transition is ``down-maintenance``:
  its cameras are marked offline and not moved (the operator is rebooting it on purpose).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlmodel import Session, col, select

from farmkeeper.models import Camera, CameraState, Server, ServerState, utcnow

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 2.0


def probe_timeout(health_interval_s: float) -> float:
    """``min(2 s, interval / 2)``, at least 0.2 s: a sweep never outlasts its interval."""
    return max(0.2, min(DEFAULT_TIMEOUT_S, health_interval_s / 2))


# --- probes -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProbeTarget:
    """What to probe for one server; ``password`` only for ``smb`` (never printed)."""

    server: str
    health: str                 # tcp://h:p | http(s)://... | smb
    host: str = ""
    smb_port: int = 445
    smb_username: str = ""
    smb_share: str = ""         # DATAX of the server's first volume
    smb_signing: bool = True
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class ProbeResult:
    server: str
    ok: bool
    latency_s: float
    error: str = ""
    at: datetime | None = None      # when the probe ended (None: when it is recorded)


async def _probe_tcp(host: str, port: int, timeout: float) -> None:
    _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), timeout)


async def _probe_http(url: str, timeout: float) -> None:
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    context = ssl.create_default_context() if secure else None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=context, server_hostname=host if secure else None), timeout)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        hostport = parts.netloc.rsplit("@", 1)[-1]
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {hostport}\r\nUser-Agent: farmkeeper-health\r\n"
                     "Connection: close\r\n\r\n".encode("ascii"))
        await asyncio.wait_for(writer.drain(), timeout)
        status_line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    fields = status_line.decode("latin-1").split()
    if len(fields) < 2 or not fields[1].isdigit():
        raise ConnectionError(f"not an HTTP answer: {status_line[:60]!r}")
    status = int(fields[1])
    if not 200 <= status < 300:
        raise ConnectionError(f"HTTP {status}")


def _probe_smb_blocking(target: ProbeTarget, timeout: float) -> None:
    import uuid

    from smbprotocol.connection import Connection
    from smbprotocol.session import Session as SmbSession
    from smbprotocol.tree import TreeConnect

    conn = Connection(uuid.uuid4(), target.host, target.smb_port, require_signing=target.smb_signing)
    conn.connect(timeout=timeout)
    try:
        session = SmbSession(conn, target.smb_username, target.password, require_encryption=False)
        session.connect()
        tree = TreeConnect(session, rf"\\{target.host}\{target.smb_share}")
        tree.connect()
        tree.disconnect()
        session.disconnect()
    finally:
        conn.disconnect(close=True)


async def probe_one(target: ProbeTarget, timeout: float) -> ProbeResult:
    """Probe one server; never raises (a failure is a result with ``error``)."""
    started = time.monotonic()
    try:
        if target.health.startswith("tcp://"):
            parts = urlsplit(target.health)
            if parts.hostname is None or parts.port is None:
                raise ValueError(f"bad tcp probe {target.health!r}")
            await _probe_tcp(parts.hostname, parts.port, timeout)
        elif target.health.startswith(("http://", "https://")):
            await _probe_http(target.health, timeout)
        elif target.health == "smb":
            if not target.smb_share:
                raise ValueError("server has no volume to probe over SMB")
            await asyncio.wait_for(asyncio.to_thread(_probe_smb_blocking, target, timeout), timeout + 0.5)
        else:
            raise ValueError(f"unknown health probe {target.health!r}")
    except TimeoutError:
        return ProbeResult(target.server, False, time.monotonic() - started, f"no answer within {timeout:g} s",
                           utcnow())
    except Exception as exc:  # noqa: BLE001 - any failure is a failed probe
        text = str(exc) or type(exc).__name__
        if target.password:
            text = text.replace(target.password, "***")
        return ProbeResult(target.server, False, time.monotonic() - started,
                           f"{type(exc).__name__}: {text}"[:300], utcnow())
    return ProbeResult(target.server, True, time.monotonic() - started, at=utcnow())


async def probe_all_async(targets: Sequence[ProbeTarget], timeout: float) -> list[ProbeResult]:
    return list(await asyncio.gather(*(probe_one(t, timeout) for t in targets)))


def probe_all(targets: Sequence[ProbeTarget], timeout: float = DEFAULT_TIMEOUT_S) -> list[ProbeResult]:
    """Probe every target concurrently; results in the targets' order. Takes about ``timeout`` at worst."""
    if not targets:
        return []
    return asyncio.run(probe_all_async(targets, timeout))


def probe_targets(session: Session, password_for: dict[str, str] | None = None) -> list[ProbeTarget]:
    """One target per server of the inventory; ``password_for`` maps server → SMB password (smb probes)."""
    from farmkeeper import inventory

    targets = []
    for server in inventory.list_servers(session):
        volumes = inventory.list_volumes(session, server.name)
        targets.append(ProbeTarget(
            server=server.name, health=server.health or "smb", host=server.host, smb_port=server.smb_port,
            smb_username=server.smb_username, smb_share=volumes[0].share if volumes else "",
            smb_signing=server.smb_signing,
            password=(password_for or {}).get(server.name, "")))
    return targets


# --- the state machine --------------------------------------------------------------------------

class Transition(StrEnum):
    up = "up"                              # unknown → up (first answer)
    down = "down"                          # → down: fail over its cameras
    down_maintenance = "down-maintenance"  # → down while in maintenance: no failover
    recovered = "recovered"                # down → up


@dataclass(frozen=True)
class Health:
    """The health fields of one server row."""

    state: ServerState
    failing_since: datetime | None = None
    last_seen: datetime | None = None
    probed_at: datetime | None = None
    maintenance: bool = False


@dataclass(frozen=True)
class HealthChange:
    health: Health
    transition: Transition | None
    error: str | None = None


STOPPED_GAP_MIN_S = 120.0


def stopped_gap(health_interval_s: float) -> float:
    """A gap in probing longer than this means the control plane was stopped: max(2 min, 3 × interval)."""
    return max(STOPPED_GAP_MIN_S, 3 * health_interval_s)


def next_health(current: Health, ok: bool, now: datetime, down_after_s: float, error: str = "",
                stopped_gap_s: float = STOPPED_GAP_MIN_S) -> HealthChange:
    """The pure state machine: the server's health after one probe at ``now``."""
    if ok:
        new = Health(ServerState.up, None, now, now, current.maintenance)
        transition = {ServerState.down: Transition.recovered, ServerState.unknown: Transition.up}.get(current.state)
        return HealthChange(new, transition, None)
    failing_since = current.failing_since
    stopped = current.probed_at is None or now - current.probed_at > timedelta(seconds=stopped_gap_s)
    if current.state != ServerState.down and stopped:
        failing_since = now          # nobody watched: count from now, not from an old success
    elif failing_since is None:
        failing_since = current.last_seen if current.last_seen is not None else now
    state, transition = current.state, None
    if current.state != ServerState.down and now - failing_since >= timedelta(seconds=down_after_s):
        state = ServerState.down
        transition = Transition.down_maintenance if current.maintenance else Transition.down
    return HealthChange(Health(state, failing_since, current.last_seen, now, current.maintenance), transition,
                        error or "probe failed")


def health_of(server: Server) -> Health:
    return Health(server.state, server.failing_since, server.last_seen, server.probed_at, server.maintenance)


@dataclass(frozen=True)
class ServerTransition:
    server: str
    transition: Transition
    at: datetime
    error: str | None = None


def next_deadline(servers: Sequence[Server], down_after_s: float) -> datetime | None:
    """When the earliest failing, not yet down server reaches ``down_after`` (None: nobody is failing)."""
    due = [s.failing_since + timedelta(seconds=down_after_s) for s in servers
           if s.failing_since is not None and s.state != ServerState.down]
    return min(due, default=None)


def apply_probe_results(session: Session, results: Sequence[ProbeResult], down_after_s: float,
                        now: datetime | None = None, attempts: int = 5,
                        stopped_gap_s: float = STOPPED_GAP_MIN_S) -> list[ServerTransition]:
    """Write the probe results to the server rows; returns the transitions that this call made.

    Each row is updated with ``WHERE version = <read version>``; when another writer got there first
    the row is read again and the result re-applied, so a transition is reported exactly once.
    """
    from farmkeeper import inventory

    now = now or utcnow()
    table = Server.__table__  # type: ignore[attr-defined]
    transitions: list[ServerTransition] = []
    inventory.lock_servers(session)   # name order, as every writer of server rows: no deadlock with apply
    for result in results:
        when = result.at or now
        for _ in range(attempts):
            server = session.exec(select(Server).where(Server.name == result.server)
                                  .execution_options(populate_existing=True)).first()
            if server is None:
                break
            if server.probed_at is not None and when < server.probed_at:
                break       # an older result than what another sweep recorded already
            change = next_health(health_of(server), result.ok, when, down_after_s, result.error, stopped_gap_s)
            h = change.health
            values: dict[str, object] = {
                "failing_since": h.failing_since, "last_seen": h.last_seen, "probed_at": h.probed_at,
                "probe_error": change.error, "version": server.version + 1,
            }
            if h.state != server.state:
                values |= {"state": h.state, "state_changed_at": when}
            updated = session.execute(sa.update(table).where(table.c.name == server.name,
                                                             table.c.version == server.version).values(**values))
            if updated.rowcount == 1:  # type: ignore[attr-defined]
                if change.transition is not None:
                    transitions.append(ServerTransition(server.name, change.transition, when, change.error))
                    detail = {"error": change.error} if change.error else {}
                    inventory.record_server_event(session, server.name, change.transition.value, **detail)
                break
            logger.info("server %s changed while probing; re-reading it", result.server)
    session.flush()
    session.expire_all()
    return transitions


def mark_cameras_offline(session: Session, server: str, *, movable_too: bool) -> list[str]:
    """Cameras still on a down server that cannot record: non-movable ones (and all in maintenance)."""
    query = select(Camera).where(Camera.current == server, Camera.state == CameraState.recording)
    if not movable_too:
        query = query.where(col(Camera.movable).is_(False))
    changed = []
    for camera in session.exec(query):
        camera.state = CameraState.offline
        camera.version += 1
        session.add(camera)
        changed.append(camera.id)
    return changed

"""Health tasks: what to probe, probing (no database needed), recording the results (state machine), recovery."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.engine import Engine

from farmkeeper import failover as core_failover
from farmkeeper import health, inventory
from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.health import ProbeResult, ServerTransition, Transition
from farmkeeper.models import utcnow
from farmkeeper.watch import FarmView
from tasks.common import Tag, inventory_session, retry_transient, server_password


@dataclass
class HealthUpdate:
    results: list[ProbeResult] = field(default_factory=list)
    health_interval_s: float = 10.0
    pending_failovers: list[str] = field(default_factory=list)   # down servers whose stranded cameras can move
    transitions: list[ServerTransition] = field(default_factory=list)
    recoveries: list[core_failover.RecoveryResult] = field(default_factory=list)
    offline: dict[str, list[str]] = field(default_factory=dict)     # down-in-maintenance server → cameras
    new_master: str | None = None
    next_deadline: datetime | None = None    # a failing server's down_after is up then: sweep at that moment
    recorded: bool = True                    # False: the inventory did not answer; results are held

    def of(self, kind: Transition) -> list[str]:
        return [t.server for t in self.transitions if t.transition == kind]


def _logger() -> Any:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run (plain mode, worker threads)
        return logging.getLogger(__name__)


def load_view(engine: Engine | None = None, previous: FarmView | None = None) -> FarmView:
    """What to probe, from the inventory (raises when it does not answer: keep ``previous`` then).

    A password that cannot be resolved now (a Prefect Secret while the API is down) is the previous one.
    """
    logger = _logger()
    known = {t.server: t.password for t in previous.targets} if previous else {}
    with session_scope(engine or ensure_schema(get_engine())) as session:
        farm = inventory.farm_settings(session)
        passwords: dict[str, str] = {}
        for server in inventory.list_servers(session):
            if (server.health or "smb") == "smb":
                try:
                    passwords[server.name] = server_password(server)
                except Exception as exc:  # noqa: BLE001 - missing env var, Secret block, API down
                    if known.get(server.name):
                        passwords[server.name] = known[server.name]
                    else:
                        logger.warning("server %s: %s", server.name, exc)
        targets = tuple(health.probe_targets(session, passwords))
        return FarmView(targets, farm.down_after_s, farm.health_interval_s, utcnow())


def probe(view: FarmView) -> list[ProbeResult]:
    """Probe every target of ``view`` concurrently (timeout min(2 s, interval/2) each); needs no database."""
    results = health.probe_all(view.targets, health.probe_timeout(view.health_interval_s))
    failed = [r for r in results if not r.ok]
    if failed:
        _logger().info("%d of %d servers did not answer: %s", len(failed), len(results),
                       ", ".join(f"{r.server} ({r.error})" for r in failed))
    return results


@task(name="probe-servers", retries=0, cache_policy=NO_CACHE)
def probe_servers() -> list[ProbeResult]:
    """Probe every server of the inventory concurrently."""
    return probe(load_view())


@task(name="record-health", retries=0, cache_policy=NO_CACHE, tags=[Tag.uses_db])
def record_health(results: list[ProbeResult], down_after_s: float, health_interval_s: float,
                  engine: Engine | None = None) -> HealthUpdate:
    """Apply probe results (oldest first) in one transaction: transitions, recovery, master, what is due.

    No retries here: a watching run holds results the inventory did not take and records them with the
    next sweep's (``farmkeeper.watch.HeldResults``).
    """
    logger = _logger()
    update = HealthUpdate(results=list(results), health_interval_s=health_interval_s)
    with session_scope(engine or ensure_schema(get_engine())) as session:
        update.transitions = health.apply_probe_results(session, results, down_after_s,
                                                        stopped_gap_s=health.stopped_gap(health_interval_s))
        for t in update.transitions:
            if t.transition in (Transition.up, Transition.recovered):
                logger.info("server %s: %s", t.server, t.transition.value)
            else:
                logger.warning("server %s: %s", t.server, t.transition.value)
            if t.transition == Transition.down_maintenance:
                update.offline[t.server] = health.mark_cameras_offline(session, t.server, movable_too=True)
            elif t.transition == Transition.recovered:
                update.recoveries.append(core_failover.apply_recovery(session, t.server))
        # every sweep, not only on a transition: a farm left without its one live master is healed
        update.new_master = core_failover.ensure_master(session)
        update.pending_failovers = [s for s in core_failover.pending_failovers(session)
                                    if s not in update.of(Transition.down)]
        update.next_deadline = health.next_deadline(inventory.list_servers(session), down_after_s)
    return update


@task(name="mark-swap-back-started", retries=2, retry_delay_seconds=[1, 2], tags=[Tag.uses_db],
      retry_condition_fn=retry_transient)
def mark_swap_back_started(server: str, started: bool, detail: str = "") -> None:
    with inventory_session() as session:
        inventory.record_server_event(session, server, "auto-swap-back", started=started, detail=detail)

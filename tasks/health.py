"""Health tasks: probe every server at once, record the results (state machine), recovery."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from prefect import get_run_logger, task

from farmkeeper import failover as core_failover
from farmkeeper import health, inventory
from farmkeeper.errors import FarmkeeperError
from farmkeeper.health import ProbeResult, ServerTransition, Transition
from tasks.common import Tag, inventory_session, server_password


@dataclass
class ProbeSweep:
    results: list[ProbeResult]
    down_after_s: float
    health_interval_s: float


@dataclass
class HealthUpdate:
    results: list[ProbeResult] = field(default_factory=list)
    health_interval_s: float = 10.0
    pending_failovers: list[str] = field(default_factory=list)   # down servers whose stranded cameras can move
    swap_backs_due: list[str] = field(default_factory=list)
    transitions: list[ServerTransition] = field(default_factory=list)
    recoveries: list[core_failover.RecoveryResult] = field(default_factory=list)
    offline: dict[str, list[str]] = field(default_factory=dict)     # down-in-maintenance server → cameras
    new_master: str | None = None
    next_deadline: datetime | None = None    # a failing server's down_after is up then: sweep at that moment

    def of(self, kind: Transition) -> list[str]:
        return [t.server for t in self.transitions if t.transition == kind]


@task(name="check-servers", retries=2, retry_delay_seconds=[1, 2], tags=[Tag.uses_db])
def check_servers() -> HealthUpdate:
    """One sweep in one task: probe every server, record the results, find pending failovers/swap-backs.

    One task per sweep (not four) keeps a watching run light on the Prefect API.
    """
    sweep = _probe()
    update = _record(sweep)
    update.results, update.health_interval_s = sweep.results, sweep.health_interval_s
    with inventory_session() as session:
        update.pending_failovers = [s for s in core_failover.pending_failovers(session)
                                    if s not in update.of(Transition.down)]
        update.swap_backs_due = core_failover.swap_back_due(session)
    return update


@task(name="probe-servers", retries=2, retry_delay_seconds=[1, 2], tags=[Tag.uses_db])
def probe_servers() -> ProbeSweep:
    """Probe every server of the inventory concurrently (timeout min(2 s, interval/2) each)."""
    return _probe()


def _probe() -> ProbeSweep:
    logger = get_run_logger()
    with inventory_session() as session:
        farm = inventory.farm_settings(session)
        passwords: dict[str, str] = {}
        for server in inventory.list_servers(session):
            if (server.health or "smb") == "smb":
                try:
                    passwords[server.name] = server_password(server)
                except FarmkeeperError as exc:
                    logger.warning("server %s: %s", server.name, exc)
        targets = health.probe_targets(session, passwords)
        down_after, interval = farm.down_after_s, farm.health_interval_s
    results = health.probe_all(targets, health.probe_timeout(interval))
    failed = [r for r in results if not r.ok]
    if failed:
        logger.info("%d of %d servers did not answer: %s", len(failed), len(results),
                    ", ".join(f"{r.server} ({r.error})" for r in failed))
    return ProbeSweep(results, down_after, interval)


@task(name="record-health", retries=3, retry_delay_seconds=[1, 2, 5], tags=[Tag.uses_db])
def record_health(sweep: ProbeSweep) -> HealthUpdate:
    """Apply the probe results to the inventory in one transaction; recovery happens here too."""
    return _record(sweep)


def _record(sweep: ProbeSweep) -> HealthUpdate:
    logger = get_run_logger()
    update = HealthUpdate()
    with inventory_session() as session:
        update.transitions = health.apply_probe_results(session, sweep.results, sweep.down_after_s,
                                                        stopped_gap_s=health.stopped_gap(sweep.health_interval_s))
        for t in update.transitions:
            if t.transition in (Transition.up, Transition.recovered):
                logger.info("server %s: %s", t.server, t.transition.value)
            else:
                logger.warning("server %s: %s", t.server, t.transition.value)
            if t.transition == Transition.down_maintenance:
                update.offline[t.server] = health.mark_cameras_offline(session, t.server, movable_too=True)
            elif t.transition == Transition.recovered:
                update.recoveries.append(core_failover.apply_recovery(session, t.server))
        if update.transitions:
            update.new_master = core_failover.ensure_master(session)
        update.next_deadline = health.next_deadline(inventory.list_servers(session), sweep.down_after_s)
    return update


@task(name="find-pending-failovers", retries=2, retry_delay_seconds=[1, 2], tags=[Tag.uses_db])
def find_pending_failovers() -> list[str]:
    """Down servers whose stranded movable cameras can move now (capacity came back)."""
    with inventory_session() as session:
        return core_failover.pending_failovers(session)


@task(name="find-swap-backs-due", retries=2, retry_delay_seconds=[1, 2], tags=[Tag.uses_db])
def find_swap_backs_due() -> list[str]:
    """Servers healthy for ``auto_swap_back_after`` with cameras still failed over (setting off: none)."""
    with inventory_session() as session:
        return core_failover.swap_back_due(session)


@task(name="mark-swap-back-started", retries=2, retry_delay_seconds=[1, 2], tags=[Tag.uses_db])
def mark_swap_back_started(server: str, started: bool, detail: str = "") -> None:
    with inventory_session() as session:
        inventory.record_server_event(session, server, "auto-swap-back", started=started, detail=detail)

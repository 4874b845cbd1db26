"""Failover task: move a down server's movable cameras in one transaction (idempotent)."""

from __future__ import annotations

from prefect import task

from farmkeeper import failover as core_failover
from tasks.common import Tag, inventory_session, retry_transient, run_logger


@task(name="fail-over-server", retries=3, retry_delay_seconds=[1, 2, 5], tags=[Tag.uses_db],
      retry_condition_fn=retry_transient)
def fail_over_server(server: str, force: bool = False, reason: str = "server down") -> core_failover.FailoverResult:
    """Plan and apply the failover of ``server`` (locks the server rows; safe to re-run)."""
    logger = run_logger(__name__)
    with inventory_session() as session:
        result = core_failover.apply_failover(session, server, force=force, reason=reason)
    logger.info("failover of %s: %s", server, result.summary())
    return result

"""Flow ``failover``: move the movable cameras of a down server to live redundant servers.

Started by ``health-check`` (as a subflow, in process) for each newly down server, or by hand:
``farmkeeper run failover SERVER`` / ``python -m flows.failover SERVER``. Idempotent: a second run
for the same outage moves nothing twice. Needs ``FARMKEEPER_DATABASE_URL`` (the inventory).
Publishes a table artifact of what moved and notifies the farm's apprise URLs.
"""

# No `from __future__ import annotations`: Prefect resolves the parameter model of a flow loaded from its file.
import sys
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, Field

from farmkeeper.failover import FailoverResult
from tasks.common import call, in_run, run_logger, send_notification
from tasks.events import failover_events
from tasks.failover import fail_over_server

RETRY_REASON = "stranded, retried"


class FailoverParams(BaseModel):
    server: str = Field(description="Name of the server whose cameras move away")
    force: bool = Field(False, description="Fail over even if the server is up or in maintenance (planned work)")
    reason: str = Field("server down", description="Recorded on each failover event")
    notify: bool = Field(True, description="Send a notification to the farm's notify URLs")


def failover_message(result: FailoverResult, *, newly_down: bool) -> tuple[str, str, str]:
    """Title, body and kind of the notification for one failover."""
    if result.skipped:
        return f"failover of {result.server} skipped", result.summary(), "info"
    head = f"{result.server} is down" if newly_down else f"failover of {result.server} retried"
    n = len(result.moved)
    title = f"{head}: {n} camera{'s' if n != 1 else ''} moved"
    if result.stranded:
        title += f", {len(result.stranded)} stranded"
    if result.offline:
        title += f", {len(result.offline)} offline"
    lines = [f"- {row['camera']}: {row['from']} -> {row['to'] or '-'} ({row['result']})" for row in result.rows()]
    body = "\n".join([result.summary(), "", *lines]) if lines else result.summary()
    kind = "failure" if result.stranded or result.offline else "warning"
    return title, body, kind


@flow(name="failover", log_prints=False)
def failover(params: FailoverParams, newly_down: bool = False) -> dict[str, Any]:
    """Fail over one server (capacity-aware, least loaded first, SAN drive-letter rule)."""
    logger = run_logger(__name__)
    result = call(fail_over_server, params.server, params.force, params.reason)
    failover_events(result, reason=params.reason, retried=params.reason == RETRY_REASON)
    rows = result.rows()
    if rows and in_run():
        try:
            create_table_artifact(rows, key=f"failover-{_key(params.server)}",
                                  description=f"Failover of {params.server}: {result.summary()}")
        except Exception as exc:  # noqa: BLE001 - the Prefect API being down never stops a failover
            logger.warning("failover artifact not published: %s: %s", type(exc).__name__, exc)
    logger.info("%s", result.summary())
    # One notification per failover: a run that moves nothing notifies only as the first news of an outage
    # (newly down), never after another run of the same outage moved its cameras (several watchers).
    if params.notify and result.news and (result.moved or newly_down):
        title, body, kind = failover_message(result, newly_down=newly_down)
        send_notification(title, body, kind)
    return {"server": result.server, "moved": [m.__dict__ for m in result.moved], "stranded": result.stranded,
            "offline": result.offline, "new_master": result.new_master, "skipped": result.skipped}


def _key(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower())


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m flows.failover SERVER [--force]")
    failover(FailoverParams(server=sys.argv[1], force="--force" in sys.argv[2:]))

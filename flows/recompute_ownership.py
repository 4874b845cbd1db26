"""Flow ``recompute-ownership``: each camera's home is the server holding most of its video files.

Counts the video files per camera on every server's volumes (all servers at once, each server's
volumes in parallel; local mount or SMB per ``FARMKEEPER_STORAGE__PREFER``), then decides every home:
an operator pin wins; the current home keeps it unless a challenger has more than
``(1 + ownership_margin)`` times its files; a server that cannot be counted never loses a home.
Every change is recorded (``OwnershipChange``) and the counts per camera and server are published as
a table artifact. ``dry_run`` reports without changing anything. Daily, or by hand:
``farmkeeper run recompute-ownership [--dry-run]`` / ``python -m flows.recompute_ownership [--dry-run]``.

Needs ``FARMKEEPER_DATABASE_URL`` (the inventory) and the SMB passwords named by the servers'
``smb.password_env`` (environment) or ``smb.password_secret`` (Prefect Secret block).
"""

from __future__ import annotations

import sys

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, Field

from farmkeeper.ownership import CountResult, OwnershipOutcome
from tasks.common import send_notification
from tasks.ownership import apply_ownership_counts, count_server_footage, servers_with_volumes


class RecomputeOwnershipParams(BaseModel):
    dry_run: bool = Field(False, description="Report the homes that would change, change nothing")
    notify: bool = Field(True, description="Notify the farm's URLs when homes changed")


@flow(name="recompute-ownership", log_prints=False)
def recompute_ownership(params: RecomputeOwnershipParams = RecomputeOwnershipParams()) -> OwnershipOutcome:
    """Count video files per camera on every server and move homes to where the footage is."""
    logger = get_run_logger()
    servers = servers_with_volumes()
    futures = {server: count_server_footage.submit(server) for server in servers}
    parts: list[CountResult] = []
    for server, future in futures.items():
        try:
            parts.append(future.result())
        except Exception as exc:  # noqa: BLE001 - an uncountable server keeps its homes; reported
            logger.warning("%s could not be counted (its cameras keep their homes): %s", server, exc)
            parts.append(CountResult(servers=[server], errors={server: str(exc)}))
    counts = CountResult.merge(parts)
    outcome = apply_ownership_counts(counts, params.dry_run)
    create_table_artifact(outcome.table(), key="ownership-counts",
                          description=("**dry run** — " if params.dry_run else "") + outcome.summary())
    logger.info("%s", outcome.summary())
    if params.notify and outcome.changes and not params.dry_run:
        lines = [f"- {d.camera}: {d.home} -> {d.new_home} ({d.reason})" for d in outcome.changes]
        send_notification(f"camera ownership: {len(outcome.changes)} home(s) changed",
                          "\n".join([outcome.summary(), "", *lines]), "info")
    return outcome


if __name__ == "__main__":
    recompute_ownership(RecomputeOwnershipParams(dry_run="--dry-run" in sys.argv[1:]))

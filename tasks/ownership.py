"""Ownership tasks: count one server's video (all its volumes at once), apply the decisions."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from farmkeeper import inventory
from farmkeeper.ownership import CountResult, OwnershipOutcome, apply_ownership, count_footage
from tasks.common import Tag, farm_volumes, inventory_session, retry_transient, storage_prefer


@task(name="servers-with-volumes", retries=2, retry_delay_seconds=[1, 5], tags=[Tag.uses_db], cache_policy=NO_CACHE,
      retry_condition_fn=retry_transient)
def servers_with_volumes() -> list[str]:
    """The servers whose volumes hold footage to count."""
    with inventory_session() as session:
        return sorted({v.server_name for v in inventory.list_volumes(session)})


@task(name="count-server-footage", retries=2, retry_delay_seconds=[5, 15], tags=[Tag.uses_smb], cache_policy=NO_CACHE,
      retry_condition_fn=retry_transient)
def count_server_footage(server: str, prefer: str | None = None) -> CountResult:
    """Video files per camera/stream/day on every volume of ``server`` (volumes in parallel)."""
    volumes = farm_volumes([server])
    result = count_footage(volumes, prefer=prefer or storage_prefer(), raise_errors=True)  # type: ignore[arg-type]
    get_run_logger().info("%s: %d video files on %d volume(s) in %.1f s", server, result.files, len(volumes),
                          result.seconds)
    return result


@task(name="apply-ownership", retries=2, retry_delay_seconds=[2, 5], tags=[Tag.uses_db], cache_policy=NO_CACHE,
      retry_condition_fn=retry_transient)
def apply_ownership_counts(result: CountResult, dry_run: bool = False) -> OwnershipOutcome:
    """Decide each camera's home from the counts; unless ``dry_run``, apply and record (row locks)."""
    with inventory_session() as session:
        outcome = apply_ownership(session, result, dry_run=dry_run)
    logger = get_run_logger()
    for d in outcome.changes:
        logger.info("camera %s: home %s -> %s%s (%s)", d.camera, d.home, d.new_home,
                    " [dry run]" if dry_run else "", d.reason)
    return outcome

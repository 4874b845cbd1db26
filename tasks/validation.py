"""Validation tasks: the SAN failover requirements of a redundancy group, checked and recorded."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from farmkeeper.validation import ValidationReport, check_group, load_group, record_findings
from tasks.common import Tag, inventory_session, retry_transient, server_password, storage_prefer


@task(name="validate-servers", retries=1, retry_delay_seconds=[5], tags=[Tag.uses_smb, Tag.uses_db],
      cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def validate_servers(servers: list[str] | None = None, record: bool = True,
                     folders: bool = False) -> ValidationReport:
    """Check the group (all servers with volumes, or ``servers``) over SMB; record the last result per check.

    The gate of a swap-back: ``validate_servers([home, source]).ok``. With ``record`` the report's
    ``new_failures`` holds the failures not seen on the previous run (notify those).
    """
    with inventory_session() as session:           # short read: the probes hold no inventory lock
        group = load_group(session, server_password, servers)
    # The share check goes over SMB, as the servers reach each other's DATAX shares; only a control plane
    # configured to reach every volume through local mounts (storage.prefer=local, e.g. the demo without
    # Samba) probes those mounts instead.
    report = check_group(group, prefer="local" if storage_prefer() == "local" else "smb", folders=folders)
    if record:
        with inventory_session() as session:
            record_findings(session, report)
    logger = get_run_logger()
    for f in report.failures:
        logger.warning("%s", f.text())
    logger.info("%s", report.summary())
    return report

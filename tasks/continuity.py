"""Continuity task: the gap reports of a batch of cameras over one range (day folders only, concurrent)."""

from __future__ import annotations

from datetime import datetime

from prefect import get_run_logger, task

from farmkeeper import continuity, inventory
from tasks.common import Tag, inventory_session
from tasks.watchdog import opener


@task(name="report-continuity", retries=2, retry_delay_seconds=[2, 10], tags=[Tag.uses_db, Tag.uses_smb])
def report_continuity(cameras: list[str] | None, start: datetime, end: datetime) -> list[continuity.ContinuityReport]:
    """One report per camera (all cameras when ``None``) over [start, end)."""
    logger = get_run_logger()
    with inventory_session() as session:
        ids = cameras if cameras is not None else [c.id for c in inventory.list_cameras(session)]
        volumes = {cam: continuity.camera_volumes(session, cam) for cam in ids}
    servers = sorted({server for vols in volumes.values() for server, _ in vols})
    reports = []
    with opener(servers) as (open_one, _local):
        for cam in ids:
            report = continuity.continuity(cam, start, end, volumes[cam], open_one)
            if report.errors:
                logger.warning("continuity of %s: could not list %s", cam, "; ".join(report.errors))
            reports.append(report)
    return reports

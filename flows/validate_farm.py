"""Flow ``validate-farm``: the seed's SAN failover requirements, checked for real, with the fix per failure.

For the redundancy group (every server with volumes, or ``servers``): the same number of LUNs, the
same drive letters, SAN failover mode on, every Data folder shared as ``DATAX`` and readable and
writable with the farm's account (a probe file is created, read back and deleted at each share root
over SMB), credentials valid, free space readable, clocks in step. Publishes a markdown artifact,
stores the last result per (server, requirement) and notifies only failures that are new. Daily, by
hand (``farmkeeper run validate-farm`` / ``python -m flows.validate_farm [SERVER...]``), and as the
gate of every swap-back (call ``validate_farm(ValidateFarmParams(servers=[...]))`` as a subflow, or
the ``tasks.validation.validate_servers`` task, and refuse unless ``report.ok``).

Needs ``FARMKEEPER_DATABASE_URL`` and the SMB passwords (``smb.password_env`` / ``password_secret``).
"""

from __future__ import annotations

import sys

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from farmkeeper.validation import ValidationReport
from tasks.common import send_notification
from tasks.validation import validate_servers


class ValidateFarmParams(BaseModel):
    servers: list[str] | None = Field(None, description="Validate only these servers (default: all with volumes)")
    notify: bool = Field(True, description="Notify the farm's URLs of failures not seen on the previous run")


@flow(name="validate-farm", log_prints=False)
def validate_farm(params: ValidateFarmParams = ValidateFarmParams()) -> ValidationReport:
    """Check every SAN failover requirement of the redundancy group and say how to fix each failure."""
    logger = get_run_logger()
    report = validate_servers(params.servers, folders=True)
    create_markdown_artifact(report.to_markdown(), key="farm-validation", description=report.summary())
    if params.notify and report.new_failures:
        body = "\n".join([report.summary(), "", *(f"- {f.text()}" for f in report.new_failures)])
        send_notification(f"farm validation: {len(report.new_failures)} new failure(s)", body, "failure")
    (logger.info if report.ok else logger.warning)("%s", report.summary())
    return report


if __name__ == "__main__":
    validate_farm(ValidateFarmParams(servers=sys.argv[1:] or None))

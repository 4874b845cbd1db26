"""Flow ``continuity-report``: yesterday's gaps and availability of every camera, as table artifacts.

Daily (and manual for any day or cameras). For each camera one table artifact keyed
``continuity-<camera>`` (its gaps of the day, or one "no gap" row; each run adds a version, so the
Prefect UI keeps the history per camera), and a summary ``continuity-summary`` with every camera's
availability, worst first: which cameras lost footage yesterday. Gaps are found across every server
and volume the camera recorded on (``farmkeeper.continuity``).
Needs ``FARMKEEPER_DATABASE_URL`` and the SMB credentials by reference (env or Secret blocks).

    python -m flows.continuity_report [DAY] [CAMERA...]
"""

# No `from __future__ import annotations`: Prefect resolves the parameter model of a flow loaded from its file.
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, Field

from farmkeeper.continuity import ContinuityReport
from tasks.continuity import report_continuity


class ContinuityReportParams(BaseModel):
    day: date | None = Field(None, description="The UTC day to report (default: yesterday)")
    cameras: list[str] | None = Field(None, description="Only these cameras (default: every camera)")


def _key(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower())


def gap_rows(report: ContinuityReport) -> list[dict[str, Any]]:
    rows = [{"from": g.start.strftime("%Y-%m-%d %H:%M:%S"), "to": g.end.strftime("%Y-%m-%d %H:%M:%S"),
             "minutes": round(g.seconds / 60, 1)} for g in report.gaps]
    return rows or [{"from": report.start.strftime("%Y-%m-%d %H:%M:%S"),
                     "to": report.end.strftime("%Y-%m-%d %H:%M:%S"), "minutes": 0.0}]


@flow(name="continuity-report", log_prints=False)
def continuity_report(params: ContinuityReportParams | None = None) -> dict[str, Any]:
    """Gaps and availability per camera for one day; a table artifact per camera and a summary."""
    params = params or ContinuityReportParams()
    logger = get_run_logger()
    day = params.day or (datetime.now(UTC) - timedelta(days=1)).date()
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    reports = report_continuity(params.cameras, start, start + timedelta(days=1))
    for report in reports:
        create_table_artifact(gap_rows(report), key=f"continuity-{_key(report.camera)}",
                              description=f"Continuity of {report.camera} on {day}: "
                                          f"{report.availability_percent} % available, {len(report.gaps)} gap(s)")
    summary = sorted(({"camera": r.camera, "availability_percent": r.availability_percent, "gaps": len(r.gaps),
                       "gap_minutes": round(sum(g.seconds for g in r.gaps) / 60, 1)} for r in reports),
                     key=lambda row: (row["availability_percent"], row["camera"]))
    if summary:
        create_table_artifact(summary, key="continuity-summary",
                              description=f"Footage continuity on {day}, worst first")
    lost = [row["camera"] for row in summary if row["gaps"]]
    logger.info("continuity on %s: %d camera(s), %d with gaps%s", day, len(summary), len(lost),
                f": {', '.join(lost)}" if lost else "")
    return {"day": day.isoformat(), "cameras": [r.to_json() for r in reports], "with_gaps": lost}


if __name__ == "__main__":
    args = sys.argv[1:]
    continuity_report(ContinuityReportParams(day=date.fromisoformat(args[0]) if args else None,
                                             cameras=args[1:] or None))

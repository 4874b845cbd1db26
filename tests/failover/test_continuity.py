"""Continuity reports: gaps to the minute across servers, the CLI's JSON, and the daily flow's artifacts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from farmkeeper.continuity import build_report, find_gaps
from tests.failover.conftest import Farm
from tests.failover.test_watchdog import write_segment
from tests.helpers import cli, parse_json

T = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def minutes(a: int, b: int) -> list[datetime]:
    return [T + timedelta(minutes=m) for m in range(a, b)]


@pytest.fixture
def farm(make_farm: Callable[..., Farm]) -> Farm:
    """cam-a recorded on p1 10:00-10:30, failed over to r1 10:30-10:41, nothing 10:41-10:52, p1 again until 11:30."""
    farm = make_farm([("p1", "primary"), ("r1", "redundant")], [{"id": "cam-a", "home": "p1"}])
    from farmkeeper import inventory
    from farmkeeper.db import get_engine, session_scope
    from farmkeeper.models import FailoverEvent

    with session_scope(get_engine()) as s:
        s.add(FailoverEvent(camera_id="cam-a", from_server="p1", to_server="r1", started_at=T, ended_at=T))
        inventory.get_camera(s, "cam-a")
    for start in minutes(0, 30) + minutes(52, 90):
        write_segment(farm.volumes["p1"], "cam-a", start)
    for start in minutes(30, 41):
        write_segment(farm.volumes["r1"], "cam-a", start)
    write_segment(farm.volumes["p1"], "cam-a", T + timedelta(minutes=60), closed=False)   # open: not footage
    return farm


def test_gap_found_to_the_minute_across_servers_cli_json(farm: Farm) -> None:
    code, out = cli("report", "continuity", "cam-a", "--from", "2026-11-25T10:00:00Z", "--to",
                    "2026-11-25T11:00:00Z", "--json")
    assert code == 0, out
    report = parse_json(out)
    assert set(report) >= {"camera", "from", "to", "gaps", "availability_percent"}
    assert report["camera"] == "cam-a" and report["from"] == "2026-11-25T10:00:00+00:00"
    assert report["gaps"] == [{"from": "2026-11-25T10:41:00+00:00", "to": "2026-11-25T10:52:00+00:00",
                               "seconds": 660.0}]
    assert report["availability_percent"] == pytest.approx(100 * (3600 - 660) / 3600, abs=0.001)


def test_the_range_ends_count_and_a_missing_camera_is_an_error(farm: Farm) -> None:
    code, out = cli("report", "continuity", "cam-a", "--from", "2026-11-25T09:00:00Z", "--to",
                    "2026-11-25T12:00:00Z", "--json")
    gaps = [(g["from"][11:16], g["to"][11:16]) for g in parse_json(out)["gaps"]]
    assert code == 0 and gaps == [("09:00", "10:00"), ("10:41", "10:52"), ("11:30", "12:00")]
    code, out = cli("report", "continuity", "nope", "--json")
    assert code == 1 and "nope" in out
    code, out = cli("report", "continuity", "cam-a", "--from", "2026-11-25T12:00:00Z", "--to",
                    "2026-11-25T11:00:00Z")
    assert code == 1 and "must be after" in out


def test_short_holes_are_not_gaps() -> None:
    starts = [T + timedelta(minutes=m) for m in range(60) if m not in (10, 20, 21)]   # one or two missing
    report = build_report("c", T, T + timedelta(hours=1), starts)
    assert report.segment_s == 60 and report.gaps == [] and report.availability_percent == 100.0
    three = [s for s in starts if s != T + timedelta(minutes=22)]                      # three missing: a gap
    assert [(g.start.minute, g.end.minute) for g in find_gaps(three, T, T + timedelta(hours=1), 60)] == [(20, 23)]


@pytest.mark.usefixtures("prefect_api")
def test_daily_flow_publishes_a_table_per_camera_and_a_summary(farm: Farm) -> None:
    import json
    from datetime import date

    from prefect.artifacts import Artifact

    from flows.continuity_report import ContinuityReportParams, continuity_report

    result = continuity_report(ContinuityReportParams(day=date(2026, 11, 25)))
    assert result["with_gaps"] == ["cam-a"]
    gaps = [(g["from"][11:16], g["to"][11:16]) for g in result["cameras"][0]["gaps"]]
    assert gaps == [("00:00", "10:00"), ("10:41", "10:52"), ("11:30", "00:00")]
    table = Artifact.get("continuity-cam-a")
    assert table is not None and table.type == "table" and "2026-11-25" in (table.description or "")
    rows = json.loads(str(table.data))
    assert {"from": "2026-11-25 10:41:00", "to": "2026-11-25 10:52:00", "minutes": 11.0} in rows
    summary = Artifact.get("continuity-summary")
    assert summary is not None and json.loads(str(summary.data))[0]["camera"] == "cam-a"

"""``farmkeeper run retention-sweep`` and ``status --storage``."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from farmkeeper.cli import app
from tests.retention.conftest import RetentionFarm
from tests.retention.helpers import days_back, files_under, write

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_cli_dry_run_then_sweep_then_forecast(retention_farm: RetentionFarm) -> None:
    farm = retention_farm.apply()
    t = datetime.now(UTC).replace(second=0, microsecond=0)
    paths = write(farm.root(), days_back("cam-002", 0, 9, now=t))
    runner = CliRunner()
    dry = runner.invoke(app, ["run", "retention-sweep", "--dry-run", "--server", "rec1", "--json"])
    assert dry.exit_code == 0, dry.output
    data = json.loads(dry.output[dry.output.index("{"):])
    assert data["dry_run"] and files_under(farm.root()) == set(paths)
    assert len(data["volumes"]) == 2
    table = runner.invoke(app, ["run", "retention-sweep", "--server", "rec1"])
    assert table.exit_code == 0, table.output
    assert "retention sweep" in table.output
    assert len(files_under(farm.root())) < len(paths)
    status = runner.invoke(app, ["status", "--json", "--storage"])
    assert status.exit_code == 0, status.output
    rows = json.loads(status.output)["storage"]
    row = next(r for r in rows if r["camera"] == "cam-002")
    assert row["server"] == "rec1" and row["drive"] == "D" and row["rule_days"] == 7
    assert 6.9 <= row["held_days"] <= 7.0 and row["lasts_days"] == 7.0

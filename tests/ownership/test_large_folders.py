"""The seed's "ideally, no more than 5000 files per folder": validate reports every footage folder above it."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from farmkeeper.storage import VolumeAccess, open_volume
from farmkeeper.validation import large_folders
from tests.ownership.conftest import Farm

HOUR = "video/cam-a/0/2026-01-05/10"


def test_entries_are_files_and_sub_folders(tmp_path: Path) -> None:
    (tmp_path / HOUR).mkdir(parents=True)
    for i in range(5001):
        (tmp_path / HOUR / f"x{i}.tmp").touch()
    for i in range(5000):                        # exactly the limit: not reported
        (tmp_path / "meta" / f"cam-{i}").mkdir(parents=True)
    (tmp_path / "video" / "cam-b").mkdir()
    with open_volume(VolumeAccess(server="rec1", drive="D", local_path=str(tmp_path))) as vol:
        assert large_folders(vol) == [(HOUR, 5001)]
        (tmp_path / "meta" / "cam-x").mkdir()
        assert large_folders(vol) == [("meta", 5001), (HOUR, 5001)]     # largest first, then by path


def test_validate_json_lists_large_folders_with_path_and_count(farm: Farm) -> None:
    from farmkeeper.cli import app

    folder = farm.root("rec1") / HOUR
    folder.mkdir(parents=True)
    for i in range(5001):
        (folder / f"x{i}.tmp").touch()
    result = CliRunner().invoke(app, ["validate", "--json"])
    assert result.exit_code == 0, result.output                  # a warning, not a failure
    data = json.loads(result.output)
    assert data["large_folders"] == [{"server": "rec1", "share": "DATAD", "path": HOUR, "entries": 5001}]
    (finding,) = [f for f in data["findings"] if f["status"] == "warn"]
    assert finding["requirement"] == "folders:DATAD" and "above 5000 entries" in finding["message"]
    result = CliRunner().invoke(app, ["validate"])
    assert result.exit_code == 0 and "warning" in result.output

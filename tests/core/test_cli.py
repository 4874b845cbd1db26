"""The CLI over a real SQLite inventory (typer's CliRunner)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from farmkeeper.cli import app

EXAMPLE = Path(__file__).parents[2] / "examples" / "farm.yaml"
runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_apply_status_export(inventory_url: str, tmp_path: Path) -> None:
    code, out = invoke("apply", str(EXAMPLE))
    assert code == 0 and "created: camera cam-001" in out
    code, out = invoke("apply", str(EXAMPLE))
    assert code == 0 and "nothing changed" in out
    code, out = invoke("status", "--json")
    assert code == 0
    data = json.loads(out)
    servers = {s["name"]: s for s in data["servers"]}
    assert set(servers["rec1"]) >= {"name", "state", "role", "master", "cameras"}
    assert servers["rec1"]["master"] is True and servers["rec1"]["cameras"] == 3
    assert servers["spare1"]["role"] == "redundant" and servers["spare1"]["cameras"] == 0
    cams = {c["id"]: c for c in data["cameras"]}
    assert set(cams["cam-003"]) >= {"id", "home", "current", "movable", "state"}
    assert cams["cam-003"]["movable"] is False and cams["cam-004"]["home"] == "rec2"
    assert data["copy_jobs"] == []
    code, out = invoke("status")
    assert code == 0 and "cam-004" in out and "spare1" in out
    exported = tmp_path / "exported.yaml"
    assert invoke("export", "-o", str(exported))[0] == 0
    code, out = invoke("apply", str(exported))
    assert code == 0 and "nothing changed" in out


def test_bad_file_exits_nonzero_with_location(inventory_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "farm.yaml"
    bad.write_text(EXAMPLE.read_text().replace("'3;20'", "'3;20;4'"))
    result = runner.invoke(app, ["apply", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:43: cameras[0].max_storage_days: 3 values for 2 streams" in result.output
    assert "nothing changed" in result.output
    code, out = invoke("status", "--json")
    assert json.loads(out)["cameras"] == []


def test_pin_and_holds(inventory_url: str) -> None:
    invoke("apply", str(EXAMPLE))
    code, out = invoke("camera", "pin", "cam-001", "rec2")
    assert code == 0 and "home rec2 (pinned)" in out
    cams = {c["id"]: c for c in json.loads(invoke("status", "--json")[1])["cameras"]}
    assert cams["cam-001"]["home"] == "rec2" and cams["cam-001"]["pinned_home"] == "rec2"
    code, out = invoke("camera", "pin", "cam-001", "nowhere")
    assert code == 1 and "unknown server 'nowhere'" in out
    code, out = invoke("hold", "add", "cam-001", "--from", "2026-11-25T10:00:00Z", "--to",
                       "2026-11-25T10:30:15Z", "--reason", "case 42")
    assert code == 0, out
    holds = json.loads(invoke("hold", "list", "--json")[1])
    assert len(holds) == 1 and holds[0]["reason"] == "case 42" and holds[0]["end"].startswith("2026-11-25T10:30:15")
    assert invoke("hold", "add", "cam-001", "--from", "2026-11-25T11:00", "--to", "2026-11-25T10:00",
                  "--reason", "x")[0] == 2
    assert invoke("hold", "remove", str(holds[0]["id"]))[0] == 0
    assert json.loads(invoke("hold", "list", "--json")[1]) == []


def test_core_imports_no_prefect() -> None:
    code = ("import sys, importlib, pkgutil, farmkeeper\n"
            "for m in pkgutil.walk_packages(farmkeeper.__path__, 'farmkeeper.'):\n"
            "    if not m.name.startswith(('farmkeeper.cli', 'farmkeeper.migrations')) and "
            "not m.name.endswith('__main__'):\n"
            "        importlib.import_module(m.name)\n"
            "print('prefect' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr

"""validate-farm against real Samba shares: each SAN failover requirement broken on purpose, and a healthy farm."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farmkeeper import inventory
from farmkeeper.db import get_engine, session_scope
from farmkeeper.validation import PROBE_PREFIX, Finding, ValidationReport, validate_farm
from tests.fixtures.samba import PASSWORD
from tests.ownership.conftest import Farm

runner = CliRunner()


def check(servers: list[str] | None = None) -> ValidationReport:
    with session_scope(get_engine()) as session:
        return validate_farm(session, lambda s: inventory.resolve_password(s), servers)


def failures(report: ValidationReport) -> dict[tuple[str, str], Finding]:
    return {(f.server, f.key): f for f in report.failures}


def no_probe_left(farm: Farm) -> bool:
    roots = [p for s in farm.samba.servers for p in s.shares.values()]
    return not any(f.name.startswith(PROBE_PREFIX) for share in roots for f in Path(share.path).iterdir())


def test_healthy_farm_passes_over_smb(farm: Farm) -> None:
    report = check()
    assert report.ok, [f.text() for f in report.failures]
    keys = {(f.server, f.key) for f in report.findings if f.status == "ok"}
    for server in ("rec1", "rec2", "spare1"):
        assert {(server, k) for k in ("lun-count", "drive-letters", "san-failover-mode", "credentials",
                                      "share:DATAD", "share:DATAE", "free-space:DATAD", "clock")} <= keys
    assert no_probe_left(farm)
    assert "readable and writable" in report.to_markdown()


def test_missing_share(farm: Farm) -> None:
    farm.set_share("rec2", "DATAE", present=False)
    bad = failures(check())
    assert set(bad) == {("rec2", "share:DATAE")}
    f = bad["rec2", "share:DATAE"]
    assert "\\\\rec2\\DATAE is not shared" in f.message
    assert f.fix == "share E:\\Data of rec2 as DATAE with read and write permission for 'fktest'"


def test_read_only_share(farm: Farm) -> None:
    farm.set_share("spare1", "DATAD", read_only=True)
    bad = failures(check())
    assert set(bad) == {("spare1", "share:DATAD")}
    f = bad["spare1", "share:DATAD"]
    assert "\\\\spare1\\DATAD is not writable as 'fktest'" in f.message
    assert "give 'fktest' read and write permission on share DATAD of spare1" in f.fix
    assert no_probe_left(farm)


def test_lun_count_differs(farm: Farm) -> None:
    farm.srv_spec("rec2")["volumes"] = farm.srv_spec("rec2")["volumes"][:1]
    farm.apply()
    bad = failures(check())
    assert set(bad) == {("rec2", "lun-count"), ("rec2", "drive-letters")}
    assert bad["rec2", "lun-count"].message == "1 SAN LUN(s) (D:) but rec1, spare1 have 2"
    assert bad["rec2", "drive-letters"].text() == "rec2: drive E: missing — map the LUN as E: like rec1, spare1"


def test_drive_letter_differs(farm: Farm) -> None:
    farm.set_share("rec2", "DATAF")
    vols = farm.srv_spec("rec2")["volumes"]
    vols[1] = {"drive": "F", "path": str(farm.root("rec2", "F"))}
    farm.apply()
    report = check()
    bad = failures(report)
    assert set(bad) == {("rec2", "drive-letters")}
    f = bad["rec2", "drive-letters"]
    assert f.message == "drive E: missing; drive F: is not on rec1, spare1"
    assert "map that LUN as E: instead of F:" in f.fix
    assert ("rec2", "share:DATAF") in {(x.server, x.key) for x in report.findings if x.status == "ok"}


def test_failover_mode_off(farm: Farm) -> None:
    farm.srv_spec("spare1")["san_failover_mode"] = False
    farm.apply()
    bad = failures(check())
    assert set(bad) == {("spare1", "san-failover-mode")}
    assert "tick 'SAN Failover mode: Copy files to owner server' on spare1" in bad["spare1", "san-failover-mode"].fix


def test_wrong_password(farm: Farm, monkeypatch: pytest.MonkeyPatch) -> None:
    farm.srv_spec("rec2")["smb"]["password_env"] = "FK_OWN_WRONG"
    farm.apply()
    monkeypatch.setenv("FK_OWN_WRONG", "Wrong-Secret-42")
    report = check()
    bad = failures(report)
    assert set(bad) == {("rec2", "credentials")}
    f = bad["rec2", "credentials"]
    assert "logon to 127.0.0.51 as 'fktest' failed on \\\\rec2\\DATAD, \\\\rec2\\DATAE" in f.message
    assert "FK_OWN_WRONG" in f.fix
    text = report.to_markdown() + json.dumps(report.to_dict())
    assert "Wrong-Secret-42" not in text and PASSWORD not in text
    monkeypatch.delenv("FK_OWN_WRONG")
    bad = failures(check())
    assert "FK_OWN_WRONG" in bad["rec2", "credentials"].message


def test_subset_and_unknown_server(farm: Farm) -> None:
    farm.srv_spec("spare1")["volumes"] = farm.srv_spec("spare1")["volumes"][:1]
    farm.apply()
    assert check(["rec1", "rec2"]).ok
    assert not check(["rec1", "spare1"]).ok
    from farmkeeper.errors import NotFoundError

    with pytest.raises(NotFoundError):
        check(["nope"])


# --- the flow and the CLI ---------------------------------------------------------------------------

@pytest.fixture
def receiver() -> Iterator[list[dict[str, object]]]:
    got: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    got.append({"url": f"json://127.0.0.1:{server.server_port}/"})
    yield got
    server.shutdown()


def test_flow_notifies_new_failures_once(farm: Farm, prefect_api: None, receiver: list[dict[str, object]]) -> None:
    from flows.validate_farm import validate_farm as validate_flow

    url = str(receiver.pop(0)["url"])
    farm.spec["farm"]["notify"] = [url]
    farm.apply()
    assert validate_flow().ok and receiver == []
    farm.set_share("rec1", "DATAE", read_only=True)
    report = validate_flow()
    assert [(f.server, f.key) for f in report.new_failures] == [("rec1", "share:DATAE")]
    assert len(receiver) == 1 and "rec1" in str(receiver[0]["message"]) and "DATAE" in str(receiver[0]["message"])
    report = validate_flow()
    assert not report.ok and report.new_failures == [] and len(receiver) == 1
    farm.set_share("rec1", "DATAE")
    report = validate_flow()
    assert report.ok and [(f.server, f.key) for f in report.resolved] == [("rec1", "share:DATAE")]


def test_cli_validate_exit_codes(farm: Farm) -> None:
    from farmkeeper.cli import app

    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 0, result.output
    assert "all SAN failover requirements met" in result.output
    farm.set_share("rec2", "DATAD", present=False)
    result = runner.invoke(app, ["validate", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["ok"] is False and [f["server"] for f in data["findings"] if not f["ok"]] == ["rec2"]
    result = runner.invoke(app, ["validate", "--server", "rec1", "--server", "spare1"])
    assert result.exit_code == 0, result.output

"""No notification token leaks: discord, telegram, slack and a json URL with a password (and a header key),
two of them given by reference ({env:} and a Prefect Secret block); every delivery fails; the failover,
retention-sweep and health-check flows run for real against the Prefect test API; then every output
(stdout/stderr of the process, every log record, the flows' results, ``status``), Prefect's database
(with its WAL), every file under PREFECT_HOME and the test's folder, and the artifacts are searched for
the tokens: none is found. (The inventory database holds the URLs the farm file spelled out, as the farm
file does; use references to keep them out of both.)"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from farmkeeper import notify as notify_module
from farmkeeper.cli import app
from flows.failover import FailoverParams, failover
from flows.health_check import HealthCheckParams, health_check
from flows.retention_sweep import RetentionSweepParams, retention_sweep
from tests.failover.conftest import Farm
from tests.failover.test_flows import Listeners, failing_for, set_server
from tests.fixtures.receivers import HttpReceiver

pytestmark = pytest.mark.usefixtures("prefect_api")

TOKENS = {
    "discord": ("440011223344556677", "DiscordWebhookTok3n-leaktest"),
    "telegram": ("7712345678", "AAF-telegramBotTok3nLeakTest"),
    "slack": ("T0LEAKAAAA", "B0LEAKBBBB", "slackTok3nLeakTestCCCC"),
    "json": ("json-Passw0rd-leaktest", "hdr-ApiKey-leaktest"),
}
SECRETS = [t for group in TOKENS.values() for t in group]


@pytest.fixture
def leaky_farm(make_farm: Callable[..., Farm], http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch,
               tmp_path: Path) -> Iterator[Farm]:
    from prefect.blocks.system import Secret

    d, t, s, j = TOKENS["discord"], TOKENS["telegram"], TOKENS["slack"], TOKENS["json"]
    monkeypatch.setenv("OPS_SLACK_URL", f"slack://{s[0]}/{s[1]}/{s[2]}/#ops")
    Secret(value=f"tgram://{t[0]}:{t[1]}/-1001234").save("ops-telegram", overwrite=True)
    json_url = http_receiver.url.replace("json://", f"json://ops:{j[0]}@") + f"?+X-Api-Key={j[1]}"
    http_receiver.fail_next(10_000)                   # every delivery to the json target fails (HTTP 500)
    farm = make_farm([("p1", "primary"), ("r1", "redundant")],
                     [{"id": "cam-a", "home": "p1"}, {"id": "cam-b", "home": "p1"}],
                     notify=[f"discord://{d[0]}/{d[1]}", json_url],   # discord.com: no network here, fails
                     extra_server={"r1": {"volumes": [{"drive": "D", "path": str(tmp_path / "gone")}]}})
    text = farm.path.read_text().replace("notify:\n", "notify:\n  - {env: OPS_SLACK_URL}\n  - {secret: ops-telegram}\n")
    farm.path.write_text(text)
    assert runner.invoke(app, ["apply", str(farm.path)]).exit_code == 0
    yield farm


runner = CliRunner()


def _prefect_files() -> list[Path]:
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_HOME

    url = str(PREFECT_API_DATABASE_CONNECTION_URL.value() or "")
    db = Path(url.split(":///", 1)[1]) if ":///" in url else None
    files = [p for p in Path(PREFECT_HOME.value()).rglob("*") if p.is_file()]
    if db is not None:
        files += [p for p in db.parent.glob(db.name + "*") if p.is_file()]
    assert db is not None and db.exists(), f"Prefect's database not found ({url})"
    return files


def _artifacts() -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [a.model_dump(mode="json") for a in client.read_artifacts()]


def test_no_token_reaches_any_output_log_database_or_artifact(
        leaky_farm: Farm, http_receiver: HttpReceiver, capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify_module, "RETRY_DELAY_S", 0.0)      # every attempt fails anyway: do not wait
    if hasattr(notify_module, "outbox"):
        monkeypatch.setattr(notify_module.outbox(), "retry_delay_s", 0.0)
    caplog.set_level(logging.DEBUG, logger="apprise")
    caplog.set_level(logging.DEBUG, logger="farmkeeper")
    listeners = Listeners(leaky_farm)
    listeners.up("r1")
    try:
        results: list[Any] = []
        set_server("p1", **failing_for(10))
        results.append(health_check(HealthCheckParams()))                 # p1 down: fails over, notifies
        results.append(failover(FailoverParams(server="r1", force=True, reason="leak test")))   # manual
        results.append(retention_sweep(RetentionSweepParams()))           # r1's volume is gone: an alert
    finally:
        listeners.close()
    if hasattr(notify_module, "outbox"):                                   # queued delivery: wait for it
        notify_module.outbox().flush(120)
    assert http_receiver.requests >= 3, "the json target was tried (and failed) for each notification"
    assert any(r["errors"] for r in results if "errors" in r), "the retention sweep alerted"

    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    status = runner.invoke(app, ["status", "--json"]).output
    assert any(s.startswith("discord://") for s in json.loads(status)["notify"])
    out, err = capfd.readouterr()
    haystacks = {
        "stdout": out, "stderr": err, "status": status, "results": json.dumps(results, default=str),
        "log records": "\n".join(f"{r.name}: {r.getMessage()} {r.exc_text or ''}" for r in caplog.records),
        "artifacts": json.dumps(_artifacts()),
    }
    inventory = Path(str(leaky_farm.path.parent / "inventory.db"))
    for path in [*_prefect_files(), *(p for p in tmp_path.rglob("*") if p.is_file())]:
        if path == leaky_farm.path or path.name.startswith(inventory.name):
            continue      # the farm file and the inventory hold what the operator wrote (see module doc)
        haystacks[str(path)] = path.read_bytes().decode("utf-8", "replace")
    assert re.search(r"notification to discord://\S+ (failed|undelivered)", haystacks["log records"]), \
        "the failed deliveries were logged, naming their targets"
    assert any("did not answer" in text for where, text in haystacks.items() if ".db" in where), \
        "the run logs reached Prefect's database (so searching it means something)"
    leaks = {(where, secret) for where, text in haystacks.items() for secret in SECRETS if secret in text}
    assert not leaks, sorted(leaks)

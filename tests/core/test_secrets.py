"""Notification secrets: targets are shown only in apprise's privacy form, their secret parts are removed
from any text (apprise's own log records included), and the farm file can keep URLs out of itself with
``{env: NAME}`` / ``{secret: BLOCK}`` references, which ``export`` writes back as references."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from farmkeeper.cli import app
from farmkeeper.errors import FarmFileError
from farmkeeper.farmfile import parse_farm_file
from farmkeeper.notify import notify, redact, redact_target, resolve_targets

EXAMPLE = Path(__file__).parents[2] / "examples" / "farm.yaml"
runner = CliRunner()

# (url, its secret parts, what the shown form still says)
TARGETS = [
    ("discord://112233445566778899/Zq9WebhookTokenDiscord_abcdef",
     ["112233445566778899", "Zq9WebhookTokenDiscord_abcdef"], "discord://"),
    ("tgram://987654321:AAHtelegramBotTokenXYZ1234567/-100123", ["987654321", "AAHtelegramBotTokenXYZ1234567"], "tgram://"),
    ("slack://T0SLACKAAA/B0SLACKBBB/slackwebhooktokenCCCCCC/#ops",
     ["T0SLACKAAA", "B0SLACKBBB", "slackwebhooktokenCCCCCC"], "slack://"),
    ("json://ops:hunter2-json-password@127.0.0.1:8089/hook?+X-Api-Key=headerkey-secret-77",
     ["hunter2-json-password", "headerkey-secret-77"], "json://ops:"),
]


@pytest.mark.parametrize(("url", "secrets", "kept"), TARGETS, ids=[t[2] for t in TARGETS])
def test_a_target_is_shown_in_apprise_privacy_form(url: str, secrets: list[str], kept: str) -> None:
    shown = redact_target(url)
    assert shown.startswith(kept)
    assert not any(s in shown for s in secrets), shown
    # once seen, its secrets are removed from any text, e.g. an exception quoting the service's request URL
    text = redact(f"POST https://api.example/{'/'.join(secrets)} failed; target {url}")
    assert not any(s in text for s in secrets), text
    assert redact(f"target {url} failed").startswith(f"target {kept}")


def test_unreadable_and_unknown_urls() -> None:
    assert redact_target("msteams://abcdefg/hijklmnopsecret/opqrst") == "msteams://***"
    assert redact_target("not a url sekrit") == "***"
    assert redact_target({"env": "OPS_URL"}) == "{env: OPS_URL}"
    # not an apprise scheme: left readable, credentials masked
    assert redact("probe tcp://127.0.0.2:50001 and https://u:pw12345@host/x") == \
        "probe tcp://127.0.0.2:50001 and https://u:***@host/x"


def test_apprise_never_logs_a_raw_url(caplog: pytest.LogCaptureFixture) -> None:
    """apprise logs an unreadable URL whole, and its request URLs at debug: neither reaches a log."""
    caplog.set_level(logging.DEBUG)
    bad = "msteams://abcdefg/rawteamssecret123/opqrst"
    discord = "discord://445566778899001122/DiscordTokenNeverLogged_0987"
    result = notify([bad, discord], "title", "body", retries=0)
    assert len(result.failed) == 2 and result.failed[0] == "msteams://***"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "notification" in logged                          # the failures were logged ...
    for secret in ("rawteamssecret123", "445566778899001122", "DiscordTokenNeverLogged"):
        assert secret not in logged                          # ... without the tokens


def test_references_resolve_at_run_time() -> None:
    loaded: list[str] = []

    def secret_loader(name: str) -> str:
        loaded.append(name)
        if name == "missing":
            raise ValueError("Unable to find block document named missing with token=leakme123")
        return "json://blockuser:blockpassword99@127.0.0.1:1/"

    resolved = resolve_targets(["json://127.0.0.1:2/", {"env": "OPS_URL"}, {"env": "UNSET_URL"},
                                {"secret": "ops-webhook"}, {"secret": "missing"}],
                               secret_loader=secret_loader, environ={"OPS_URL": "tgram://1234567:envbottoken99/5"})
    assert resolved.urls == ["json://127.0.0.1:2/", "tgram://1234567:envbottoken99/5",
                             "json://blockuser:blockpassword99@127.0.0.1:1/"]
    assert loaded == ["ops-webhook", "missing"]
    assert resolved.problems == ["notify {env: UNSET_URL}: environment variable UNSET_URL is not set",
                                 "notify {secret: missing}: cannot read the Secret block (ValueError)"]
    assert "blockpassword99" not in redact("json://blockuser:blockpassword99@127.0.0.1:1/")
    assert resolve_targets([{"secret": "x"}]).problems == [
        "notify {secret: x}: Prefect Secret blocks are read only in flows"]


FARM_REFS = EXAMPLE.read_text().replace(
    'notify: ["json://127.0.0.1:8089/"]',
    'notify:\n    - "json://127.0.0.1:8089/"\n    - {env: OPS_WEBHOOK_URL}\n    - {secret: ops-webhook}')


def test_farm_file_references_parse_and_bad_ones_name_their_line() -> None:
    spec = parse_farm_file(FARM_REFS)
    assert spec.farm.notify == ["json://127.0.0.1:8089/", {"env": "OPS_WEBHOOK_URL"}, {"secret": "ops-webhook"}]
    for bad, message in (("{env: 'no spaces'}", "env: 'no spaces' is not an environment variable name"),
                         ("{secret: Ops_Hook}", "secret: 'Ops_Hook' is not a Prefect block name"),
                         ("{env: A, secret: b}", "one key"), ("{vault: x}", "one key"),
                         ("[x]", "a notify entry is an apprise URL"),
                         ("'discord-without-scheme-secrettoken'", "not an apprise URL: ***"),
                         ("'msteams://abc/def-secrettoken/ghi'", "apprise cannot send to msteams://***")):
        text = FARM_REFS.replace("{secret: ops-webhook}", bad)
        with pytest.raises(FarmFileError) as info:
            parse_farm_file(text, "farm.yaml")
        assert any(p.startswith("farm.yaml:9: farm.notify[2]: ") and message in p for p in info.value.problems), \
            info.value.problems
        assert "secrettoken" not in str(info.value)


def test_export_writes_references_back_and_status_shows_privacy_forms(inventory_url: str, tmp_path: Path) -> None:
    farm = tmp_path / "farm.yaml"
    farm.write_text(FARM_REFS.replace('"json://127.0.0.1:8089/"', f'"{TARGETS[0][0]}"'))
    assert runner.invoke(app, ["apply", str(farm)]).exit_code == 0
    exported = yaml.safe_load(runner.invoke(app, ["export"]).output)
    assert exported["farm"]["notify"] == [TARGETS[0][0], {"env": "OPS_WEBHOOK_URL"}, {"secret": "ops-webhook"}]
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(exported))
    assert "nothing changed" in runner.invoke(app, ["apply", str(again)]).output
    status = runner.invoke(app, ["status", "--json"]).output
    shown = json.loads(status)["notify"]
    assert shown[0].startswith("discord://") and shown[1:] == ["{env: OPS_WEBHOOK_URL}", "{secret: ops-webhook}"]
    assert not any(s in status for s in TARGETS[0][1])

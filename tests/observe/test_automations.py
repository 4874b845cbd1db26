"""The shipped automations as Prefect reads them: prefect.yaml's triggers parse, parameters render right."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments.automations import swap_back_spec, trigger_specs, validate_on_down_spec

REPO = Path(__file__).resolve().parents[2]


def _render(parameters: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """What Prefect's run-deployment action does with an automation's parameters (v1 templates, then jinja)."""
    from prefect.server.events.actions import RunDeployment
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    params = copy.deepcopy(parameters)
    RunDeployment._upgrade_v1_templates(params)
    out = hydrate(params, HydrationContext(raise_on_error=True, render_jinja=True, jinja_context={"event": event}))
    assert isinstance(out, dict)
    return out


def test_prefect_yaml_triggers_are_what_prefect_deploy_accepts() -> None:
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers

    deployments = {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    assert deployments["validate-farm"]["triggers"] == [validate_on_down_spec()]
    assert all("triggers" not in d for name, d in deployments.items() if name != "validate-farm"), \
        "swap-back's trigger depends on the farm: farmkeeper automations apply"
    (trigger,) = _initialize_deployment_triggers("validate-farm", deployments["validate-farm"]["triggers"])
    assert trigger.expect == {"farmkeeper.server.down"}


@pytest.mark.parametrize(("live", "group", "servers"), [
    (["r1", "r2"], ["p1", "r1", "r2"], ["r1", "r2"]),
    ([], ["p1", "r1"], ["p1", "r1"]),          # nobody else up: the whole group
])
def test_validate_farm_gets_the_live_redundancy_group_as_a_list(live: list[str], group: list[str],
                                                                servers: list[str]) -> None:
    event = {"payload": {"live": live, "redundancy_group": group}, "resource": {}}
    assert _render(validate_on_down_spec()["parameters"], event) == {"params": {"servers": servers, "notify": True}}


def test_swap_back_trigger_waits_auto_swap_back_after_and_names_the_server() -> None:
    from prefect.events import DeploymentEventTrigger
    from prefect.events.schemas.events import Resource

    assert trigger_specs("swap-back", None) == [], "off unless the farm sets auto_swap_back_after"
    trigger = DeploymentEventTrigger.model_validate(swap_back_spec(90))
    assert trigger.within == timedelta(seconds=90) and trigger.posture == "Proactive"
    assert trigger.after == {"farmkeeper.server.recovered"} and trigger.expect == {"farmkeeper.server.down"}
    assert DeploymentEventTrigger.model_validate(swap_back_spec(3)).within == timedelta(seconds=10), \
        "Prefect's shortest proactive window"
    resource = Resource.model_validate({"prefect.resource.id": "farmkeeper.server.rec1",
                                        "prefect.resource.name": "rec1"})
    assert _render(swap_back_spec(90)["parameters"], {"resource": resource, "payload": {}}) == {
        "params": {"server": "rec1", "auto": True}}

"""The automations shipped with the deployment set: Prefect deployment triggers on farmkeeper's events.

* **server down → validate-farm**: every ``farmkeeper.server.down`` runs the ``validate-farm`` deployment
  for the server's redundancy group (its members still up, as the event's payload names them; all of
  them when none is up).
* **server recovered and healthy for ``auto_swap_back_after`` → swap-back**: a proactive trigger. A
  ``farmkeeper.server.recovered`` opens a window of ``auto_swap_back_after`` (Prefect's minimum is
  10 s) for that server; when no ``farmkeeper.server.down`` of the same server arrives in it, the
  ``swap-back`` deployment runs with ``server`` = that server and ``auto`` = true (the flow then checks
  it is still due: up, not in maintenance, cameras still failed over away from it, not started yet).
  Only when the farm file sets ``auto_swap_back_after``.

``farmkeeper serve`` attaches them to the deployments it serves; ``farmkeeper automations apply`` puts them
on deployments made by ``prefect deploy`` (prefect.yaml carries the validate-farm trigger itself; the
swap-back one depends on the inventory's ``auto_swap_back_after`` so it is applied from there). Both
replace the automations owned by the deployment, so applying twice leaves one of each.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

logger = logging.getLogger(__name__)

VALIDATE_ON_DOWN = "farmkeeper: server down -> validate-farm"
SWAP_BACK_WHEN_HEALTHY = "farmkeeper: server recovered and healthy -> swap-back"
MIN_PROACTIVE_S = 10.0   # Prefect refuses proactive windows shorter than this
SERVERS = {"prefect.resource.id": "farmkeeper.server.*"}


def validate_on_down_spec() -> dict[str, Any]:
    """The validate-farm trigger as prefect.yaml writes it (``triggers:`` of the deployment)."""
    return {
        "type": "event",
        "name": VALIDATE_ON_DOWN,
        "description": "A server went down: check the SAN failover requirements of its redundancy group "
                       "(the members still up) so the failover targets are known good.",
        "enabled": True,
        "match": dict(SERVERS),
        "expect": ["farmkeeper.server.down"],
        "posture": "Reactive",
        "threshold": 1,
        "within": 0,
        # one expression in parentheses: Prefect appends "| tojson" to it, which must apply to the whole list
        "parameters": {"params": {"servers": "{{ (event.payload.live or event.payload.redundancy_group) }}",
                                  "notify": True}},
    }


def swap_back_spec(after_s: float) -> dict[str, Any]:
    """The swap-back trigger for a farm whose ``auto_swap_back_after`` is ``after_s`` seconds."""
    within = max(MIN_PROACTIVE_S, float(after_s))
    return {
        "type": "event",
        "name": SWAP_BACK_WHEN_HEALTHY,
        "description": f"A recovered server stayed up for {within:g} s (auto_swap_back_after): bring its "
                       "failed-over cameras and their footage home.",
        "enabled": True,
        "match": dict(SERVERS),
        "after": ["farmkeeper.server.recovered"],
        "expect": ["farmkeeper.server.down"],
        "for_each": ["prefect.resource.id"],
        "posture": "Proactive",
        "threshold": 1,
        "within": within,
        "parameters": {"params": {"server": "{{ event.resource.name }}", "auto": True}},
    }


def trigger_specs(flow_name: str, auto_swap_back_after_s: float | None) -> list[dict[str, Any]]:
    """The triggers of one deployment (by flow name)."""
    if flow_name == "validate-farm":
        return [validate_on_down_spec()]
    if flow_name == "swap-back" and auto_swap_back_after_s is not None:
        return [swap_back_spec(auto_swap_back_after_s)]
    return []


def triggers(flow_name: str, auto_swap_back_after_s: float | None) -> list[Any]:
    """``DeploymentEventTrigger`` objects for ``to_deployment(triggers=...)``."""
    from prefect.events import DeploymentEventTrigger

    return [DeploymentEventTrigger.model_validate(spec) for spec in trigger_specs(flow_name, auto_swap_back_after_s)]


def farm_auto_swap_back_after() -> float | None:
    """``auto_swap_back_after`` of the farm in the inventory (None when off or unreadable)."""
    try:
        from farmkeeper import inventory
        from farmkeeper.db import ensure_schema, get_engine, session_scope

        with session_scope(ensure_schema(get_engine())) as session:
            return inventory.farm_settings(session).auto_swap_back_after_s
    except Exception as exc:  # noqa: BLE001 - no inventory yet: no swap-back automation
        logger.warning("auto_swap_back_after not read from the inventory (%s); no swap-back automation", exc)
        return None


def apply_automations(auto_swap_back_after_s: float | None, specs: list[Any] | None = None) -> list[str]:
    """Create the shipped automations on the deployments that exist on the Prefect API; returns what was done.

    Replaces the automations each deployment owns (the same thing ``serve`` and ``prefect deploy`` do).
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from deployments import DEPLOYMENTS

    done = []
    with get_client(sync_client=True) as client:
        for spec in specs if specs is not None else DEPLOYMENTS:
            if spec.flow_name not in ("validate-farm", "swap-back"):
                continue
            wanted = triggers(spec.flow_name, auto_swap_back_after_s)
            name = f"{spec.flow_name}/{spec.deployment}"
            try:
                deployment = client.read_deployment_by_name(name)
            except ObjectNotFound:
                done.append(f"{name}: no such deployment (run `farmkeeper serve` or `prefect deploy` first)")
                continue
            client.delete_resource_owned_automations(f"prefect.deployment.{deployment.id}")
            for trigger in wanted:
                trigger.set_deployment_id(deployment.id)
                client.create_automation(trigger.as_automation())
                done.append(f"{name}: {trigger.name}")
            if not wanted:
                done.append(f"{name}: none (auto_swap_back_after is not set)")
    return done


def list_automations() -> list[dict[str, Any]]:
    """The farmkeeper automations on the Prefect API: name, enabled, trigger, deployment."""
    from prefect.client.orchestration import get_client

    out = []
    with get_client(sync_client=True) as client:
        for automation in client.read_automations():
            if not automation.name.startswith("farmkeeper:"):
                continue
            within = getattr(automation.trigger, "within", None)
            out.append({"name": automation.name, "enabled": automation.enabled,
                        "posture": str(getattr(automation.trigger, "posture", "")),
                        "within_s": within.total_seconds() if isinstance(within, timedelta) else within,
                        "owner": automation.owner_resource})
    return out

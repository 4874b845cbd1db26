"""``farmkeeper automations apply|list``: the shipped Prefect automations (see ``deployments.automations``)."""

from __future__ import annotations

import json
import os

import typer

from farmkeeper.cli.app import app, console, fail

automations_app = typer.Typer(help="The Prefect automations shipped with farmkeeper (on its events).",
                              no_args_is_help=True)
app.add_typer(automations_app, name="automations")


def _need_api() -> None:
    if not os.environ.get("PREFECT_API_URL"):
        fail("PREFECT_API_URL is not set: point it at the Prefect server that runs the deployments "
             "(`farmkeeper serve` applies the automations itself)")


@automations_app.command("apply")
def apply_automations() -> None:
    """Create (or replace) the automations on the deployments of the Prefect server at PREFECT_API_URL.

    "server down -> validate-farm" always; "server recovered and healthy -> swap-back" when the farm sets
    auto_swap_back_after (read from the inventory now; apply again after changing it).
    """
    _need_api()
    from deployments.automations import apply_automations as apply_all
    from deployments.automations import farm_auto_swap_back_after

    try:
        done = apply_all(farm_auto_swap_back_after())
    except Exception as exc:  # noqa: BLE001 - the API refused or is unreachable: say so, exit 1
        fail(f"automations not applied: {type(exc).__name__}: {exc}")
    for line in done:
        console.print(line, highlight=False)


@automations_app.command("list")
def list_automations(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The farmkeeper automations on the Prefect server at PREFECT_API_URL."""
    _need_api()
    from deployments.automations import list_automations as list_all

    try:
        rows = list_all()
    except Exception as exc:  # noqa: BLE001
        fail(f"automations not read: {type(exc).__name__}: {exc}")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "on" if row["enabled"] else "off"
        window = f", window {row['within_s']:g} s" if row["posture"].endswith("Proactive") else ""
        console.print(f"{row['name']} ({state}{window})", highlight=False)

"""CLI commands of the retention area: ``run retention-sweep`` (holds are in ``cli/inventory.py``)."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from farmkeeper.cli.app import check_server_names, console, err_console, run_app, user_errors
from farmkeeper.specs import human_size


@run_app.command("retention-sweep")
def run_retention_sweep(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be deleted; touch nothing."),
    force: bool = typer.Option(False, "--force", help="Delete even when the implausible-purge guard trips."),
    server: list[str] = typer.Option([], "--server", help="Sweep only this server (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """One retention sweep now, in this process: age rules, then free-space floors, audited."""
    from farmkeeper.retention import RULES
    from flows.retention_sweep import RetentionSweepParams, retention_sweep

    check_server_names(server, "--server")
    with user_errors():
        result = retention_sweep(RetentionSweepParams(dry_run=dry_run, force=force, servers=server or None))
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    verb = "would delete" if dry_run else "deleted"
    table = Table(title=f"retention sweep{' (dry run)' if dry_run else ''}")
    for column in ("volume", "status", *RULES, "free before", "free after"):
        table.add_column(column)
    for v in result["volumes"]:
        status = (f"skipped: {v['skipped']}" if v.get("skipped") else f"error: {v['error']}" if v.get("error")
                  else "[red]guard: nothing deleted[/red]" if v.get("blocked") else verb)
        counts = v.get("rules", {}) if dry_run or v.get("blocked") else v.get("deleted", {})
        cells = [f"{c['files']} / {human_size(c['bytes'])}" if c["files"] else "-"
                 for c in (counts.get(r, {"files": 0, "bytes": 0})
                           for r in RULES)]
        before, after = v.get("free_before"), v.get("free_after")
        table.add_row(v["volume"], status, *cells, human_size(before) if before is not None else "-",
                      human_size(after) if after is not None else "-")
    console.print(table)
    for text in result["shortfalls"]:
        console.print(f"[yellow]shortfall:[/yellow] {text}", highlight=False)
    for text in result["alerts"] + result["errors"]:
        err_console.print(f"[red]alert:[/red] {text}", highlight=False, soft_wrap=True)
    if result["errors"]:
        raise typer.Exit(1)

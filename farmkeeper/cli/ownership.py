"""CLI commands of the ownership area: validate, ownership --explain, run recompute-ownership / validate-farm."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from farmkeeper import inventory
from farmkeeper.cli.app import app, console, db_session, run_app, user_errors
from farmkeeper.models import Server
from farmkeeper.settings import load_settings
from farmkeeper.validation import ValidationReport


def _password(server: Server) -> str:
    """The SMB password of ``server``; a Prefect Secret block is read only when one is referenced."""
    loader = None
    if server.smb_password_secret:
        from tasks.common import load_secret

        loader = load_secret
    return inventory.resolve_password(server, secret_loader=loader)


def _print_report(report: ValidationReport) -> None:
    style = {"ok": "[green]ok[/green]", "fail": "[red]FAIL[/red]", "skip": "[dim]skipped[/dim]",
             "warn": "[yellow]warning[/yellow]"}
    table = Table(title="SAN failover requirements")
    for column in ("server", "requirement", "result", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for f in report.findings:
        table.add_row(f.server, f.key, style[f.status], escape(f.message),
                      escape(f.fix if f.status in ("fail", "warn") else ""))
    console.print(table)
    colour = "green" if report.ok else "red"
    console.print(f"[{colour}]{escape(report.summary())}[/{colour}]")
    for f in report.failures:
        console.print(f"[red]✗[/red] {escape(f.text())}", highlight=False)


@app.command()
def validate(server: list[str] = typer.Option(None, "--server", "-s",
                                              help="Validate only this server (repeatable); default all with volumes."),
             as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Check the SAN failover requirements now (over SMB); exit 1 on any failure.

    Read only: nothing is recorded and nobody is notified (`farmkeeper run validate-farm` does both).
    """
    from farmkeeper.validation import check_group, load_group

    with db_session() as session:
        group = load_group(session, _password, server or None)
    with user_errors():
        report = check_group(group, prefer="local" if load_settings().storage.prefer == "local" else "smb",
                             folders=True)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def ownership(explain: str = typer.Option(..., "--explain", metavar="CAMERA",
                                          help="Explain the home of this camera."),
              recorded: bool = typer.Option(False, "--recorded",
                                            help="Use the counts of the last recompute-ownership (no I/O)."),
              as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Why a camera's home is what it is: files per server (and per stream/day), pin, margin."""
    from farmkeeper.ownership import count_footage, explain_camera
    from farmkeeper.settings import load_settings
    from farmkeeper.volumes import server_volumes

    fresh = None
    settings = load_settings()
    with db_session() as session:
        cam = inventory.get_camera(session, explain)
        vols = [] if recorded else server_volumes(session, _password,
                                                  require_signing=settings.storage.require_signing)
    if not recorded:
        with user_errors():
            fresh = count_footage(vols, prefer=settings.storage.prefer, camera=cam.id)
    with db_session() as session:
        result = explain_camera(session, cam.id, fresh)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    for line in result.lines():
        console.print(escape(line), highlight=False)


@run_app.command("recompute-ownership")
def run_recompute_ownership(
    dry_run: bool = typer.Option(False, "--dry-run", help="Report the homes that would change, change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the decisions as JSON."),
) -> None:
    """Count video files per camera on every server and set each home (the flow, now, in process)."""
    from flows.recompute_ownership import RecomputeOwnershipParams, recompute_ownership

    with user_errors():
        outcome = recompute_ownership(RecomputeOwnershipParams(dry_run=dry_run))
    rows = outcome.table()
    if as_json:
        typer.echo(json.dumps({"summary": outcome.summary(), "dry_run": dry_run, "cameras": rows,
                               "not_counted": outcome.unknown_servers}, indent=2, default=str))
        return
    if rows:
        table = Table(title="camera ownership" + (" (dry run)" if dry_run else ""))
        for column in rows[0]:
            table.add_column(str(column), overflow="fold")
        for row in rows:
            table.add_row(*(escape(str(v)) for v in row.values()))
        console.print(table)
    console.print(escape(outcome.summary()), highlight=False)


@run_app.command("validate-farm")
def run_validate_farm(
    server: list[str] = typer.Option(None, "--server", "-s", help="Validate only this server (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Validate the farm (the flow, now, in process): record, publish the report, notify new failures."""
    from flows.validate_farm import ValidateFarmParams, validate_farm

    with db_session() as session:
        for name in server or []:
            inventory.get_server(session, name)
    with user_errors():
        report = validate_farm(ValidateFarmParams(servers=server or None))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(1)

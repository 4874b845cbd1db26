"""Inventory commands: apply, export, status, camera pin, hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from farmkeeper import inventory
from farmkeeper.cli.app import (
    app,
    camera_app,
    check_camera_ids,
    check_server_names,
    console,
    db_session,
    err_console,
    fail,
    hold_app,
    parse_when,
    usage_error,
)
from farmkeeper.errors import FarmFileError, InventoryError
from farmkeeper.farmfile import apply_farm_file, dump_farm_yaml, export_farm, load_farm_file
from farmkeeper.specs import human_size
from farmkeeper.status import farm_status


@app.command()
def apply(file: Path = typer.Argument(..., help="The farm file (YAML)."),
          dry_run: bool = typer.Option(False, "--dry-run", help="Validate and show changes without saving."),
          force: bool = typer.Option(False, "--force", help="Add new servers that fail the SAN failover validation, "
                                     "remove servers whose volumes cannot be read.")) -> None:
    """Validate FILE, then make the inventory match it in one transaction (idempotent).

    New servers joining a SAN failover farm are validated first and refused (unless --force) when they
    lack what the seed requires; removed servers must hold no footage (see docs/move.md).
    """
    try:
        spec = load_farm_file(file)
    except FarmFileError as exc:
        for problem in exc.problems:
            err_console.print(problem, style="red", highlight=False, markup=False, soft_wrap=True)
        fail(f"{len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''} in {file}; nothing changed")
    for note in spec.warnings:
        err_console.print(f"warning: {note}", style="yellow", highlight=False, markup=False, soft_wrap=True)
    from farmkeeper.cli.move import check_lifecycle
    from farmkeeper.db import ensure_schema, get_engine, session_scope

    check_lifecycle(file, spec, force=force)
    try:
        with session_scope(ensure_schema(get_engine())) as session:
            result = apply_farm_file(session, spec)
            if dry_run:
                session.rollback()
    except InventoryError as exc:
        fail(f"{file}: {exc}; nothing changed")
    if not result.changed:
        console.print("inventory already matches the farm file; nothing changed")
        return
    for label, items in (("created", result.created), ("updated", result.updated), ("removed", result.removed)):
        for item in items:
            console.print(f"{label}: {item}", highlight=False)
    if dry_run:
        console.print("[yellow]dry run: nothing saved[/yellow]")


@app.command()
def export(output: Path | None = typer.Option(None, "--output", "-o", help="Write here instead of stdout.")) -> None:
    """Write the inventory as a farm file that applies back to the same inventory."""
    with db_session() as session:
        text = dump_farm_yaml(export_farm(session))
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        typer.echo(text, nl=False)


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
           storage: bool = typer.Option(False, "--storage", help="Add the storage forecast per camera.")) -> None:
    """Servers, cameras and running copy jobs."""
    with db_session() as session:
        data = farm_status(session)
        if storage:
            from farmkeeper.forecast import storage_forecast, storage_summary

            data["storage"] = storage_forecast(session)
            data["storage_summary"] = storage_summary(session)
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    servers = Table(title=f"farm {data['farm']}: servers")
    for column in ("server", "state", "role", "master", "cameras", "last seen"):
        servers.add_column(column)
    for s in data["servers"]:
        state = {"up": "[green]up[/green]", "down": "[red]down[/red]"}.get(s["state"], s["state"])
        if s["maintenance"]:
            state += " (maintenance)"
        servers.add_row(f"[bold]{s['name']}[/bold]" if s["master"] else s["name"], state, s["role"],
                        "yes" if s["master"] else "", str(s["cameras"]), s["last_seen"] or "-")
    console.print(servers)
    console.print(f"last health sweep: {_ago(data.get('swept_at'))}", highlight=False)
    cameras = Table(title="cameras")
    for column in ("camera", "name", "home", "current", "movable", "state"):
        cameras.add_column(column)
    for c in data["cameras"]:
        home = c["home"] + (" (pinned)" if c["pinned_home"] else "")
        current = c["current"] or "-"
        if c["current"] != c["home"]:
            current = f"[yellow]{current}[/yellow]"
        cameras.add_row(c["id"], c["name"], home, current, "yes" if c["movable"] else "no", c["state"])
    console.print(cameras)
    if data["copy_jobs"]:
        _print_copy_jobs(data["copy_jobs"])
    if storage:
        _print_summary(data["storage_summary"])
        _print_forecast(data["storage"])


def _print_copy_jobs(jobs: list[dict[str, object]]) -> None:
    from rich.progress_bar import ProgressBar

    table = Table(title="copy jobs (footage being brought home)")
    for column in ("job", "kind", "cameras", "to", "progress", "files", "bytes"):
        table.add_column(column)
    for job in jobs:
        total = int(str(job["bytes_total"])) or 1
        done = int(str(job["bytes_done"]))
        table.add_row(str(job["id"]), str(job["kind"]), ", ".join(map(str, job["cameras"])),  # type: ignore[call-overload]
                      str(job["target"]), ProgressBar(total=total, completed=done, width=30),
                      f"{job['files_done']}/{job['files_total']}",
                      f"{human_size(done)} / {human_size(int(str(job['bytes_total'])))}")
    console.print(table)


def _print_summary(rows: list[dict[str, Any]]) -> None:
    table = Table(title="Storage Summary", caption="as the last retention sweep of each volume saw it")
    for column in ("volume", "total", "free", "floors", "oldest footage", "days held / configured", "swept"):
        table.add_column(column)

    def size(n: Any) -> str:
        return "-" if n is None else human_size(int(n))

    for r in rows:
        label = r["unc"] or f"\\\\{r['server']}\\DATA{r['drive']}"
        free = size(r["free_bytes"]) + (f" ({r['free_percent']}%)" if r["free_percent"] is not None else "")
        if r["below_floor"]:
            free = f"[red]{free} below floor[/red]"
        floors = f"{size(r['min_free_bytes'])}, {r['min_free_percent']:g}% -> {size(r['floor_bytes'])}"
        held = "-" if r["days_held"] is None else f"{r['days_held']:g}"
        configured = "no limit" if r["days_configured"] is None else str(r["days_configured"])
        table.add_row(f"{label} ({r['server']} {r['drive']}:)" if r["unc"] else label, size(r["total_bytes"]), free,
                      floors, (r["oldest_footage"] or "-")[:16], f"{held} / {configured}",
                      (r["swept_at"] or "never")[:16])
    console.print(table)


def _print_forecast(rows: list[dict[str, object]]) -> None:
    table = Table(title="storage forecast")
    for column in ("camera", "server", "drive", "holds days", "rule days", "bytes/day", "lasts days"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row.get(k, "")) for k in ("camera", "server", "drive", "held_days", "rule_days",
                                                       "bytes_per_day", "lasts_days")))
    console.print(table)


@camera_app.command("pin")
def camera_pin(camera_id: str = typer.Argument(..., metavar="ID"),
               server: str | None = typer.Argument(None, help="Home server; omit with --unpin."),
               unpin: bool = typer.Option(False, "--unpin", help="Let file counts decide again.")) -> None:
    """Pin a camera's home server (overrides file-count ownership)."""
    if (server is None) != unpin:
        usage_error("give a SERVER to pin, or --unpin")
    check_camera_ids(camera_id, "ID")
    if server is not None:
        check_server_names(server)
    with db_session() as session:
        camera = inventory.pin_camera(session, camera_id, None if unpin else server)
    console.print(f"{camera.id}: home {camera.home}" + (" (pinned)" if camera.pinned_home else " (unpinned)"))


@hold_app.command("add")
def hold_add(camera_id: str = typer.Argument(..., metavar="CAMERA"),
             start: str = typer.Option(..., "--from", help="Start of the held range (ISO 8601, UTC if no zone)."),
             end: str = typer.Option(..., "--to", help="End of the held range (exclusive)."),
             reason: str = typer.Option(..., "--reason", help="Why (case number, request).")) -> None:
    """Protect CAMERA's footage in [--from, --to) from every deletion rule."""
    check_camera_ids(camera_id)
    begin, until = parse_when(start, "--from"), parse_when(end, "--to")
    if until <= begin:
        usage_error(f"--to {until.isoformat()} is not after --from {begin.isoformat()}")
    if not reason.strip() or len(reason) > 1000 or not reason.isprintable():
        usage_error("--reason: one line of printable text, up to 1000 characters")
    with db_session() as session:
        hold = inventory.add_hold(session, camera_id, begin, until, reason)
    console.print(f"hold {hold.id}: {camera_id} {hold.start.isoformat()} .. {hold.end.isoformat()} ({reason})")


@hold_app.command("list")
def hold_list(camera_id: str | None = typer.Argument(None, metavar="[CAMERA]"),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """List holds."""
    if camera_id is not None:
        check_camera_ids(camera_id)
    with db_session() as session:
        holds = [h.model_dump(mode="json") for h in inventory.list_holds(session, camera_id)]
    if as_json:
        typer.echo(json.dumps(holds, indent=2))
        return
    table = Table(title="holds")
    for column in ("id", "camera", "from", "to", "reason"):
        table.add_column(column)
    for h in holds:
        table.add_row(str(h["id"]), h["camera_id"], h["start"], h["end"], h["reason"])
    console.print(table)


@hold_app.command("remove")
def hold_remove(hold_id: int = typer.Argument(..., metavar="ID", min=1, max=2**63 - 1)) -> None:
    """Remove a hold."""
    with db_session() as session:
        inventory.remove_hold(session, hold_id)
    console.print(f"hold {hold_id} removed")


def _ago(iso: str | None) -> str:
    """``2026-... (12 s ago)``; ``never`` when no sweep ever probed: nobody watches the farm."""
    if not iso:
        return "never (no health check has run: start `farmkeeper serve`)"
    from datetime import datetime

    from farmkeeper.models import utcnow

    age = (utcnow() - datetime.fromisoformat(iso)).total_seconds()
    return f"{iso} ({age:.0f} s ago)"

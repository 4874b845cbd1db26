"""CLI of moving cameras: ``farmkeeper move CAMERA... --to SERVER --footage move|keep``; apply's lifecycle checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from farmkeeper import inventory
from farmkeeper.cli.app import (
    app,
    check_camera_ids,
    check_copy_options,
    check_server_names,
    console,
    err_console,
    fail,
    run_app,
    run_flow_now,
    usage_error,
)
from farmkeeper.errors import FarmkeeperError
from farmkeeper.farmfile import FarmFile
from farmkeeper.models import Server
from farmkeeper.specs import human_size


def _password(server: Server) -> str:
    loader = None
    if server.smb_password_secret:
        from tasks.common import load_secret

        loader = load_secret
    return inventory.resolve_password(server, secret_loader=loader)


def check_lifecycle(file: Path, spec: FarmFile, *, force: bool) -> None:
    """Before ``apply`` saves: validate servers joining a SAN farm, refuse removing servers that hold footage."""
    from farmkeeper.db import ensure_schema, get_engine, session_scope
    from farmkeeper.lifecycle import preflight_apply
    from farmkeeper.settings import load_settings

    prefer = load_settings().storage.prefer
    try:
        check = preflight_apply(lambda: session_scope(ensure_schema(get_engine())), spec, _password, prefer=prefer,
                                validate_prefer="local" if prefer == "local" else "smb")
    except FarmkeeperError as exc:
        fail(f"{file}: {exc}; nothing changed")
    if check.validation is not None:
        console.print(f"SAN failover validation of the redundancy group with "
                      f"{', '.join(check.new_servers)}: {check.validation.summary()}", highlight=False)
        for line in check.new_server_failures():
            err_console.print(f"  new server: {line}", style="red" if not force else "yellow", highlight=False,
                              markup=False, soft_wrap=True)
        for line in check.other_failures():
            err_console.print(f"  warning: {line}", style="yellow", highlight=False, markup=False, soft_wrap=True)
    refusals = check.refusals(force=force)
    if refusals:
        for line in refusals:
            err_console.print(line, style="red", highlight=False, markup=False, soft_wrap=True)
        forceable = bool(check.new_server_failures() or check.unreadable) and not check.footage
        fail(f"{file}: refused; nothing changed"
             + (" (fix the above, or apply with --force to add/remove the servers anyway)" if forceable else ""))
    if force and (check.new_server_failures() or check.unreadable):
        err_console.print("--force: applying despite the problems above", style="yellow", highlight=False)


def _move(cameras: list[str], to: str, footage: str, dry_run: bool, max_mbps: float | None, verify: str,
          connections: int | None, wait_closed: float, as_json: bool) -> None:
    if footage not in ("move", "keep"):
        usage_error(f"--footage must be move or keep, not {footage!r}")
    check_camera_ids(cameras)
    check_server_names(to, "--to")
    check_copy_options(verify, max_mbps, connections, wait_closed)
    from flows.move_cameras import MoveCamerasParams, move_cameras

    run_flow_now("move", lambda: MoveCamerasParams(cameras=cameras, target=to, footage=footage, dry_run=dry_run,
                                                   max_mbps=max_mbps, verify=verify, connections=connections,
                                                   wait_closed_s=wait_closed),
                 move_cameras, as_json=as_json, show=_print)


def _print(result: dict[str, Any]) -> None:
    if result.get("state") == "dry run":
        console.print(f"[yellow]dry run[/yellow]: nothing changed; move {', '.join(result['cameras'])} to "
                      f"{result['target']} (footage: {result['footage']})", highlight=False)
        for row in result["sources"]:
            console.print(f"  {row['camera']} {row['volume']}: {row['files']} files, {human_size(row['bytes'])}"
                          + (f" ({row['already_on_target']} already on the target)" if row["already_on_target"]
                             else ""), highlight=False, markup=False)
        for d in result["space"]:
            free = "unknown" if d["free"] is None else human_size(d["free"])
            console.print(f"  target {d['volume']}: needs {human_size(d['needed'])}, free {free}, floor "
                          f"{human_size(d['floor'])} -> {'fits' if d['fits'] else 'DOES NOT FIT'}",
                          highlight=False, markup=False)
        for line in result.get("unmapped") or []:
            console.print(f"  not copied: {line}", highlight=False, markup=False)
        if result.get("refused"):
            fail(f"the move would be refused: {result['refused']}")
        return
    if result.get("footage") == "keep":
        console.print(f"moved {', '.join(result['cameras'])} to {result['target']}; footage kept where it is "
                      f"({result['kept_files']} files, {human_size(result['kept_bytes'])}): {result.get('why', '')}",
                      highlight=False, markup=False, soft_wrap=True)
        for cam, volumes in (result.get("footage_stays") or {}).items():
            console.print(f"  {cam}: footage stays on {', '.join(volumes)}", highlight=False, markup=False)
        return
    console.print(f"move to {result['target']} {result['state']} (copy job #{result['job_id']}): "
                  f"{result['copied']} copied, {result['skipped']} skipped (identical), {result['conflicts']} "
                  f"conflicts (both kept), {result['removed']} sources removed; "
                  f"{human_size(result['bytes_transferred'])} in {result['seconds']:.1f} s", highlight=False)
    for line in result.get("unmapped") or []:
        console.print(f"[yellow]not copied:[/yellow] {line}", highlight=False)


_CAMERAS = typer.Argument(..., metavar="CAMERA...", help="Camera ids to move.")
_TO = typer.Option(..., "--to", help="Target server: records the cameras from now on (their new home).")
_FOOTAGE = typer.Option(..., "--footage", help="move: copy their footage to the target (verified) and delete the "
                                               "sources; keep: leave it where it is.")
_DRY = typer.Option(False, "--dry-run", help="Only show the plan: files and bytes per source volume, space.")
_MBPS = typer.Option(None, "--max-mbps", help="Bandwidth cap in megabits per second.")
_VERIFY = typer.Option("hash", "--verify", help="hash (default): read the copy back, compare BLAKE2b with the "
                       "source's; size: size and mtime only (opt-out for trusted storage).")
_CONN = typer.Option(None, "--connections", help="Parallel SMB connections per copy.")
_WAIT = typer.Option(120.0, "--wait-closed", help="Seconds to wait for the old servers to close segments.")
_JSON = typer.Option(False, "--json", help="Print the result as JSON.")


@app.command("move")
def move_command(cameras: list[str] = _CAMERAS, to: str = _TO, footage: str = _FOOTAGE, dry_run: bool = _DRY,
                 max_mbps: float | None = _MBPS, verify: str = _VERIFY, connections: int | None = _CONN,
                 wait_closed: float = _WAIT, as_json: bool = _JSON) -> None:
    """Move cameras to another server with (move) or without (keep) their footage; runs the flow now."""
    _move(cameras, to, footage, dry_run, max_mbps, verify, connections, wait_closed, as_json)


@run_app.command("move-cameras")
def run_move_cameras(cameras: list[str] = _CAMERAS, to: str = _TO, footage: str = _FOOTAGE, dry_run: bool = _DRY,
                     max_mbps: float | None = _MBPS, verify: str = _VERIFY, connections: int | None = _CONN,
                     wait_closed: float = _WAIT, as_json: bool = _JSON) -> None:
    """One run of the move-cameras flow now, in this process (same as ``farmkeeper move``)."""
    _move(cameras, to, footage, dry_run, max_mbps, verify, connections, wait_closed, as_json)

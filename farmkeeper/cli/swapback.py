"""CLI of the swap-back area: ``farmkeeper swap-back SERVER | --camera ID ...`` (also ``farmkeeper run swap-back``)."""

from __future__ import annotations

from typing import Any

import typer

from farmkeeper.cli.app import (
    app,
    check_camera_ids,
    check_copy_options,
    check_server_names,
    console,
    run_app,
    run_flow_now,
    usage_error,
)
from farmkeeper.specs import human_size


def _swap_back(server: str | None, cameras: list[str], keep_source: bool, max_mbps: float | None, verify: str,
               dry_run: bool, connections: int | None, wait_closed: float, as_json: bool) -> None:
    if bool(server) == bool(cameras):
        usage_error("give a SERVER (every camera whose home it is) or --camera ID (repeatable), not both")
    if server:
        check_server_names(server)
    check_camera_ids(cameras, "--camera")
    check_copy_options(verify, max_mbps, connections, wait_closed)
    from flows.swap_back import SwapBackParams, swap_back

    run_flow_now("swap-back", lambda: SwapBackParams(server=server, cameras=cameras, delete_source=not keep_source,
                                                     max_mbps=max_mbps, verify=verify, dry_run=dry_run,
                                                     connections=connections, wait_closed_s=wait_closed),
                 swap_back, as_json=as_json, show=_print)


def _print(result: dict[str, Any]) -> None:
    state = result.get("state")
    if not result.get("cameras"):
        console.print(f"{result.get('home')}: nothing to swap back", highlight=False)
        return
    if result.get("why") and state in ("done", "dry run"):
        verb = "would record" if state == "dry run" else "record"
        console.print(f"{', '.join(result['cameras'])} {verb} at {result['home']} again; nothing copied or deleted: "
                      f"{result['why']}", highlight=False, markup=False, soft_wrap=True)
        for cam, servers in (result.get("footage_stays") or {}).items():
            console.print(f"  {cam}: footage stays on {', '.join(servers)}", highlight=False, markup=False)
        return
    if state == "dry run":
        console.print(f"[yellow]dry run[/yellow]: nothing changed; {result['files']} files "
                      f"({human_size(result['bytes'])}) would be copied to {result['home']}", highlight=False)
        for row in result["moves"]:
            console.print(f"  {row['camera']}: {row['records now on']} -> {row['would record on']}, "
                          f"{row['files to copy']} files, {row['bytes to copy']}", highlight=False)
        for line in result.get("unmapped") or []:
            console.print(f"[yellow]not copied:[/yellow] {line}", highlight=False)
        return
    console.print(f"swap-back to {result['home']} {state} (copy job #{result['job_id']}): {result['copied']} copied, "
                  f"{result['skipped']} skipped (identical), {result['conflicts']} conflicts (both kept), "
                  f"{result['removed']} sources removed; {human_size(result['bytes_transferred'])} in "
                  f"{result['seconds']:.1f} s", highlight=False)
    for line in result.get("unmapped") or []:
        console.print(f"[yellow]not copied:[/yellow] {line}", highlight=False)
    if result.get("still_open"):
        console.print("[yellow]segments still open, copy them later:[/yellow] "
                      + "; ".join(f"{k}: {len(v)}" for k, v in result["still_open"].items()), highlight=False)


_SERVER = typer.Argument(None, help="Home server: every camera whose home it is and that records elsewhere.")
_CAMERA = typer.Option([], "--camera", "-c", help="A camera id (repeatable); all must share one home.")
_KEEP = typer.Option(False, "--keep-source", help="Keep the footage on the other servers after the copy.")
_MBPS = typer.Option(None, "--max-mbps", help="Bandwidth cap in megabits per second.")
_VERIFY = typer.Option("hash", "--verify", help="hash (default): read the copy back, compare BLAKE2b with the "
                       "source's; size: size and mtime only (opt-out for trusted storage).")
_DRY = typer.Option(False, "--dry-run", help="Only show what would move and be copied.")
_CONN = typer.Option(None, "--connections", help="Parallel SMB connections per copy.")
_WAIT = typer.Option(120.0, "--wait-closed", help="Seconds to wait for the other servers to close segments.")
_JSON = typer.Option(False, "--json", help="Print the result as JSON.")


@app.command("swap-back")
def swap_back_command(server: str | None = _SERVER, camera: list[str] = _CAMERA, keep_source: bool = _KEEP,
                      max_mbps: float | None = _MBPS, verify: str = _VERIFY, dry_run: bool = _DRY,
                      connections: int | None = _CONN, wait_closed: float = _WAIT, as_json: bool = _JSON) -> None:
    """Move cameras home and copy their footage back (verified, resumable); runs the flow now, in process."""
    _swap_back(server, camera, keep_source, max_mbps, verify, dry_run, connections, wait_closed, as_json)


@run_app.command("swap-back")
def run_swap_back(server: str | None = _SERVER, camera: list[str] = _CAMERA, keep_source: bool = _KEEP,
                  max_mbps: float | None = _MBPS, verify: str = _VERIFY, dry_run: bool = _DRY,
                  connections: int | None = _CONN, wait_closed: float = _WAIT, as_json: bool = _JSON) -> None:
    """One run of the swap-back flow now, in this process (same as ``farmkeeper swap-back``)."""
    _swap_back(server, camera, keep_source, max_mbps, verify, dry_run, connections, wait_closed, as_json)

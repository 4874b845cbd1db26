"""CLI commands of the failover area: ``run health-check``, ``run failover``, ``sim``, ``server maintenance|role``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from farmkeeper import inventory
from farmkeeper.cli.app import (
    app,
    check_server_names,
    console,
    db_session,
    parse_cli_duration,
    run_app,
    usage_error,
    user_errors,
)

SERVED_API = "http://127.0.0.1:4200/api"   # where `farmkeeper serve` puts its Prefect server by default
server_app = typer.Typer(help="Server commands.", no_args_is_help=True)
app.add_typer(server_app, name="server")


@run_app.command("health-check")
def run_health_check(
    watch: str = typer.Option("0", "--watch", help="Keep sweeping for this long (e.g. 5m); 0 = one sweep."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """One probe sweep now, in this process: mark down/up, fail over, recover, notify.

    With a Prefect API up (``PREFECT_API_URL``, or a ``farmkeeper serve`` on the default port) the sweep is a
    flow run there; without one it runs as plain functions (no ephemeral Prefect server to start).
    """
    watch_s = parse_cli_duration(watch, "--watch", high=7 * 86400)   # before Prefect is imported
    from farmkeeper.apicheck import api_healthy

    if not os.environ.get("PREFECT_API_URL") and api_healthy(SERVED_API, 0.5):
        os.environ["PREFECT_API_URL"] = SERVED_API     # a local `farmkeeper serve`: record the run there
    if watch_s > 0:   # a watching process: no step waits long for a locked SQLite inventory
        from flows.health_check import WATCH_PROCESS_BUSY_TIMEOUT_MS

        os.environ.setdefault("FARMKEEPER_SQLITE_BUSY_TIMEOUT_MS", str(WATCH_PROCESS_BUSY_TIMEOUT_MS))
    from flows.health_check import HealthCheckParams, run_watch

    with user_errors():
        result = run_watch(HealthCheckParams(watch_for=watch_s))
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    last = result["last"]
    console.print(f"{result['sweeps']} sweep(s); not answering: {', '.join(last['down']) or 'none'}")
    for server, transition in result["transitions"]:
        console.print(f"{server}: {transition}", highlight=False)
    for fo in last["failovers"]:
        console.print(f"failover {fo['server']}: {len(fo['moved'])} moved, stranded {fo['stranded'] or '-'}, "
                      f"offline {fo['offline'] or '-'}", highlight=False)


@run_app.command("failover")
def run_failover(
    server: str = typer.Argument(..., help="The server whose cameras move away."),
    force: bool = typer.Option(False, "--force", help="Also when the server is up or in maintenance."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Fail over SERVER now (manual): movable cameras go to live redundant servers."""
    from flows.failover import FailoverParams, failover

    check_server_names(server)
    with db_session() as session:
        inventory.get_server(session, server)
    with user_errors():
        result = failover(FailoverParams(server=server, force=force, reason="manual failover"))
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    if result["skipped"]:
        console.print(f"{server}: {result['skipped']}", highlight=False)
        return
    for move in result["moved"]:
        console.print(f"{move['camera']}: {move['from_server']} -> {move['to_server']}", highlight=False)
    if result["stranded"]:
        console.print(f"[yellow]stranded (no capacity yet):[/yellow] {', '.join(result['stranded'])}")
    if result["offline"]:
        console.print(f"[yellow]offline (not movable):[/yellow] {', '.join(result['offline'])}")
    if not (result["moved"] or result["stranded"] or result["offline"]):
        console.print(f"{server} records no cameras; nothing to move")


@server_app.command("maintenance")
def maintenance(
    name: str = typer.Argument(..., help="Server name."),
    mode: str = typer.Argument(..., help="on | off"),
) -> None:
    """Maintenance mode: a server that goes down while on is not failed over (its cameras wait)."""
    if mode not in ("on", "off"):
        usage_error(f"mode must be on or off, not {mode!r}")
    check_server_names(name, "NAME")
    with db_session() as session:
        server = inventory.get_server(session, name, for_update=True)
        want = mode == "on"
        if server.maintenance == want:
            console.print(f"{name}: maintenance already {mode}")
            return
        server.maintenance = want
        server.version += 1
        session.add(server)
        inventory.record_server_event(session, name, "maintenance", on=want)
        state = server.state.value
    console.print(f"{name}: maintenance {mode} (server is {state})")
    if not want and state == "down":
        console.print("the next health check fails its movable cameras over")


@server_app.command("role")
def role(
    name: str = typer.Argument(..., help="Server name."),
    new_role: str = typer.Argument(..., metavar="primary|redundant", help="primary | redundant"),
) -> None:
    """Set a server's role by hand (recorded as a server event): failover moves cameras only to redundant ones."""
    from farmkeeper.failover import set_role
    from farmkeeper.models import Role

    if new_role not in ("primary", "redundant"):
        usage_error(f"role must be primary or redundant, not {new_role!r}")
    check_server_names(name, "NAME")
    with db_session() as session:
        changed = set_role(session, name, Role(new_role), reason="set by the operator (farmkeeper server role)")
        server = inventory.get_server(session, name)
        recording = len(inventory.list_cameras(session, current=name))
        declared = server.declared_role.value
    if not changed:
        console.print(f"{name}: already {new_role}", highlight=False)
        return
    console.print(f"{name}: role {new_role} (declared in the farm file: {declared}; records {recording} "
                  f"camera{'s' if recording != 1 else ''})", highlight=False)
    if new_role == "redundant" and recording:
        console.print(f"[yellow]note:[/yellow] {name} still records its cameras; failover may now also move "
                      "cameras of a down server to it", highlight=False)


@app.command()
def sim(
    farm_file: Path = typer.Argument(..., help="The farm file (servers, health URLs)."),
    segment: str = typer.Option("2s", "--segment", help="Length of one video segment."),
    bitrate: str = typer.Option("2M,512k", "--bitrate", help="Bits per second of stream 0,1,... (last repeats)."),
    state_dir: Path | None = typer.Option(None, "--state-dir",
                                          help="Pid and status files (default FARMKEEPER_HOME/sim)."),
    only: str | None = typer.Option(None, "--only", help="Run just this server, in the foreground."),
    stall: list[str] = typer.Option([], "--stall", help="Control a running sim: stop recording CAMERA (repeatable)."),
    resume: list[str] = typer.Option([], "--resume", help="Control a running sim: record CAMERA again."),
    fail_volume: list[str] = typer.Option([], "--fail-volume",
                                          help="Control a running sim: SERVER:DRIVE becomes unusable (gone)."),
    restore_volume: list[str] = typer.Option([], "--restore-volume", help="Control a running sim: SERVER:DRIVE back."),
) -> None:
    """The farm simulator: one process per server answering its probe and recording its cameras.

    Cameras follow the inventory (FARMKEEPER_DATABASE_URL): apply the farm file first. Kill
    <state-dir>/<server>.pid to simulate a dead server; restart it with --only SERVER. With --stall, --resume,
    --fail-volume or --restore-volume it only changes the controls of a running simulator and returns.
    """
    from farmkeeper.settings import load_settings
    from farmkeeper.sim import SimOptions, parse_bitrates, run_farm, run_server

    if stall or resume or fail_volume or restore_volume:
        from farmkeeper.sim.control import update_control

        with user_errors():
            control = update_control((state_dir or load_settings().home / "sim").resolve(), stall=tuple(stall),
                                     resume=tuple(resume), fail_volume=tuple(fail_volume),
                                     restore_volume=tuple(restore_volume))
        console.print(f"sim control: stalled cameras {', '.join(sorted(control.stalled)) or 'none'}; failed volumes "
                      f"{', '.join(sorted(control.failed_volumes)) or 'none'}", highlight=False)
        return
    segment_s = parse_cli_duration(segment, "--segment", low=1, high=3600)   # names have 1 s resolution
    if only is not None:
        check_server_names(only, "--only")
    with user_errors():
        settings = load_settings()
        options = SimOptions(database_url=settings.database_url,
                             state_dir=(state_dir or settings.home / "sim").resolve(),
                             segment_s=segment_s, bitrates=parse_bitrates(bitrate))
        if only:
            console.print(f"simulating {only} (Ctrl-C stops); state in {options.state_dir}")
            run_server(farm_file.resolve(), only, options)
        else:
            console.print(f"simulating the farm of {farm_file} (Ctrl-C stops); pids in {options.state_dir}")
            run_farm(farm_file.resolve(), options)

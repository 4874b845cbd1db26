"""CLI reports: ``report continuity CAMERA [--from T] [--to T] [--json]``."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import typer
from rich.table import Table

from farmkeeper.cli.app import (
    app,
    check_camera_ids,
    console,
    db_session,
    parse_when,
    run_app,
    run_flow_now,
    user_errors,
)
from farmkeeper.storage.base import Volume

report_app = typer.Typer(help="Reports over the farm's footage.", no_args_is_help=True)
app.add_typer(report_app, name="report")


def _when(text: str | None, option: str, default: datetime) -> datetime:
    return default if text is None else parse_when(text, option)


@report_app.command("continuity")
def report_continuity(
    camera: str = typer.Argument(..., metavar="CAMERA"),
    start: str | None = typer.Option(None, "--from", help="Start (ISO 8601, UTC if no zone; default: --to - 24 h)."),
    end: str | None = typer.Option(None, "--to", help="End, exclusive (default: now)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Gaps in CAMERA's footage (across every server and volume it recorded on) and its availability."""
    from farmkeeper import continuity, inventory
    from farmkeeper.settings import load_settings
    from farmkeeper.storage import open_volume
    from farmkeeper.volumes import server_volumes

    check_camera_ids(camera)
    to = _when(end, "--to", datetime.now(UTC).replace(microsecond=0))
    frm = _when(start, "--from", to - timedelta(days=1) if to > datetime.min.replace(tzinfo=UTC) + timedelta(days=1)
                else to)
    with db_session() as session:
        inventory.get_camera(session, camera)
        vols = continuity.camera_volumes(session, camera)
        accesses = {(v.server, v.drive): v.access for v in server_volumes(
            session, lambda s: inventory.resolve_password(s, secret_loader=_load_secret),
            servers=sorted({s for s, _ in vols}), require_signing=load_settings().storage.require_signing)}
    prefer = load_settings().storage.prefer
    opened: dict[tuple[str, str], Volume] = {}
    lock = threading.Lock()

    def open_one(server: str, drive: str) -> Volume:
        with lock:                                   # one connection set per volume, shared by the threads
            if (server, drive) not in opened:
                opened[(server, drive)] = open_volume(accesses[(server, drive)], prefer=prefer)
            return opened[(server, drive)]

    with user_errors():
        try:
            report = continuity.continuity(camera, frm, to, vols, open_one)
        finally:
            for volume in opened.values():
                volume.close()
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    table = Table(title=f"continuity of {camera}: {report.availability_percent} % available "
                        f"({report.start:%Y-%m-%d %H:%M} .. {report.end:%Y-%m-%d %H:%M} UTC)")
    for column in ("gap from", "gap to", "minutes"):
        table.add_column(column)
    for gap in report.gaps:
        table.add_row(f"{gap.start:%Y-%m-%d %H:%M:%S}", f"{gap.end:%Y-%m-%d %H:%M:%S}", f"{gap.seconds / 60:.1f}")
    console.print(table)
    console.print(f"{report.segments} segments of ~{report.segment_s:g} s on {', '.join(report.volumes) or 'no volume'}"
                  + (f"; not listed: {', '.join(report.errors)}" if report.errors else ""), highlight=False)


def _load_secret(name: str) -> str:
    from prefect.blocks.system import Secret

    return str(Secret.load(name).get())  # type: ignore[union-attr]


@run_app.command("continuity-report")
def run_continuity_report(
    day: str | None = typer.Option(None, "--day", help="UTC day YYYY-MM-DD (default: yesterday)."),
    camera: list[str] = typer.Option([], "--camera", help="Only this camera (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """One continuity-report run now, in this process: a table artifact per camera and a summary."""
    from flows.continuity_report import ContinuityReportParams, continuity_report

    def show(result: dict[str, object]) -> None:
        console.print(f"continuity on {result['day']}: cameras with gaps: "
                      f"{', '.join(result['with_gaps']) or 'none'}", highlight=False)  # type: ignore[arg-type]

    run_flow_now("continuity-report",
                 lambda: ContinuityReportParams.model_validate({"day": day, "cameras": camera or None}),
                 continuity_report, as_json=as_json, show=show)

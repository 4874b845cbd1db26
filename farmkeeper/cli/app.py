"""The typer application and the helpers every command module shares."""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from sqlmodel import Session
from typer.core import TyperGroup
from typer.exceptions import TyperException

from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.errors import FarmkeeperError, SpecError
from farmkeeper.layout import CAMERA_ID_RE

log = logging.getLogger("farmkeeper.cli")


class _Group(TyperGroup):
    """The top command group: an unexpected error is one line on stderr (redacted), exit 1, never a traceback.

    ``--verbose`` logs the traceback too.
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the last resort: say what failed, hide no exit code
            from farmkeeper.notify import redact

            log.debug("unexpected error", exc_info=True)
            err_console.print(f"error: {type(exc).__name__}: {redact(' '.join(str(exc).split()))[:2000]}",
                              highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(1) from None


app = typer.Typer(name="farmkeeper", help="Control plane of a video-surveillance server farm.", cls=_Group,
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
run_app = typer.Typer(help="Run one flow now, in this process, then return.", no_args_is_help=True)
camera_app = typer.Typer(help="Camera commands.", no_args_is_help=True)
hold_app = typer.Typer(help="Evidence holds: footage in a held range is never deleted.", no_args_is_help=True)
app.add_typer(run_app, name="run")
app.add_typer(camera_app, name="camera")
app.add_typer(hold_app, name="hold")

console = Console()
err_console = Console(stderr=True)

P = TypeVar("P")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` (redacted: exception texts may quote a target) and exit with ``code``."""
    from farmkeeper.notify import redact

    err_console.print(f"[red]error:[/red] {escape(redact(message))}", highlight=False, markup=True,
                      soft_wrap=True)
    raise typer.Exit(code)


def usage_error(message: str) -> NoReturn:
    """A bad command-line argument: say which and why, exit 2 (as click does for its own checks)."""
    fail(message, code=2)


SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_camera_ids(ids: list[str] | str, option: str = "CAMERA") -> None:
    for cam in [ids] if isinstance(ids, str) else ids:
        if not CAMERA_ID_RE.match(cam):
            usage_error(f"{option} {cam!r} is not a camera id ([A-Za-z0-9_-], 1 to 64 characters)")


def check_server_names(names: list[str] | str, option: str = "SERVER") -> None:
    for name in [names] if isinstance(names, str) else names:
        if not SERVER_NAME_RE.match(name):
            usage_error(f"{option} {name!r} is not a server name (letters, digits, _ . -, up to 64 characters)")


def parse_when(text: str, option: str) -> datetime:
    """An ISO 8601 moment from the command line, in UTC (no zone: UTC); anything else exits 2."""
    try:
        moment = datetime.fromisoformat(text.strip())
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        usage_error(f"{option} {text!r}: not a date/time (use ISO 8601, e.g. 2026-11-25T14:03:00Z)")


def parse_cli_duration(text: str, option: str, *, low: float = 0, high: float = 86400 * 365) -> float:
    """A duration option (``30s``, ``5m``) inside [low, high] seconds; anything else exits 2."""
    from farmkeeper.specs import format_duration, parse_duration

    try:
        seconds = parse_duration(text)
    except SpecError as exc:
        usage_error(f"{option}: {exc}")
    if not low <= seconds <= high:
        usage_error(f"{option} {text!r} is out of range {format_duration(low)} .. {format_duration(high)}")
    return seconds


def check_number(value: float | None, option: str, *, low: float, high: float) -> None:
    """A numeric option: finite and inside [low, high] (click reads 'nan' and 'inf' as floats); else exit 2."""
    if value is not None and (not math.isfinite(value) or not low <= value <= high):
        usage_error(f"{option} {value} is out of range {low:g} .. {high:g}")


@contextmanager
def db_session() -> Iterator[Session]:
    """A migrated inventory and one transaction; project errors become a clean exit 1."""
    try:
        engine = ensure_schema(get_engine())
        with session_scope(engine) as session:
            yield session
    except FarmkeeperError as exc:
        fail(str(exc))


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except FarmkeeperError as exc:
        fail(str(exc))


def check_copy_options(verify: str, max_mbps: float | None, connections: int | None = None,
                       wait_closed: float | None = None) -> None:
    """The options every copy flow (swap-back, move) shares, checked before Prefect is imported (exit 2)."""
    if verify not in ("size", "hash"):
        usage_error(f"--verify must be size or hash, not {verify!r}")
    if max_mbps is not None and max_mbps <= 0:
        usage_error("--max-mbps must be positive")
    check_number(max_mbps, "--max-mbps", low=0.001, high=1e6)
    check_number(connections, "--connections", low=1, high=64)
    check_number(wait_closed, "--wait-closed", low=0, high=86400)


def run_flow_now(name: str, params: Callable[[], P], flow: Callable[[P], dict[str, Any]], *, as_json: bool,
                 show: Callable[[dict[str, Any]], None]) -> None:
    """Run a flow in this process and print its result (``--json``: as JSON, exit 1 when it ``refused``).

    Invalid parameters, a refusal or a failed run exit 1 saying why.
    """
    from pydantic import ValidationError

    try:
        built = params()
    except ValidationError as exc:
        fail(str(exc))
    try:
        result = flow(built)
    except FarmkeeperError as exc:
        fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - the flow run failed: say why, exit non-zero
        fail(f"{name} failed: {type(exc).__name__}: {exc}")
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        if result.get("refused"):
            raise typer.Exit(1)
        return
    show(result)


def main() -> None:  # pragma: no cover - console script
    sys.exit(app())

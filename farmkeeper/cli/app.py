"""The typer application and the helpers every command module shares."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from sqlmodel import Session

from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.errors import FarmkeeperError

app = typer.Typer(name="farmkeeper", help="Control plane of a video-surveillance server farm.",
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
    err_console.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


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


def check_copy_options(verify: str, max_mbps: float | None) -> None:
    """The options every copy flow (swap-back, move) shares, checked before Prefect is imported."""
    if verify not in ("size", "hash"):
        fail(f"--verify must be size or hash, not {verify!r}")
    if max_mbps is not None and max_mbps <= 0:
        fail("--max-mbps must be positive")


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

"""``farmkeeper serve``: every deployment, embedded (a local Prefect server when PREFECT_API_URL is unset)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import typer

from farmkeeper.cli.app import app, console, fail
from farmkeeper.settings import load_settings


@app.command()
def serve(limit: int = typer.Option(4, "--limit", min=1, help="At most this many flow runs at once."),
          port: int = typer.Option(4200, "--port", help="Port of the local Prefect server (loopback)."),
          health_every: str = typer.Option("1h", "--health-every",
                                           help="Each watching health-check run watches this long; its successor "
                                                "starts before it ends."),
          metrics_port: int | None = typer.Option(None, "--metrics-port", min=1, max=65535,
                                                  help="Serve Prometheus metrics (farmkeeper_*) on this port "
                                                       "at /metrics (off by default)."),
          metrics_host: str = typer.Option("127.0.0.1", "--metrics-host",
                                           help="Address the metrics endpoint listens on (0.0.0.0: every "
                                                "interface, for a Prometheus on another machine).")) -> None:
    """Serve all deployments; starts a local Prefect server (SQLite under FARMKEEPER_HOME) if needed.

    Health checking starts at once: a supervisor keeps one watching health-check process running (replaced
    the moment it ends or dies), probing before the Prefect server is even up.
    """
    from deployments.embedded import local_server, serve_all
    from deployments.supervisor import WatchSupervisor
    from farmkeeper.specs import parse_duration

    if metrics_port is not None:
        start_metrics(metrics_port, metrics_host)

    every = parse_duration(health_every)
    # the supervisor watches; the health-check deployment stays for manual runs (no schedule of its own)
    overrides: dict[str, dict[str, Any]] = {"health-check": {"interval_s": 0}}
    settings = load_settings()
    home = settings.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    external = os.environ.get("PREFECT_API_URL")
    api_url = external or f"http://127.0.0.1:{port}/api"
    def _sigterm(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt   # stop like Ctrl-C: the watcher and the Prefect server stop with serve

    signal.signal(signal.SIGTERM, _sigterm)
    supervisor = WatchSupervisor(env=os.environ | {"PREFECT_API_URL": api_url}, watch_for_s=every,
                                 log_path=home / "watch.log").start()
    console.print(f"health checks: watching now (log: {home / 'watch.log'})")
    try:
        if external:
            console.print(f"serving on the Prefect API at {external}")
            try:
                serve_all(limit=limit, overrides=overrides)
            except KeyboardInterrupt:
                console.print("stopping")
            return
        with local_server(home, port) as api_url:
            os.environ["PREFECT_API_URL"] = api_url
            console.print(f"Prefect server: {api_url.removesuffix('/api')}  (UI; Ctrl-C stops everything)")
            try:
                serve_all(limit=limit, overrides=overrides)
            except KeyboardInterrupt:
                console.print("stopping")
            finally:    # the watchers first, while the server still takes their runs' last states (else each
                supervisor.stop()   # waits on a dead API until its stop timeout: Ctrl-C took up to a minute)
    finally:
        supervisor.stop()


def start_metrics(port: int, host: str) -> None:
    """The Prometheus endpoint, read from the inventory at each scrape (see ``farmkeeper.metrics``)."""
    from farmkeeper.db import ensure_schema, get_engine, session_scope
    from farmkeeper.metrics import start_metrics_server

    def sessions() -> Any:
        return session_scope(ensure_schema(get_engine()))

    try:
        start_metrics_server(port, sessions, addr=host)
    except OSError as exc:
        fail(f"metrics endpoint {host}:{port} not started: {exc}")
    console.print(f"Prometheus metrics: http://{host}:{port}/metrics")


@app.command()
def demo(workdir: Path | None = typer.Option(None, "--workdir", help="Keep the demo's files here (default: temp)."),
         first_host: int = typer.Option(2, "--first-host", min=2, max=250,
                                        help="Servers get 127.0.0.N, N+1, N+2 (loopback)."),
         samba: bool = typer.Option(True, "--samba/--no-samba",
                                    help="Share the volumes with real Samba when it is installed.")) -> None:
    """A simulated 3-server farm, served control plane, narrated failover, swap-back and retention."""
    from deployments.demo import run_demo

    run_demo(workdir, first_host, samba)

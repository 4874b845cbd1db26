"""The embedded control plane: a local ``prefect server start`` (SQLite under FARMKEEPER_HOME) and every
deployment served from this process.

Prefect's ephemeral API never fires schedules, so ``farmkeeper serve`` starts a real server when
``PREFECT_API_URL`` is unset. Its database is kept bounded: flow runs older than the retention period and
events are vacuumed (a farm checked every few seconds would otherwise grow it without bound).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from deployments import DeploymentSpec, available

logger = logging.getLogger(__name__)

# Flow runs and events kept by the embedded server (Prefect's db vacuum service).
RUN_RETENTION = timedelta(days=3)
EVENT_RETENTION = timedelta(days=2)


def server_env(home: Path, port: int, database_url: str | None = None) -> dict[str, str]:
    """Environment of the local Prefect server: state under ``home``, loopback only, bounded database.

    ``database_url`` (``postgresql+asyncpg://...``) puts Prefect's own database on PostgreSQL.
    """
    prefect_home = home / "prefect"
    prefect_home.mkdir(parents=True, exist_ok=True)
    return {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url or f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": str(int(RUN_RETENTION.total_seconds())),
        "PREFECT_SERVER_SERVICES_DB_VACUUM_LOOP_SECONDS": "1800",
        "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": f"PT{int(EVENT_RETENTION.total_seconds())}S",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true",  # a 503 (SQLite busy) says why in the server's log
        "PREFECT_UI_ENABLED": "true",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(api_url: str, timeout_s: float = 120.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {proc.returncode} before it was healthy")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"prefect server at {api_url} not healthy after {timeout_s:.0f} s")


@contextlib.contextmanager
def local_server(home: Path, port: int | None = None, log_path: Path | None = None,
                 database_url: str | None = None) -> Iterator[str]:
    """Start ``prefect server start`` on loopback, yield its API URL, stop it on exit."""
    port = port or free_port()
    env = os.environ | server_env(home, port, database_url)
    env.pop("PREFECT_API_URL", None)
    log_path = log_path or home / "prefect-server.log"
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
         "--analytics-off"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(api_url, proc=proc)
        yield api_url
    finally:
        stop_group(proc)
        log.close()


def stop_group(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session``), SIGKILL it after a timeout."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def runner_deployments(specs: list[DeploymentSpec] | None = None, overrides: dict[str, dict[str, Any]] | None = None,
                       auto_swap_back_after_s: float | None = None) -> list[Any]:
    """RunnerDeployments for ``serve``: schedules, defaults, a concurrency limit that cancels new runs
    (after downtime, missed runs do not pile up behind a running one) and the shipped automations
    (``deployments.automations``; the swap-back one when ``auto_swap_back_after_s`` is set)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    from deployments.automations import triggers

    out = []
    for spec in specs if specs is not None else available():
        extra = (overrides or {}).get(spec.flow_name, {})
        kwargs: dict[str, Any] = {"name": spec.deployment, "description": spec.description,
                                  "parameters": spec.parameters | extra.get("parameters", {}),
                                  "tags": list(spec.tags)}
        interval = extra.get("interval_s", spec.interval_s)
        if interval:
            kwargs["interval"] = timedelta(seconds=interval)
        elif spec.cron:
            kwargs["cron"] = spec.cron
        if spec.concurrency_limit:
            kwargs["concurrency_limit"] = ConcurrencyLimitConfig(
                limit=spec.concurrency_limit, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
        shipped = triggers(spec.flow_name, auto_swap_back_after_s)
        if shipped:
            kwargs["triggers"] = shipped
        out.append(spec.load_flow().to_deployment(**kwargs))
    return out


RUNNER_POLL_S = 2.0


def serve_all(limit: int = 4, overrides: dict[str, dict[str, Any]] | None = None) -> None:
    """Serve every available deployment from this process, at most ``limit`` flow runs at once, with the
    shipped automations (the farm's ``auto_swap_back_after`` read from the inventory now)."""
    from prefect import serve

    from deployments.automations import farm_auto_swap_back_after

    # a run started from the UI, an automation or the CLI starts within ~2 s (Prefect's default poll is 10 s);
    # PREFECT_RUNNER_POLL_FREQUENCY, when set, wins
    poll = None if os.environ.get("PREFECT_RUNNER_POLL_FREQUENCY") else RUNNER_POLL_S
    serve(*runner_deployments(overrides=overrides, auto_swap_back_after_s=farm_auto_swap_back_after()),
          limit=limit, print_starting_message=True, query_seconds=poll)

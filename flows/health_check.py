"""Flow ``health-check``: probe every server, mark down/up, fail over, recover, notify.

One sweep probes all servers concurrently, applies the down/up state machine
(``farmkeeper.health``), runs the ``failover`` flow in process (a subflow, no scheduling delay)
for each newly down server and for down servers whose stranded cameras can move now, handles
recovered servers (camera-less ones become redundant) and sends notifications.

Continuous detection without a flow run per sweep: with ``watch_for > 0`` (seconds) one run keeps
sweeping every ``health_interval`` for that long. The deployment served by
``python -m flows.health_check`` runs every ``--every`` (default 5 min) with
``watch_for = every + overlap``, so consecutive runs overlap a little and probing never stops;
two overlapping sweeps are safe (optimistic versions on server rows: a transition is reported once;
failover is idempotent and locks the server rows).

Needs: ``FARMKEEPER_DATABASE_URL`` (the inventory; default ``sqlite:///farmkeeper.db``), a Prefect
API (``PREFECT_API_URL``, e.g. a ``prefect server start``) to serve, and the environment variables
or Prefect Secret blocks named by ``smb.password_env``/``password_secret`` for ``smb`` probes.

    python -m flows.health_check [--every 5m] [--overlap 30s] [--once]
"""

# No `from __future__ import annotations`: Prefect resolves the parameter model of a flow loaded from its file.
import argparse
import importlib
import inspect
import time
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from farmkeeper.health import Transition
from farmkeeper.specs import parse_duration
from flows.failover import FailoverParams, failover
from flows.retention_sweep import sweep_floors
from flows.watchdog import watchdog_steps
from tasks.common import send_notification
from tasks.health import HealthUpdate, check_servers, mark_swap_back_started


class HealthCheckParams(BaseModel):
    watch_for: float = Field(0, ge=0, le=86400, description=(
        "Keep sweeping every health_interval for this many seconds (0 = one sweep and return)"))
    max_sweeps: int | None = Field(None, ge=1, description="Stop after this many sweeps (tests, benchmarks)")


def _notify_update(update: HealthUpdate) -> None:
    for server, cams in update.offline.items():
        send_notification(f"{server} is down (maintenance): no failover",
                          f"{server} stopped answering while in maintenance mode; its cameras were not moved "
                          f"and are offline: {', '.join(cams) or 'none'}", "warning")
    for rec in update.recoveries:
        extra = " and is now a redundant server (its cameras were failed over)" if rec.became_redundant else ""
        back = f"; recording again: {', '.join(rec.cameras_back)}" if rec.cameras_back else ""
        send_notification(f"{rec.server} recovered", f"{rec.server} answers its health probe again{extra}{back}",
                          "success")
    if update.new_master:
        send_notification(f"{update.new_master} is now the master",
                          f"the master server was down; {update.new_master} took over as master", "info")


def start_swap_back(server: str) -> tuple[bool, str]:
    """Hook for ``auto_swap_back_after``: run ``flows.swap_back.swap_back`` for ``server`` if it exists.

    The swap-back flow's first parameter is built from ``{"server": server}`` (a pydantic model or
    a plain value). Returns (started, detail); never raises.
    """
    try:
        module = importlib.import_module("flows.swap_back")
        swap_back = module.swap_back
    except (ImportError, AttributeError) as exc:
        return False, f"swap-back flow not available ({exc})"
    fn = getattr(swap_back, "fn", swap_back)
    params = list(inspect.signature(fn).parameters.values())
    try:
        if params and isinstance(params[0].annotation, type) and issubclass(params[0].annotation, BaseModel):
            swap_back(params[0].annotation.model_validate({"server": server}))
        elif params and params[0].name == "params":
            model = getattr(module, "SwapBackParams", None)
            swap_back(model.model_validate({"server": server}) if model else {"server": server})
        else:
            swap_back(server)
    except Exception as exc:  # noqa: BLE001 - an automatic swap-back never breaks health checks
        return False, f"swap-back of {server} failed: {type(exc).__name__}: {exc}"
    return True, "started"


def sweep() -> dict[str, Any]:
    """One probe sweep and everything it triggers; returns a summary."""
    logger = get_run_logger()
    update = check_servers()
    failovers: list[dict[str, Any]] = []
    for server in update.of(Transition.down):
        failovers.append(failover(FailoverParams(server=server), newly_down=True))
    for server in update.pending_failovers:
        failovers.append(failover(FailoverParams(server=server, reason="stranded, retried")))
    _notify_update(update)
    watchdog = watchdog_steps()
    floors = sweep_floors(update)
    for server in update.swap_backs_due:
        started, detail = start_swap_back(server)
        (logger.info if started else logger.warning)("auto swap-back of %s: %s", server, detail)
        mark_swap_back_started(server, started, detail)
    return {
        "interval_s": update.health_interval_s,
        "down": [r.server for r in update.results if not r.ok],
        "transitions": [(t.server, t.transition.value) for t in update.transitions],
        "failovers": failovers,
        "watchdog": watchdog,
        "floors": floors,
    }


@flow(name="health-check", log_prints=False)
def health_check(params: HealthCheckParams | None = None) -> dict[str, Any]:
    """Probe all servers (one sweep, or sweeps every health_interval for watch_for seconds)."""
    params = params or HealthCheckParams()
    logger = get_run_logger()
    started = time.monotonic()
    sweeps = 0
    last: dict[str, Any] = {}
    transitions: list[Any] = []
    while True:
        sweep_started = time.monotonic()
        last = sweep()
        sweeps += 1
        transitions += last["transitions"]
        if params.max_sweeps is not None and sweeps >= params.max_sweeps:
            break
        next_at = sweep_started + float(last["interval_s"])
        if next_at - started >= params.watch_for:
            break
        time.sleep(max(0.0, next_at - time.monotonic()))
    logger.info("%d sweep%s in %.0f s; transitions: %s", sweeps, "s" if sweeps != 1 else "",
                time.monotonic() - started, transitions or "none")
    return {"sweeps": sweeps, "transitions": transitions, "last": last}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.health_check", description=__doc__.split("\n")[0])
    parser.add_argument("--every", default="5m", help="deployment interval (default 5m)")
    parser.add_argument("--overlap", default="30s", help="each run watches this much longer than --every")
    parser.add_argument("--once", action="store_true", help="one sweep in process, no deployment")
    parser.add_argument("--name", default="health-check", help="deployment name")
    args = parser.parse_args(argv)
    if args.once:
        health_check(HealthCheckParams())
        return
    every = parse_duration(args.every)
    watch = every + parse_duration(args.overlap)
    health_check.serve(name=args.name, interval=every,
                       parameters={"params": HealthCheckParams(watch_for=watch).model_dump()},
                       description="Continuous health checks: each run sweeps every health_interval.")


if __name__ == "__main__":
    main()

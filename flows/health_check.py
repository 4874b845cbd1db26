"""Flow ``health-check``: probe every server, mark down/up, fail over, recover, notify.

One sweep probes all servers concurrently and applies the down/up state machine
(``farmkeeper.health``, recovered servers handled there), then runs ``SWEEP_STEPS`` in order: the
``failover`` flow in process (a subflow, no scheduling delay) for each newly down server and for down
servers whose stranded cameras can move now, notifications, due automatic swap-backs, and whatever
other per-sweep checks are registered there. Each step is isolated: an exception is logged and counted,
never ends the sweep or the watch.

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
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from farmkeeper.health import Transition
from farmkeeper.models import utcnow
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


DEFAULT_INTERVAL_S = 10.0   # until the inventory has told the farm's health_interval


def _logger() -> Any:
    """The run logger inside a flow/task run, this module's logger outside one (never raises)."""
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - MissingContextError outside a run
        return logging.getLogger(__name__)


@dataclass
class SweepContext:
    """What one sweep's steps see: the recorded update, the summary so far, the watch's memory."""

    update: HealthUpdate
    summary: dict[str, Any]
    watch: "WatchState"
    logger: Any = None


@dataclass(frozen=True)
class SweepStep:
    """One thing every sweep does after probing: ``run(ctx)``'s result goes to ``summary[name]``.

    Steps are isolated: an exception in one is logged and counted (``WatchState.step_errors``) and the
    next step, the next sweep and the watch go on.
    """

    name: str
    run: Callable[[SweepContext], Any]


@dataclass
class WatchState:
    """The memory of one watching run across its sweeps."""

    sweeps: int = 0
    step_errors: Counter[str] = field(default_factory=Counter)
    failing: dict[str, str] = field(default_factory=dict)   # step → last error, while it keeps failing

    def step_failed(self, name: str, exc: BaseException, logger: Any) -> str:
        text = f"{type(exc).__name__}: {exc}"[:500]
        self.step_errors[name] += 1
        if name not in self.failing or self.step_errors[name] % 30 == 0:
            logger.warning("sweep step %s failed (%d time(s) in this watch): %s", name, self.step_errors[name], text)
        self.failing[name] = text
        return text

    def step_ok(self, name: str, logger: Any) -> None:
        if self.failing.pop(name, None) is not None:
            logger.info("sweep step %s works again", name)


def run_failovers(ctx: SweepContext) -> list[dict[str, Any]]:
    """Fail over each newly down server, and down servers whose stranded cameras can move now."""
    done: list[dict[str, Any]] = []
    for server in ctx.update.of(Transition.down):
        done.append(failover(FailoverParams(server=server), newly_down=True))
    for server in ctx.update.pending_failovers:
        done.append(failover(FailoverParams(server=server, reason="stranded, retried")))
    return done


def notify_update(ctx: SweepContext) -> None:
    """Notifications of this sweep's transitions: down in maintenance, recovered, new master."""
    update = ctx.update
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


def start_due_swap_backs(ctx: SweepContext) -> list[str]:
    """``auto_swap_back_after``: start swap-back of servers healthy that long (once per recovery)."""
    started_for = []
    for server in ctx.update.swap_backs_due:
        started, detail = start_swap_back(server)
        (ctx.logger.info if started else ctx.logger.warning)("auto swap-back of %s: %s", server, detail)
        mark_swap_back_started(server, started, detail)
        if started:
            started_for.append(server)
    return started_for


# Every sweep runs these after probing and recording, in order, each isolated (see ``SweepStep``).
# To add a step: write ``def my_step(ctx: SweepContext) -> Any`` in its own module and add one line here.
SWEEP_STEPS: list[SweepStep] = [
    SweepStep("failovers", run_failovers),
    SweepStep("notifications", notify_update),
    SweepStep("watchdog", lambda ctx: watchdog_steps()),      # stalled cameras, failed volumes (flows/watchdog.py)
    SweepStep("floors", sweep_floors),                        # volumes below a free-space floor (retention_sweep)
    SweepStep("swap_backs", start_due_swap_backs),
]


def sweep(watch: WatchState | None = None) -> dict[str, Any]:
    """One probe sweep and every step it triggers; returns a summary. Never raises (errors are in the summary)."""
    watch = watch if watch is not None else WatchState()
    logger = _logger()
    summary: dict[str, Any] = {"interval_s": None, "down": [], "transitions": [], "failovers": [], "errors": {}}
    try:
        update = check_servers()
    except Exception as exc:  # noqa: BLE001 - a failed sweep is logged and counted; the watch goes on
        summary["errors"]["check_servers"] = watch.step_failed("check_servers", exc, logger)
        update = HealthUpdate()
    else:
        watch.step_ok("check_servers", logger)
        summary.update(interval_s=update.health_interval_s, down=[r.server for r in update.results if not r.ok],
                       transitions=[(t.server, t.transition.value) for t in update.transitions],
                       next_deadline=update.next_deadline)
    ctx = SweepContext(update, summary, watch, logger)
    for step in SWEEP_STEPS:
        try:
            result = step.run(ctx)
        except Exception as exc:  # noqa: BLE001 - one step never stops the others or the watch
            summary["errors"][step.name] = watch.step_failed(step.name, exc, logger)
            continue
        watch.step_ok(step.name, logger)
        if result is not None:
            summary[step.name] = result
    watch.sweeps += 1
    return summary


@flow(name="health-check", log_prints=False)
def health_check(params: HealthCheckParams | None = None) -> dict[str, Any]:
    """Probe all servers (one sweep, or sweeps every health_interval for watch_for seconds).

    A watching run survives its own errors: a sweep that fails is logged, counted and tried again one
    interval later; only ``watch_for``, ``max_sweeps`` or cancellation end it.
    """
    params = params or HealthCheckParams()
    logger = _logger()
    started = time.monotonic()
    watch = WatchState()
    last: dict[str, Any] = {}
    transitions: list[Any] = []
    interval = DEFAULT_INTERVAL_S
    while True:
        sweep_started = time.monotonic()
        last = sweep(watch)
        transitions += last["transitions"]
        interval = float(last["interval_s"] or interval)
        if params.max_sweeps is not None and watch.sweeps >= params.max_sweeps:
            break
        next_at = sweep_started + interval
        if next_at - started >= params.watch_for:
            break
        deadline = last.get("next_deadline")
        if isinstance(deadline, datetime):   # sweep when a failing server's down_after is up, not later
            next_at = min(next_at, time.monotonic() + max(0.0, (deadline - utcnow()).total_seconds()) + 0.01)
        time.sleep(max(0.0, next_at - time.monotonic()))
    logger.info("%d sweep%s in %.0f s; transitions: %s; failed steps: %s", watch.sweeps,
                "s" if watch.sweeps != 1 else "", time.monotonic() - started, transitions or "none",
                dict(watch.step_errors) or "none")
    return {"sweeps": watch.sweeps, "transitions": transitions, "last": last,
            "step_errors": dict(watch.step_errors)}


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

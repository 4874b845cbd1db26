"""Flow ``health-check``: probe every server, mark down/up, fail over, recover, notify.

One sweep probes all servers concurrently and applies the down/up state machine
(``farmkeeper.health``, recovered servers handled there), then runs ``SWEEP_STEPS`` in order: the
``failover`` flow in process (a subflow, no scheduling delay) for each newly down server and for down
servers whose stranded cameras can move now, notifications, Prefect events, the farm-status artifact and
whatever other per-sweep checks are registered there (automatic swap-backs are a Prefect automation).
Each step is isolated: an exception is logged and counted, never ends the sweep or the watch.

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
import contextlib
import gc
import importlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy.exc as sa_exc
from prefect import flow, get_run_logger
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from farmkeeper.db import ensure_schema, make_engine, session_scope
from farmkeeper.health import Transition
from farmkeeper.models import utcnow
from farmkeeper.settings import load_settings
from farmkeeper.specs import parse_duration
from farmkeeper.watch import FarmView, HeldResults, acquire_lease, lease_ttl, release_lease
from farmkeeper.watchdog import WatchMemory
from flows.failover import FailoverParams, failover
from flows.retention_sweep import sweep_floors
from flows.watchdog import check_volumes_step, save_recordings, watch_recordings_step
from tasks.common import PLAIN, QUIET, call, plain_calls, send_notification
from tasks.events import down_context, health_events
from tasks.farm_status import after_sweep
from tasks.health import HealthUpdate, load_view, probe, record_health
from tasks.watchdog import FarmAccesses


class HealthCheckParams(BaseModel):
    watch_for: float = Field(0, ge=0, le=86400, description=(
        "Keep sweeping every health_interval for this many seconds (0 = one sweep and return)"))
    max_sweeps: int | None = Field(None, ge=1, description="Stop after this many sweeps (tests, benchmarks)")
    lease: bool = Field(True, description=(
        "Watching runs sweep only while they hold the watch lease (one sweeper; another takes over "
        "when it dies); off: sweep regardless"))


DEFAULT_INTERVAL_S = 10.0   # until the inventory has told the farm's health_interval
STOP = threading.Event()     # SIGTERM: the watch ends after its current sweep (and releases its lease)
WATCH_BUSY_TIMEOUT_MS = 500   # SQLite: a watch waits this long for a lock, then holds its results and goes on
WATCH_PROCESS_BUSY_TIMEOUT_MS = 2000   # a watching process's other inventory work (steps) waits at most this long


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
    started: float = 0.0        # time.monotonic() when the sweep began (its duration, for the metrics)
    down_context: Any = None    # what the down events say, read before the failovers move the cameras
    spaces: dict[str, tuple[int, int]] | None = None   # free space the volume probes read ("SERVER:DRIVE")


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
    """The memory of one watching run across its sweeps (one sweep: a fresh one)."""

    sweeps: int = 0
    step_errors: Counter[str] = field(default_factory=Counter)
    failing: dict[str, str] = field(default_factory=dict)   # step → last error, while it keeps failing
    view: FarmView | None = None                             # what to probe, kept through inventory outages
    held: HeldResults = field(default_factory=HeldResults)   # results the inventory has not taken yet
    engine: Engine | None = None                             # short waits: an outage never holds probing long
    swept_at: datetime | None = None                         # last sweep that probed
    inventory_down: bool = False                             # the last attempt to reach the inventory failed
    long_lived: bool = False                                 # a watching run: settle_memory after sweeps 1, 5
    recordings: WatchMemory | None = None                    # a watching run's cameras (farmkeeper.watchdog)
    accesses: FarmAccesses | None = None                     # a watching run's volume accesses (tasks.watchdog)

    @classmethod
    def watching(cls) -> "WatchState":
        """The memory of a watching run (``watch_for > 0``): long-lived, keeping its cameras between sweeps."""
        return cls(long_lived=True, recordings=WatchMemory(), accesses=FarmAccesses())

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
        done.append(call(failover, FailoverParams(server=server), newly_down=True))
    for server in ctx.update.pending_failovers:
        done.append(call(failover, FailoverParams(server=server, reason="stranded, retried")))
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


def _read_down_context(ctx: SweepContext) -> int:
    ctx.down_context = down_context(ctx.update)
    return len(ctx.down_context.on)


# Every sweep runs these after probing and recording, in order, each isolated (see ``SweepStep``).
# To add a step: write ``def my_step(ctx: SweepContext) -> Any`` in its own module and add one line here.
SWEEP_STEPS: list[SweepStep] = [
    SweepStep("down-context", _read_down_context),            # an inventory read: no Prefect call before failover
    SweepStep("failovers", run_failovers),                    # cameras recording again is what counts first
    SweepStep("events", lambda ctx: health_events(ctx.update, ctx.down_context)),  # Prefect events (tasks/events)
    SweepStep("notifications", notify_update),
    SweepStep("volumes", check_volumes_step),                 # failed volumes fail their cameras over (watchdog)
    SweepStep("recordings", watch_recordings_step),           # stalled cameras (flows/watchdog.py)
    SweepStep("floors", sweep_floors),                        # volumes below a free-space floor (retention_sweep)
    # auto_swap_back_after: the "recovered and healthy -> swap-back" automation (deployments/automations.py)
    SweepStep("report", lambda ctx: after_sweep(time.monotonic() - ctx.started)),  # histogram, farm-status
]


def _inventory_down(exc: BaseException) -> bool:
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError | OSError) \
        or (isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated)


def _watch_engine() -> Engine:
    """The inventory engine of a watch: on SQLite it waits at most ``WATCH_BUSY_TIMEOUT_MS`` for a lock."""
    return ensure_schema(make_engine(load_settings().database_url, busy_timeout_ms=WATCH_BUSY_TIMEOUT_MS))


def probe_and_record(watch: WatchState) -> HealthUpdate:
    """Probe (with the inventory's view, or the last one it gave) and record everything held; never waits long.

    When the inventory does not answer, the results are held (``watch.held``) and the update says
    ``recorded=False``; the next sweep that reaches it writes them all, oldest first.
    """
    logger = _logger()
    if watch.view is None or not watch.inventory_down:   # while it is down, one attempt per sweep: the record
        try:
            if watch.engine is None:
                watch.engine = _watch_engine()
            watch.view = load_view(watch.engine, watch.view)
        except Exception as exc:
            if watch.view is None or not _inventory_down(exc):
                raise
            watch.inventory_down = True
            watch.step_failed("inventory", exc, logger)
    view = watch.view
    results = probe(view)
    watch.swept_at = utcnow()
    watch.held.add(results)
    batch, sweeps = watch.held.take(), watch.held.sweeps_held
    try:
        update: HealthUpdate = call(record_health, batch, view.down_after_s, view.health_interval_s, watch.engine)
    except Exception as exc:
        if not _inventory_down(exc):
            watch.held.put_back(batch, sweeps)
            raise
        watch.held.put_back(batch, sweeps)
        watch.inventory_down = True
        watch.step_failed("inventory", exc, logger)
        return HealthUpdate(results=results, health_interval_s=view.health_interval_s, recorded=False)
    watch.inventory_down = False
    watch.step_ok("inventory", logger)
    if sweeps > 1:
        logger.warning("inventory answers again: recorded the results of %d sweeps held meanwhile", sweeps)
    update.results = results
    return update


def sweep(watch: WatchState | None = None) -> dict[str, Any]:
    """One probe sweep and every step it triggers; returns a summary. Never raises (errors are in the summary).

    Steps run only when the inventory took this sweep's results (they read and write it).
    """
    watch = watch if watch is not None else WatchState()
    logger = _logger()
    started = time.monotonic()
    summary: dict[str, Any] = {"interval_s": None, "down": [], "transitions": [], "failovers": [], "errors": {},
                               "recorded": False}
    try:
        update = probe_and_record(watch)
    except Exception as exc:  # noqa: BLE001 - a failed sweep is logged and counted; the watch goes on
        summary["errors"]["probe"] = watch.step_failed("probe", exc, logger)
        watch.sweeps += 1
        return summary
    watch.step_ok("probe", logger)
    summary.update(interval_s=update.health_interval_s, down=[r.server for r in update.results if not r.ok],
                   transitions=[(t.server, t.transition.value) for t in update.transitions],
                   next_deadline=update.next_deadline, recorded=update.recorded, held=len(watch.held))
    if update.recorded:
        ctx = SweepContext(update, summary, watch, logger, started)
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
    if watch.long_lived and watch.sweeps in SETTLE_AFTER_SWEEPS:
        settle_memory()
    return summary


SETTLE_AFTER_SWEEPS = (1, 5)     # after the first sweep, and once the background warm-up's imports are in


def settle_memory() -> None:
    """Keep what a watching process holds for good out of the garbage collector's full passes (``gc.freeze``).

    A watcher holds ~370,000 objects (Prefect, SQLAlchemy, pydantic, the farm view), and CPython's full
    collection walks all of them: at 10,000 cameras each sweep allocates enough to trigger one to three,
    300-470 ms each, half of the sweep's time (measured: ``python -m bench failover``). Frozen objects are
    still freed when nothing refers to them; the collector only stops walking them. Garbage is collected
    first, so nothing unreachable is frozen.
    """
    gc.collect()
    gc.freeze()


class Lease:
    """This run's side of the watch lease (``farmkeeper.watch``): exactly one watching run sweeps."""

    def __init__(self, watch: WatchState, flow_run_id: str | None) -> None:
        self.watch = watch
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.flow_run_id = flow_run_id
        self.held = False
        self.renewed = 0.0          # monotonic time of the last renewal that the inventory confirmed
        self.ttl = lease_ttl(watch.view.down_after_s if watch.view else 30.0)

    def renew(self) -> bool:
        """Take or renew the lease; True if this run sweeps. While the inventory is down the holder keeps it."""
        logger = _logger()
        if self.held and self.watch.inventory_down:
            return True      # the inventory is away: the holder goes on probing; the sweep's record retries it
        try:
            if self.watch.engine is None:
                self.watch.engine = _watch_engine()
            if self.watch.view is not None:
                self.ttl = lease_ttl(self.watch.view.down_after_s)
            with session_scope(self.watch.engine) as session:
                grant = acquire_lease(session, self.holder, self.ttl, flow_run_id=self.flow_run_id)
        except Exception as exc:  # noqa: BLE001 - an unreachable inventory: the holder goes on probing
            if not _inventory_down(exc):
                logger.warning("watch lease: %s: %s", type(exc).__name__, exc)
            return self.held
        if grant.held and not self.held:
            logger.info("watch lease taken (%s)%s", self.holder,
                        f"; previous holder {grant.taken_from.holder} stopped renewing" if grant.taken_from else "")
            if grant.taken_from is not None and grant.taken_from.flow_run_id:
                if running_here(grant.taken_from.holder):   # slow (a loaded machine), not dead: it stands by
                    logger.info("previous holder %s is still running: not marked crashed", grant.taken_from.holder)
                else:
                    mark_crashed(grant.taken_from.flow_run_id, "its watch lease expired: the process died")
        elif self.held and not grant.held:
            logger.warning("watch lease lost to %s; standing by", grant.holder)
        self.held = grant.held
        if grant.held:
            self.renewed = time.monotonic()
        return self.held

    def release(self) -> None:
        if not self.held or self.watch.engine is None:
            return
        try:
            with session_scope(self.watch.engine) as session:
                release_lease(session, self.holder)
        except Exception as exc:  # noqa: BLE001 - it expires on its own
            _logger().info("watch lease not released (%s): it expires in %.0f s", type(exc).__name__, self.ttl)
        self.held = False


def running_here(holder: str) -> bool:
    """Whether a lease holder (``host:pid:token``) is a process still running on this machine.

    A holder that stopped renewing only because its machine was busy is alive: it sees the lease lost and
    stands by, so its flow run must not be marked crashed. A holder on another machine cannot be checked:
    its lease expiring is taken as its death (the only way its deployment slot is freed).
    """
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a killed child its parent has not reaped yet is a zombie: dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def mark_crashed(flow_run_id: str, why: str) -> bool:
    """Mark a zombie flow run Crashed (frees its deployment concurrency slot); logged, never raised."""
    if PLAIN.get():
        return False
    try:
        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(uuid.UUID(flow_run_id))
            if run.state is not None and run.state.is_final():
                return False
            client.set_flow_run_state(run.id, Crashed(message=why), force=True)
        _logger().warning("flow run %s marked crashed: %s", flow_run_id, why)
        return True
    except Exception as exc:  # noqa: BLE001 - the Prefect API is down: logged, not raised into the sweep
        _logger().info("flow run %s not marked crashed (%s: %s)", flow_run_id, type(exc).__name__, exc)
        return False


def _flow_run_id() -> str | None:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None and not PLAIN.get() else None


def _warm_up() -> None:
    """Import now what the first notification or failover would otherwise import inside a sweep (seconds)."""
    from farmkeeper.notify import warm_up

    with contextlib.suppress(Exception):
        warm_up()


def watch_loop(params: HealthCheckParams) -> dict[str, Any]:
    """Sweep every health_interval until ``watch_for``/``max_sweeps`` (a watching run: with the lease)."""
    logger = _logger()
    started = time.monotonic()
    watch = WatchState.watching() if params.watch_for > 0 else WatchState()
    run_id = _flow_run_id()
    if run_id and os.environ.get("FARMKEEPER_WATCH_RUN_FILE"):   # for the supervisor: which run to mark crashed
        with contextlib.suppress(OSError):
            Path(os.environ["FARMKEEPER_WATCH_RUN_FILE"]).write_text(run_id)
    lease = Lease(watch, run_id) if params.watch_for > 0 and params.lease else None
    if params.watch_for > 0:   # in the background: the first sweep probes meanwhile
        threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()
        plain_calls()
    quiet = QUIET.set(params.watch_for > 0)   # a watch's sweeps are not task runs (tasks.common.QUIET)
    last: dict[str, Any] = {}
    transitions: list[Any] = []
    interval = DEFAULT_INTERVAL_S
    standby_logged = False
    try:
        parent = int(os.environ.get("FARMKEEPER_WATCH_PARENT") or 0)
        while True:
            now = time.monotonic()
            if now - started >= params.watch_for and watch.sweeps or STOP.is_set():
                break
            if parent and os.getppid() != parent:
                logger.warning("the supervisor (pid %d) is gone: this watch ends", parent)
                break
            if lease is not None and not lease.renew():
                if watch.recordings is not None and watch.recordings.cameras:
                    watch.recordings = WatchMemory()    # the holder's sweeps change what it knew
                if not standby_logged:
                    logger.info("another run holds the watch lease; standing by")
                    standby_logged = True
                if now - started >= params.watch_for:
                    break
                STOP.wait(min(lease.ttl / 4, max(0.0, params.watch_for - (now - started))))
                continue
            standby_logged = False
            sweep_started = time.monotonic()
            last = sweep(watch)
            transitions += last["transitions"]
            interval = float(last["interval_s"] or (watch.view.health_interval_s if watch.view else interval))
            if params.max_sweeps is not None and watch.sweeps >= params.max_sweeps:
                break
            next_at = sweep_started + interval
            if next_at - started >= params.watch_for:
                break
            deadline = last.get("next_deadline")
            if isinstance(deadline, datetime):   # sweep when a failing server's down_after is up, not later
                next_at = min(next_at, time.monotonic() + max(0.0, (deadline - utcnow()).total_seconds()) + 0.01)
            while (left := next_at - time.monotonic()) > 0:   # renew the lease while waiting
                if STOP.wait(min(left, lease.ttl / 3 if lease else left)):
                    break
                if lease is not None and time.monotonic() < next_at and not lease.renew():
                    break
    finally:
        QUIET.reset(quiet)
        if watch.recordings is not None and (lease is None or lease.held):
            save_recordings(watch.recordings, logger)
        if lease is not None:
            lease.release()
        if watch.engine is not None:
            watch.engine.dispose()
    logger.info("%d sweep%s in %.0f s; transitions: %s; failed steps: %s", watch.sweeps,
                "s" if watch.sweeps != 1 else "", time.monotonic() - started, transitions or "none",
                dict(watch.step_errors) or "none")
    return {"sweeps": watch.sweeps, "transitions": transitions, "last": last,
            "step_errors": dict(watch.step_errors)}


@flow(name="health-check", log_prints=False)
def health_check(params: HealthCheckParams | None = None) -> dict[str, Any]:
    """Probe all servers (one sweep, or sweeps every health_interval for watch_for seconds).

    A watching run survives its own errors: a sweep that fails is logged, counted and tried again one
    interval later; only ``watch_for``, ``max_sweeps`` or cancellation end it. Of several watching runs
    only the holder of the watch lease sweeps; the others stand by and take over when it stops renewing.
    """
    return watch_loop(params or HealthCheckParams())


def run_watch(params: HealthCheckParams) -> dict[str, Any]:
    """Run ``health_check`` as a flow run when the Prefect API answers, else in plain mode (no API needed).

    SIGTERM ends the watch cleanly (its lease is released, so a successor sweeps at once).
    """
    from farmkeeper.apicheck import api_healthy

    def _terminate(signum: int, _frame: Any) -> None:
        STOP.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    if api_healthy(os.environ.get("PREFECT_API_URL"), 2.0):
        return health_check(params)
    if os.environ.get("PREFECT_API_URL"):
        logging.getLogger(__name__).warning("Prefect API at %s not answering: watching without a flow run",
                                            os.environ["PREFECT_API_URL"])
    from prefect.settings import PREFECT_SERVER_ALLOW_EPHEMERAL_MODE, temporary_settings

    plain_calls()
    token = PLAIN.set(True)
    try:   # a stray Prefect client call fails at once instead of starting an ephemeral server
        with temporary_settings({PREFECT_SERVER_ALLOW_EPHEMERAL_MODE: False}):
            return health_check.fn(params)
    finally:
        PLAIN.reset(token)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.health_check", description=__doc__.split("\n")[0])
    parser.add_argument("--every", default="5m", help="deployment interval (default 5m)")
    parser.add_argument("--overlap", default="30s", help="each run watches this much longer than --every")
    parser.add_argument("--once", action="store_true", help="one sweep in process, no deployment")
    parser.add_argument("--watch", default=None, help="watch in this process for this long (the supervisor's child)")
    parser.add_argument("--name", default="health-check", help="deployment name")
    args = parser.parse_args(argv)
    if args.once:
        run_watch(HealthCheckParams())
        return
    if args.watch is not None:
        os.environ.setdefault("FARMKEEPER_SQLITE_BUSY_TIMEOUT_MS", str(WATCH_PROCESS_BUSY_TIMEOUT_MS))
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        for name in ("__main__", "flows", "tasks", "farmkeeper", "deployments"):   # the watch log says what it does
            logging.getLogger(name).setLevel(logging.INFO)
        run_watch(HealthCheckParams(watch_for=parse_duration(args.watch)))
        from farmkeeper.notify import outbox

        outbox().flush(10.0)
        logging.shutdown()
        os._exit(0)   # done: no waiting for Prefect's exit handlers (an event queue to an API that may be gone)
    every = parse_duration(args.every)
    watch = every + parse_duration(args.overlap)
    # the flow as ``flows.health_check`` (not ``__main__``): its runs start in subprocesses, which must import
    # it by name (a flow of ``__main__`` would be pickled by value, with module state that cannot be pickled)
    served = importlib.import_module("flows.health_check").health_check
    served.serve(name=args.name, interval=every,
                 parameters={"params": HealthCheckParams(watch_for=watch).model_dump()},
                 description="Continuous health checks: each run sweeps every health_interval.")


if __name__ == "__main__":
    main()

"""What every task shares: tags that carry concurrency limits, the inventory session, notifications."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from enum import StrEnum
from typing import Any

from prefect import get_run_logger
from sqlmodel import Session

from farmkeeper import inventory
from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.errors import is_transient
from farmkeeper.models import Server
from farmkeeper.notify import outbox, resolve_targets
from farmkeeper.settings import load_settings
from farmkeeper.volumes import ServerVolume, server_volumes


class Tag(StrEnum):
    """Task tags; tag concurrency limits keep file servers and the database from being flooded."""

    uses_smb = "uses-smb"
    uses_db = "uses-db"
    copies = "copies-footage"
    deletes = "deletes-footage"


@contextmanager
def inventory_session() -> Iterator[Session]:
    """One inventory transaction on the configured (and migrated) database."""
    with session_scope(ensure_schema(get_engine())) as session:
        yield session


def load_secret(name: str) -> str:
    """Read a Prefect Secret block (credential references with ``password_secret``)."""
    from prefect.blocks.system import Secret

    return str(Secret.load(name).get())


def server_password(server: Server) -> str:
    return inventory.resolve_password(server, secret_loader=load_secret)


_last_urls: list[str] = []


def send_notification(title: str, body: str, kind: str = "info", urls: list[str] | None = None) -> list[str]:
    """Queue a notification to the farm's notify targets (or ``urls``) and return at once.

    ``{env: NAME}`` and ``{secret: BLOCK}`` entries are resolved here, at run time; only the privacy form of a
    URL is ever logged (``notify.redact_target``). Delivery happens on worker threads
    (``farmkeeper.notify.outbox``: a bounded queue per target, a timeout per attempt, retries, one log line
    when a message is given up), so a dead or hung target never holds a sweep or a flow. When the inventory
    does not answer, the targets it last gave are used. Returns the URLs it was queued for.
    """
    global _last_urls
    logger = _logger()
    if urls is None:
        try:
            with inventory_session() as session:
                entries = list(inventory.farm_settings(session).notify)
        except Exception as exc:  # noqa: BLE001 - the inventory is unavailable: the targets it last gave
            logger.warning("notify targets not readable (%s); using the last known ones", type(exc).__name__)
            urls = list(_last_urls)
        else:
            resolved = resolve_targets(entries, secret_loader=load_secret)
            for problem in resolved.problems:
                logger.warning("%s", problem)
            urls = _last_urls = resolved.urls
    if urls:
        outbox().send(urls, title, body, kind=kind)
    return urls


def _logger() -> Any:
    return run_logger(__name__)


def run_logger(name: str = __name__) -> Any:
    """The Prefect run logger inside a run, the module's ``logging`` logger outside one (never raises)."""
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - MissingContextError outside a run
        return logging.getLogger(name)


# Plain mode: flows and tasks called as plain functions (no Prefect run, no API, no ephemeral server).
# The one-sweep CLI uses it when no Prefect API is up; a watching run falls back to it per call when
# the Prefect API stops answering.
PLAIN: ContextVar[bool] = ContextVar("farmkeeper_plain", default=False)
# Set by a watching health-check run around its sweeps: a task called then runs as its plain function (no task
# run: a sweep every few seconds would add thousands of task runs a day to Prefect's database and load its
# API), while a flow called then (a failover) is a real subflow run whose own tasks are task runs again.
QUIET: ContextVar[bool] = ContextVar("farmkeeper_quiet_tasks", default=False)


def prefect_unreachable(exc: BaseException) -> bool:
    """Did a Prefect client call fail because the API is down or overloaded (not because of our code)?"""
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, PrefectHTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    return isinstance(exc, RuntimeError) and "Failed to reach API" in str(exc)


def plain_calls() -> None:
    """From now on, a Prefect flow or task called while ``PLAIN`` is set runs as its plain function.

    So every step of a sweep (its own tasks included) runs without a Prefect API: nothing tries to reach
    one or to start Prefect's ephemeral server. Outside plain mode calls are Prefect's, unchanged.
    """
    from prefect import Flow, Task

    for cls in (Task, Flow):
        if getattr(cls, "_farmkeeper_plain_calls", False):
            continue
        original = cls.__call__
        is_task = cls is Task

        def __call__(self: Any, *args: Any, _original: Any = original, _task: bool = is_task,  # noqa: N807
                     **kwargs: Any) -> Any:
            if PLAIN.get() or (_task and QUIET.get()):
                kwargs.pop("return_state", None)
                kwargs.pop("wait_for", None)
                return self.fn(*args, **kwargs)
            if not _task and QUIET.get():      # a subflow of a quiet sweep records its tasks again
                token = QUIET.set(False)
                try:
                    return _original(self, *args, **kwargs)
                finally:
                    QUIET.reset(token)
            return _original(self, *args, **kwargs)

        cls.__call__ = __call__  # type: ignore[method-assign]
        cls._farmkeeper_plain_calls = True  # type: ignore[attr-defined]


def call(runnable: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a Prefect flow or task; as a plain function in plain mode, or when the Prefect API is unreachable.

    Re-running after an API failure is safe for what the sweep calls: failover, recording and swap-back
    marking are idempotent.
    """
    fn = getattr(runnable, "fn", runnable)
    if PLAIN.get():
        return fn(*args, **kwargs)
    try:
        return runnable(*args, **kwargs)
    except Exception as exc:
        if not prefect_unreachable(exc):
            raise
        run_logger(__name__).warning("Prefect API unreachable (%s): %s runs in process without a run record",
                                     type(exc).__name__, getattr(runnable, "name", fn.__name__))
    plain_calls()
    token = PLAIN.set(True)
    try:
        return fn(*args, **kwargs)
    finally:
        PLAIN.reset(token)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Every task's ``retry_condition_fn``: retry exactly what ``errors.is_transient`` calls transient."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as err:  # noqa: BLE001 - the result itself could not be read: judge that error
        exc = err
    return isinstance(exc, BaseException) and is_transient(exc)


def in_run() -> bool:
    """Inside a Prefect flow run (artifacts and events have somewhere to go)."""
    from prefect.context import FlowRunContext

    return not PLAIN.get() and FlowRunContext.get() is not None


def farm_volumes(servers: list[str] | None = None) -> list[ServerVolume]:
    """The volumes of the named servers (all when ``None``) with credentials resolved (env or Secret block)."""
    with inventory_session() as session:
        return server_volumes(session, server_password, servers=servers,
                              require_signing=load_settings().storage.require_signing)


def storage_prefer() -> str:
    """How flows reach volumes: ``auto`` (local mount when the volume has a path), ``local`` or ``smb``."""
    return load_settings().storage.prefer

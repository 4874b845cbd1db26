"""The ``farm-status`` markdown artifact (the UI's Artifacts page becomes the Server Farm Summary) and the
per-sweep metrics the health watcher records.

``after_sweep`` is the watcher's last step: it adds the sweep's duration to the histogram in the inventory
(``farmkeeper.metrics.record_sweep``) and republishes ``farm-status`` when the farm changed, at most every
``FARMKEEPER_FARM_STATUS_EVERY_S`` (30 s). Both never raise: a sweep is never failed by its own reporting.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from farmkeeper import metrics
from farmkeeper.farmview import fingerprint, read_farm_view, render_markdown
from farmkeeper.settings import load_settings
from tasks.common import inventory_session

FARM_STATUS_KEY = "farm-status"

logger = logging.getLogger(__name__)


@dataclass
class _Published:
    at: float | None = None         # time.monotonic() of the last publish in this process
    fingerprint: str | None = None


_last = _Published()
_lock = threading.Lock()


def publish_farm_status(*, min_interval_s: float | None = None, force: bool = False) -> bool:
    """Publish the ``farm-status`` artifact if the farm changed and ``min_interval_s`` passed; True if published.

    ``min_interval_s`` defaults to ``FARMKEEPER_FARM_STATUS_EVERY_S`` (30 s). Needs a flow run context (the
    artifact is attached to the run). Errors are logged, never raised.
    """
    try:
        if min_interval_s is None:
            min_interval_s = load_settings().farm_status_every_s
        with inventory_session() as session:
            view = read_farm_view(session)
        mark = fingerprint(view)
        now = time.monotonic()
        with _lock:
            if not force and mark == _last.fingerprint:
                return False
            if not force and _last.at is not None and now - _last.at < min_interval_s:
                return False   # changed: published by the first sweep after the interval
            _last.at, _last.fingerprint = now, mark
        from prefect.artifacts import create_markdown_artifact

        down = [s.name for s in view.servers if s.state == "down"]
        description = (f"Farm {view.farm}: {_n(len(view.servers), 'server')}"
                       + (f", DOWN: {', '.join(down)}" if down else ", all up" if view.servers else "")
                       + f"; {_n(len(view.not_recording), 'camera')} not recording; "
                       + f"{_n(len(view.jobs), 'copy job')} running")
        create_markdown_artifact(render_markdown(view), key=FARM_STATUS_KEY, description=description)
    except Exception as exc:  # noqa: BLE001 - the farm view never breaks the sweep that refreshes it
        logger.warning("farm-status not published: %s: %s", type(exc).__name__, exc)
        with _lock:
            _last.fingerprint = None
        return False
    return True


def _n(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def record_sweep(seconds: float) -> None:
    """Count one sweep of ``seconds`` in the inventory's duration histogram (every process adds to it)."""
    try:
        with inventory_session() as session:
            metrics.record_sweep(session, seconds)
    except Exception as exc:  # noqa: BLE001 - metrics never break the sweep
        logger.warning("sweep duration not recorded: %s: %s", type(exc).__name__, exc)


def after_sweep(seconds: float, *, min_interval_s: float | None = None) -> None:
    """The watcher's reporting step: the duration histogram, then ``farm-status`` when something changed."""
    record_sweep(seconds)
    publish_farm_status(min_interval_s=min_interval_s)

"""The watch supervisor of ``farmkeeper serve``: a watching health check is always running.

It starts ``python -m flows.health_check --watch SECONDS`` at once (before the Prefect server is up: the
watch then runs without a run record, see ``flows.health_check.main``), and again as soon as one ends or
dies. A dead watcher's lease is released at once (the replacement does not wait for it to expire) and its
flow run, if it had one, is marked Crashed. Every ``watch_for - overlap`` a successor is started; it
stands by until the current watcher ends and releases the lease, so rotation costs no probing. A watcher
started while the Prefect API was down is replaced as soon as the API answers, so its sweeps show up in
Prefect again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from farmkeeper.apicheck import api_healthy

logger = logging.getLogger(__name__)


@dataclass
class _Child:
    proc: subprocess.Popen[bytes]
    started: float
    run_file: Path
    tracked: bool                        # the Prefect API answered when it started
    stopping: bool = False


@dataclass
class WatchSupervisor:
    """Keeps one watching health-check process alive (``start``/``stop``; a daemon thread polls every ``poll_s``)."""

    env: dict[str, str]
    watch_for_s: float = 3600.0
    overlap_s: float = 30.0
    poll_s: float = 0.3
    log_path: Path | None = None
    restarts: int = 0
    _children: list[_Child] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fk-watch-")))

    def start(self) -> WatchSupervisor:
        self._spawn()
        self._thread = threading.Thread(target=self._run, name="watch supervisor", daemon=True)
        self._thread.start()
        return self

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self._children if c.proc.poll() is None]

    def stop(self, timeout_s: float = 20.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        for child in self._children:
            if child.proc.poll() is None:
                child.proc.terminate()
        for child in self._children:
            try:
                child.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
            self._reap(child)

    def _spawn(self) -> None:
        run_file = self._dir / f"watch-{len(self._children)}-{time.monotonic_ns()}.run"
        env = self.env | {"FARMKEEPER_WATCH_RUN_FILE": str(run_file), "FARMKEEPER_WATCH_PARENT": str(os.getpid())}
        tracked = api_healthy(env.get("PREFECT_API_URL"), 1.0)
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        proc = subprocess.Popen([sys.executable, "-m", "flows.health_check", "--watch", f"{self.watch_for_s:g}"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if self.log_path:
            log.close()  # type: ignore[union-attr]
        self._children.append(_Child(proc, time.monotonic(), run_file, tracked))
        logger.info("watch supervisor: started watcher pid %d (%s)", proc.pid,
                    "with a flow run" if tracked else "Prefect API not up: without a flow run")

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - the supervisor itself never stops
                logger.exception("watch supervisor")

    def _tick(self) -> None:
        for child in [c for c in self._children if c.proc.poll() is not None]:
            self._children.remove(child)
            if not self._stop.is_set():
                logger.warning("watch supervisor: watcher pid %d ended (code %s); replacing it",
                               child.proc.pid, child.proc.returncode)
                self.restarts += 1
            self._reap(child)
        live = [c for c in self._children if not c.stopping]
        newest = max(live, key=lambda c: c.started, default=None)
        if newest is None or time.monotonic() - newest.started >= max(1.0, self.watch_for_s - self.overlap_s):
            self._spawn()
            return
        # a watcher started while the Prefect API was down: replace it by a tracked one once the API answers
        if not newest.tracked and api_healthy(self.env.get("PREFECT_API_URL"), 1.0):
            self._spawn()
            newest.stopping = True
            newest.proc.terminate()

    def _reap(self, child: _Child) -> None:
        """Free what a dead watcher held: its lease (at once), and its flow run (marked Crashed)."""
        prefix = f"{socket.gethostname()}:{child.proc.pid}:"
        with contextlib.suppress(Exception):
            from farmkeeper.db import session_scope
            from farmkeeper.watch import release_leases_of
            from flows.health_check import _watch_engine

            engine = _watch_engine()
            try:
                with session_scope(engine) as session:
                    released = release_leases_of(session, prefix)
            finally:
                engine.dispose()
            if released:
                logger.info("watch supervisor: released the watch lease of pid %d", child.proc.pid)
        run_id = child.run_file.read_text().strip() if child.run_file.exists() else ""
        with contextlib.suppress(OSError):
            child.run_file.unlink()
        if run_id and child.proc.returncode != 0 and api_healthy(self.env.get("PREFECT_API_URL"), 1.0):
            os.environ.setdefault("PREFECT_API_URL", self.env["PREFECT_API_URL"])
            from flows.health_check import mark_crashed

            mark_crashed(run_id, f"the watching process (pid {child.proc.pid}) died with code {child.proc.returncode}")

"""The watch supervisor of ``farmkeeper serve``: a watching health check is always running, and another waits warm.

It starts ``python -m flows.health_check --watch SECONDS`` at once (before the Prefect server is up: the
watch then runs without a run record, see ``flows.health_check.main``) and keeps two such processes alive:
the one holding the watch lease sweeps, the other has already paid its start-up (Python and Prefect
imports, several seconds) and stands by for the lease. When a watcher dies, its lease is released at once,
so the warm standby sweeps within a quarter of the lease time (instead of a new process starting cold),
its flow run, if it had one, is marked Crashed, and a new standby is started. The two watch for staggered
lengths (each ends half a ``watch_for`` after the other), so rotation never leaves both starting at once.
Watchers started while the Prefect API was down are replaced, one at a time and only once their
replacement has its flow run, as soon as the API answers, so their sweeps show up in Prefect again.
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
    ends: float = 0.0                    # monotonic time its watch_for runs out
    stopping: bool = False

    @property
    def ready(self) -> bool:
        """A tracked watcher is ready once its flow run exists (it wrote the run id): its imports are done."""
        return self.run_file.exists()


@dataclass
class WatchSupervisor:
    """Keeps one watching health-check process alive (``start``/``stop``; a daemon thread polls every ``poll_s``)."""

    env: dict[str, str]
    watch_for_s: float = 3600.0
    overlap_s: float = 30.0               # kept for callers; rotation is staggered by watch_for / 2 instead
    poll_s: float = 0.3
    watchers: int = 2                     # the sweeping one and its warm standby
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
        now = time.monotonic()
        others = [c.ends for c in self._children if not c.stopping and c.proc.poll() is None]
        watch_for = self.watch_for_s if not others else max(self.watch_for_s / 2,
                                                              max(others) - now + self.watch_for_s / 2)
        run_file = self._dir / f"watch-{len(self._children)}-{time.monotonic_ns()}.run"
        env = self.env | {"FARMKEEPER_WATCH_RUN_FILE": str(run_file), "FARMKEEPER_WATCH_PARENT": str(os.getpid())}
        tracked = api_healthy(env.get("PREFECT_API_URL"), 1.0)
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        proc = subprocess.Popen([sys.executable, "-m", "flows.health_check", "--watch", f"{watch_for:g}"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if self.log_path:
            log.close()  # type: ignore[union-attr]
        self._children.append(_Child(proc, now, run_file, tracked, ends=now + watch_for))
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
        if len(live) < self.watchers:
            self._spawn()
            return
        untracked = [c for c in live if not c.tracked]
        if not untracked or not api_healthy(self.env.get("PREFECT_API_URL"), 1.0):
            return
        # the Prefect API answers now: replace the watchers started without it, one at a time, each only once
        # a tracked replacement has its flow run (so a warm watcher is always there to take the lease)
        if any(c.tracked and not c.ready for c in live):
            return
        if len(live) > self.watchers and any(c.tracked and c.ready for c in live):
            victim = max(untracked, key=lambda c: c.started)
            victim.stopping = True
            victim.proc.terminate()
        else:
            self._spawn()

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

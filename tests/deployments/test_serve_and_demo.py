"""`farmkeeper serve` (embedded: its own Prefect server, every deployment, clean Ctrl-C) and `farmkeeper demo`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from deployments import DEPLOYMENTS
from deployments.embedded import free_port
from tests.helpers import descendants
from tests.helpers import wait_for as _wait_for

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "farmkeeper.cli"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | {"FARMKEEPER_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO),
                  "FARMKEEPER_DATABASE_URL": f"sqlite:///{tmp_path / 'inventory.db'}"}


def _deployment_names(api: str) -> set[str]:
    req = urllib.request.Request(f"{api}/deployments/filter", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return {d["name"] for d in json.loads(resp.read())}


def _flow_run_processes(pid: int) -> list[int]:
    """serve's processes that run flows: the watchers (``flows.health_check``) and any ``prefect.engine``."""
    def cmdline(p: int) -> str:
        with contextlib.suppress(OSError):
            return (Path("/proc") / str(p) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return ""
    return [p for p in descendants(pid) if "flows.health_check" in cmdline(p) or "prefect.engine" in cmdline(p)]


def test_serve_starts_its_own_server_serves_everything_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """Also issue 13: serve probes within 30 s of its start (before its Prefect server is up); after every
    flow-run process of it is SIGKILLed and a primary dies, probing resumes within 15 s and the primary is
    failed over within down_after + 8 s."""
    from farmkeeper.db import dispose_engines, migrate
    from tests.failover.conftest import apply, build_farm
    from tests.fixtures.listeners import Listener

    env = _env(tmp_path)
    url = env["FARMKEEPER_DATABASE_URL"]
    os.environ["FARMKEEPER_DATABASE_URL"] = url
    migrate(url)
    farm = build_farm(tmp_path / "farm", [("p1", "primary"), ("p2", "primary"), ("r1", "redundant")],
                      [{"id": "cam-a", "home": "p1"}, {"id": "cam-c", "home": "p2"}],
                      notify=[], down_after="5s", interval="1s")
    apply(farm)
    dispose_engines()
    listeners = {n: Listener(farm.health(n)) for n in ("p1", "p2", "r1")}
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    log = (tmp_path / "serve.log").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port)], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)   # its Prefect server in its group

    def serve_log() -> str:
        return (tmp_path / "serve.log").read_text()[-3000:]

    def probed_after(t: float) -> bool:
        return any(a > t for a in listeners["p2"].accepted)

    try:
        def wait_for(what: str, check: Any, timeout: float) -> None:
            try:
                _wait_for(what, check, timeout)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{serve_log()}") from None

        wait_for("serve probes the farm", lambda: probed_after(started), 30)
        deadline = time.monotonic() + 180
        names: set[str] = set()
        while time.monotonic() < deadline and names != {d.deployment for d in DEPLOYMENTS}:
            assert proc.poll() is None, serve_log()
            with contextlib.suppress(OSError):
                names = _deployment_names(api)
            time.sleep(1)
        assert names == {d.deployment for d in DEPLOYMENTS}, serve_log()
        assert (tmp_path / "home" / "prefect" / "prefect.db").exists(), "Prefect's database under FARMKEEPER_HOME"

        victims = _flow_run_processes(proc.pid)
        assert victims, f"serve runs a watching process:\n{serve_log()}"
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        listeners["p1"].close()                      # the primary dies with them
        wait_for("probing resumes after every flow-run process was killed", lambda: probed_after(killed), 15)
        wait_for("p1's camera failed over to r1", lambda: _current(url, "cam-a") == "r1",
                 max(0.1, 5 + 8 - (time.monotonic() - killed)))
        assert not set(victims) & set(_flow_run_processes(proc.pid)), "new watchers, not the killed ones"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, serve_log()
    finally:
        if proc.poll() is None:                      # a failed test: stop serve and its Prefect server too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for listener in listeners.values():
            listener.close()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the embedded server stopped with it


def _current(url: str, camera: str) -> str | None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT current FROM camera WHERE id = :id"), {"id": camera}).scalar()
    finally:
        engine.dispose()


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = subprocess.run([*CLI, "demo", "--workdir", str(tmp_path / "demo"), "--first-host", "40"], cwd=REPO,
                         env=_env(tmp_path) | {"COLUMNS": "160"}, capture_output=True, text=True, timeout=900)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-5000:]
    for line in ("failover done", "notification: rec1 is down", "rec1 recovered", "swap-back",
                 "retention sweep: deleted", "cam-004 flagged stalled",
                 "notification: cam-004 stopped recording on rec2", "notification: cam-004 records again on rec2",
                 "demo finished"):
        assert line in text, f"{line!r} missing from the narration:\n{text[-5000:]}"
    assert text.count("notification: rec1 is down") == 1, f"one outage, one failover:\n{text[-5000:]}"
    spare = tmp_path / "demo" / "volumes" / "spare1" / "D" / "video"
    assert not any(p.is_file() for p in spare.rglob("*")), "swap-back emptied spare1's copies of rec1's cameras"

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

import pytest

from deployments import DEPLOYMENTS
from deployments.embedded import free_port

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


def test_serve_starts_its_own_server_serves_everything_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port)], cwd=REPO, env=_env(tmp_path), stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        names: set[str] = set()
        while time.monotonic() < deadline and names != {d.deployment for d in DEPLOYMENTS}:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            with contextlib.suppress(OSError):
                names = _deployment_names(api)
            time.sleep(1)
        assert names == {d.deployment for d in DEPLOYMENTS}, (tmp_path / "serve.log").read_text()[-3000:]
        assert (tmp_path / "home" / "prefect" / "prefect.db").exists(), "Prefect's database under FARMKEEPER_HOME"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, (tmp_path / "serve.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the embedded server stopped with it


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
    spare = tmp_path / "demo" / "volumes" / "spare1" / "D" / "video"
    assert not any(p.is_file() for p in spare.rglob("*")), "swap-back emptied spare1's copies of rec1's cameras"

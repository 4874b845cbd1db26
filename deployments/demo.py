"""``farmkeeper demo``: a simulated 3-server farm, the control plane served by a local Prefect server, and a
narrated failover, recovery, swap-back and retention sweep. Nothing is faked: the simulator writes real
footage files, the flows run as Prefect deployments, notifications go through apprise to a local receiver.

Everything lives in one work folder (default: a new temp folder; ``--workdir`` keeps it) and stops cleanly.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from deployments.embedded import free_port, local_server, stop_group

console = Console()
T = TypeVar("T")
ROLES = (("rec1", "primary"), ("rec2", "primary"), ("spare1", "redundant"))
DOWN_AFTER_S = 6
STALL_AFTER_S = 10
SMB_PASSWORD_ENV = "FARMKEEPER_DEMO_SMB_PASSWORD"


def demo_servers(first_host: int) -> list[tuple[str, str, str]]:
    """(name, loopback address, role) of the demo's three servers."""
    return [(name, f"127.0.0.{first_host + i}", role) for i, (name, role) in enumerate(ROLES)]


class NotificationPrinter:
    """A local HTTP receiver for apprise's ``json://`` notifications that prints each one as it arrives."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        printer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    message = json.loads(body or b"{}")
                except ValueError:
                    message = {"title": "?", "message": body.decode("utf-8", "replace")}
                printer.messages.append(message)
                console.print(Panel(str(message.get("message", "")), title=f"notification: {message.get('title')}",
                                    border_style="magenta", expand=False))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(what: str, check: Callable[[], T | None], timeout: float, every: float = 0.3) -> T:
    deadline = time.monotonic() + timeout
    with console.status(what):
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # the inventory may be busy for a moment; keep polling
                value = check()
                if value:
                    return value
            time.sleep(every)
    raise RuntimeError(f"demo: {what} did not happen within {timeout:g} s")


def write_farm(work: Path, notify_url: str, hosts: list[tuple[str, str, str]], smb_user: str | None) -> Path:
    servers = []
    smb = f"    smb: {{username: {smb_user}, password_env: {SMB_PASSWORD_ENV}}}\n" if smb_user else ""
    for name, host, role in hosts:
        port = free_port_on(host)
        root = work / "volumes" / name / "D"
        root.mkdir(parents=True, exist_ok=True)
        servers.append(f"""  - name: {name}
    host: {host}
    role: {role}
    master: {'true' if name == 'rec1' else 'false'}
    health: tcp://{host}:{port}
    san_failover_mode: true
{smb}    volumes:
      - {{drive: D, path: '{root}'}}
""")
    text = f"""# The demo farm: two primary recording servers and one redundant server.
farm:
  name: demo
  down_after: {DOWN_AFTER_S}s
  health_interval: 1s
  stall_after: {STALL_AFTER_S}s
  notify: ["{notify_url}"]
  purge_guard_percent: 95
storage:
  min_free: 0
  limit_storage_days: true
  default_max_storage_days: 2
  keep_metadata_longer: true
  default_metadata_days: 7
  default_path: 'D:\\Data'
servers:
{''.join(servers)}cameras:
  - {{id: cam-001, name: Lobby, home: rec1, movable: true, streams: 2, max_storage_days: '2;3'}}
  - {{id: cam-002, name: Parking, home: rec1, movable: true, streams: 1}}
  - {{id: cam-003, name: USB desk camera, home: rec1, movable: false, streams: 1}}
  - {{id: cam-004, name: Gate, home: rec2, movable: true, streams: 1}}
"""
    path = work / "farm.yaml"
    path.write_text(text)
    return path


def free_port_on(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def seed_old_footage(work: Path) -> int:
    """Footage from 4 days ago (older than the 2-day rule), so the retention sweep has work to show."""
    from farmkeeper.layout import meta_path, video_path

    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=4)
    count = 0
    for camera, server, streams in (("cam-001", "rec1", 2), ("cam-002", "rec1", 1), ("cam-004", "rec2", 1)):
        root = work / "volumes" / server / "D"
        for i in range(30):
            moment = start + timedelta(seconds=20 * i)
            for rel in [video_path(camera, s, moment).relpath for s in range(streams)] + [
                    meta_path(camera, moment).relpath]:
                target = root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(os.urandom(64 * 1024))
                ts = moment.timestamp()
                os.utime(target, (ts, ts))
                count += 1
    return count


def footage_table(work: Path, title: str) -> Table:
    table = Table(title=title)
    table.add_column("server")
    table.add_column("camera")
    table.add_column("video files", justify="right")
    for name, _ in ROLES:
        video = work / "volumes" / name / "D" / "video"
        for cam_dir in sorted(video.iterdir()) if video.is_dir() else []:
            files = sum(1 for p in cam_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
            table.add_row(name, cam_dir.name, str(files))
    return table


def farm_table() -> Table:
    from farmkeeper.db import ensure_schema, get_engine, session_scope
    from farmkeeper.status import farm_status

    with session_scope(ensure_schema(get_engine())) as session:
        data = farm_status(session)
    table = Table(title="farm")
    for column in ("server", "state", "role", "master", "cameras"):
        table.add_column(column)
    for s in data["servers"]:
        table.add_row(s["name"], s["state"], s["role"], "yes" if s["master"] else "", str(s["cameras"]))
    cams = Table(title="cameras")
    for column in ("camera", "home", "current", "movable", "state"):
        cams.add_column(column)
    for c in data["cameras"]:
        cams.add_row(c["id"], c["home"], c["current"] or "-", "yes" if c["movable"] else "no", c["state"])
    outer = Table.grid(padding=2)
    outer.add_row(table, cams)
    return outer


def cameras() -> dict[str, Any]:
    from farmkeeper import inventory
    from farmkeeper.db import ensure_schema, get_engine, session_scope

    with session_scope(ensure_schema(get_engine())) as session:
        return {c.id: c for c in inventory.list_cameras(session)}


def servers() -> dict[str, Any]:
    from farmkeeper import inventory
    from farmkeeper.db import ensure_schema, get_engine, session_scope

    with session_scope(ensure_schema(get_engine())) as session:
        return {s.name: s for s in inventory.list_servers(session)}


@contextlib.contextmanager
def process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            stop_group(proc)


def run_deployment_now(name: str, parameters: dict[str, Any] | None = None, wait_s: float = 0) -> Any:
    from prefect.deployments import run_deployment

    return run_deployment(name, parameters=parameters or {}, timeout=wait_s)


def swap_back_with_progress(server: str) -> None:
    """Start the swap-back deployment and draw its copy job's progress until the flow run ends."""
    from prefect.client.orchestration import get_client
    from sqlmodel import col, select

    from farmkeeper.db import ensure_schema, get_engine, session_scope
    from farmkeeper.models import CopyJob

    run = run_deployment_now("swap-back/swap-back", {"params": {"server": server, "max_mbps": 40}})
    columns = (TextColumn("[bold]swap-back {task.fields[cams]}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[files]}"))
    deadline = time.monotonic() + 600
    with get_client(sync_client=True) as client, Progress(*columns, console=console) as progress:
        task = progress.add_task("copy", total=None, cams="", files="waiting for the validation gate")
        while time.monotonic() < deadline:
            with session_scope(ensure_schema(get_engine())) as session:
                job = session.exec(select(CopyJob).where(CopyJob.flow_run_id == str(run.id))
                                   .order_by(col(CopyJob.id).desc())).first()
            if job is not None:
                progress.update(task, total=max(job.bytes_total, 1), completed=job.bytes_done,
                                cams=", ".join(job.cameras), files=f"{job.files_done}/{job.files_total} files")
            state = client.read_flow_run(run.id).state
            if state is not None and state.is_final():
                if not state.is_completed():
                    raise RuntimeError(f"swap-back run ended {state.name}: {state.message}")
                return
            time.sleep(0.5)
    raise RuntimeError("swap-back did not finish within 10 minutes")


def retention_report() -> Table:
    from sqlmodel import func, select

    from farmkeeper.db import ensure_schema, get_engine, session_scope
    from farmkeeper.models import DeletionAudit

    with session_scope(ensure_schema(get_engine())) as session:
        rows = session.exec(select(DeletionAudit.server, DeletionAudit.drive, DeletionAudit.rule,
                                   func.count(), func.sum(DeletionAudit.size))
                            .where(DeletionAudit.rule != "source_copied")
                            .group_by(DeletionAudit.server, DeletionAudit.drive, DeletionAudit.rule)).all()
    table = Table(title="retention sweep: deleted (from the deletion audit)")
    for column in ("server", "volume", "rule", "files", "bytes"):
        table.add_column(column)
    for server, drive, rule, files, size in rows:
        table.add_row(server, f"{drive}:", rule, str(files), f"{size or 0:,}")
    return table


def narrate_events(since: datetime, expect: str, timeout: float = 30) -> datetime:
    """Read farmkeeper's events since ``since`` back from the events API (once ``expect`` is there) and print them.

    Returns the time to read from next. Events reach the API a few seconds after they are emitted.
    """
    from tasks.events import describe, read_events

    def ready() -> list[Any] | None:
        found = read_events(since)
        return found if any(e.event == expect for e in found) else None

    try:
        events = wait_for(f"event {expect} in the events API", ready, timeout, every=1)
    except RuntimeError as exc:
        console.print(f"[yellow]{exc}[/yellow]")
        return since
    table = Table(title="Prefect events (read back from the events API)")
    table.add_column("at")
    table.add_column("event")
    for event in events:
        table.add_row(f"{event.occurred:%H:%M:%S}", describe(event))
    console.print(table)
    return max(e.occurred for e in events) + timedelta(microseconds=1)


def start_samba(work: Path, hosts: list[tuple[str, str, str]]) -> Any:
    """Share each server's volume as DATAD with real smbd processes, when Samba is installed and we are root."""
    import shutil

    if shutil.which("smbd") is None or os.geteuid() != 0:
        return None
    from farmkeeper.sim.samba import SambaError, SambaFarm, Share

    first = int(hosts[0][1].rsplit(".", 1)[1])
    farm = SambaFarm(len(hosts), root=work / "samba", first_host=first, shares=())
    for (name, _, _), server in zip(hosts, farm.servers, strict=True):
        root = work / "volumes" / name / "D"
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o777)
        server.shares["DATAD"] = Share("DATAD", root)
    try:
        return farm.start()
    except SambaError as exc:
        console.print(f"[yellow]Samba present but not startable ({exc}); volumes stay local mounts[/yellow]")
        return None


def run_demo(workdir: Path | None = None, first_host: int = 2, samba: bool = True) -> None:
    import tempfile

    work = (workdir or Path(tempfile.mkdtemp(prefix="farmkeeper-demo-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    hosts = demo_servers(first_host)
    db_url = f"sqlite:///{work / 'inventory.db'}"
    os.environ["FARMKEEPER_DATABASE_URL"] = db_url
    os.environ["FARMKEEPER_HOME"] = str(work)
    console.rule("[bold]farmkeeper demo")
    console.print(f"work folder: {work}")
    printer = NotificationPrinter()
    shares = start_samba(work, hosts) if samba else None
    if shares is not None:
        os.environ[SMB_PASSWORD_ENV] = shares.servers[0].password
        console.print("Samba: each server's volume is shared as \\\\server\\DATAD on "
                      f"{', '.join(h for _, h, _ in hosts)} (the validation gate checks them over SMB)")
    else:
        os.environ["FARMKEEPER_STORAGE__PREFER"] = "local"
        console.print("[yellow]No Samba shares (not installed, not root, or --no-samba): volumes are reached "
                      "through local mounts only; `make test` installs Samba, then the demo adds real DATAD "
                      "shares[/yellow]")
    farm = write_farm(work, printer.url, hosts, shares.servers[0].username if shares is not None else None)
    console.print(f"1. the farm file {farm}: rec1 and rec2 record cameras, spare1 stands by")

    from farmkeeper.db import ensure_schema, get_engine, session_scope
    from farmkeeper.farmfile import apply_farm_file, load_farm_file

    with session_scope(ensure_schema(get_engine())) as session:
        apply_farm_file(session, load_farm_file(farm))
    seeded = seed_old_footage(work)
    console.print(f"   applied to the inventory; {seeded} files of 4-day-old footage seeded for the retention step")

    cli = [sys.executable, "-m", "farmkeeper.cli.__main__"]
    env = os.environ.copy() | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with contextlib.ExitStack() as stack:
        stack.callback(printer.stop)
        if shares is not None:
            stack.callback(shares.close)
        sim = stack.enter_context(process([*cli, "sim", str(farm), "--segment", "1s", "--state-dir",
                                           str(work / "sim")], env, work / "sim.log"))
        console.print("2. the simulator records: one process per server, each writing its cameras' segments")
        api_url = stack.enter_context(local_server(work, free_port(), work / "prefect-server.log"))
        os.environ["PREFECT_API_URL"] = env["PREFECT_API_URL"] = api_url
        ui = api_url.removesuffix('/api')
        console.print(f"3. Prefect server: [link]{ui}[/link] (open it to watch runs and artifacts); event feed: "
                      f"[link]{ui}/events[/link]; the farm view: [link]{ui}/artifacts/key/farm-status[/link]")
        serve = stack.enter_context(process([*cli, "serve", "--health-every", "60s", "--limit", "6"], env,
                                            work / "serve.log"))
        wait_for("deployments registered",
                 lambda: run_deployment_now("health-check/health-check") is not None, 90, every=2)
        wait_for("every server answers its probe",
                 lambda: all(s.state == "up" for s in servers().values()), 90)
        time.sleep(4)
        console.print(farm_table())
        console.print(footage_table(work, "footage so far"))

        console.rule("a server dies")
        from farmkeeper.sim import read_pid

        pid = wait_for("rec1's simulator pid", lambda: read_pid(work / "sim", "rec1"), 10)
        events_since = datetime.now(UTC)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        console.print(f"4. killed rec1 (pid {pid}); down_after is {DOWN_AFTER_S} s")
        wait_for("failover of rec1's movable cameras",
                 lambda: all(cameras()[c].current == "spare1" for c in ("cam-001", "cam-002")), 60)
        console.print(f"   failover done {time.monotonic() - killed:.1f} s after the kill")
        events_since = narrate_events(events_since, "farmkeeper.camera.failed-over")
        time.sleep(4)
        console.print(farm_table())
        console.print(footage_table(work, "spare1 now records rec1's movable cameras"))

        console.rule("the server comes back")
        stack.enter_context(process([*cli, "sim", str(farm), "--only", "rec1", "--segment", "1s", "--state-dir",
                                     str(work / "sim")], env, work / "sim-rec1.log"))
        wait_for("rec1 back up (still primary: it records its non-movable USB camera cam-003)",
                 lambda: servers()["rec1"].state == "up", 60)
        console.print(farm_table())

        console.rule("swap-back: cameras home, footage copied back")
        swap_back_with_progress("rec1")
        narrate_events(events_since, "farmkeeper.copy-job.finished")
        console.print(farm_table())
        console.print(footage_table(work, "footage after swap-back (spare1's copies removed once verified)"))

        console.rule("retention sweep")
        run_deployment_now("retention-sweep/retention-sweep", wait_s=300)
        console.print(retention_report())
        console.rule("a camera stops recording while its server answers")
        sim_control = [*cli, "sim", str(farm), "--state-dir", str(work / "sim")]
        subprocess.run([*sim_control, "--stall", "cam-004"], env=env, check=True, capture_output=True)
        stalled = time.monotonic()
        console.print(f"5. cam-004's recorder on rec2 hangs (simulated); stall_after is {STALL_AFTER_S} s")
        wait_for("cam-004 stalled", lambda: cameras()["cam-004"].state == "stalled", 60)
        console.print(f"   cam-004 flagged stalled {time.monotonic() - stalled:.1f} s after its recorder hung")
        console.print(farm_table())
        subprocess.run([*sim_control, "--resume", "cam-004"], env=env, check=True, capture_output=True)
        wait_for("cam-004 records again", lambda: cameras()["cam-004"].state == "recording", 60)
        console.print("   cam-004 records again: one notification each way")
        console.rule("clean stop")
        stop_group(serve)   # the control plane first: stopping the simulated servers is not an outage to act on
        console.print("   control plane stopped, then the simulated servers")
        del sim
    console.print(f"[green]demo finished[/green]; {len(printer.messages)} notifications received; "
                  f"files kept in {work}")

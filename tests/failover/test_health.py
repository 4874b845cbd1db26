"""Probes against real listeners; the down/up state machine, table-driven; optimistic row updates."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlmodel import select

from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.health import (
    Health,
    ProbeResult,
    ProbeTarget,
    Transition,
    apply_probe_results,
    next_health,
    probe_all,
    probe_timeout,
)
from farmkeeper.models import Server, ServerEvent, ServerState
from tests.failover.conftest import free_port

SLOW_IN_FLIGHT: list[int] = []   # how many /slow requests were being answered at once, seen by each one


@pytest.fixture
def http_server() -> Iterator[tuple[str, int]]:
    in_flight = [0]
    lock = threading.Lock()
    release = threading.Event()
    SLOW_IN_FLIGHT.clear()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/slow"):
                with lock:
                    in_flight[0] += 1
                deadline = time.monotonic() + 10
                while not release.is_set() and time.monotonic() < deadline:
                    with lock:
                        SLOW_IN_FLIGHT.append(in_flight[0])
                    time.sleep(0.05)
                with lock:
                    in_flight[0] -= 1
            self.send_response({"/health": 200, "/slow": 200}.get(self.path, 503))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "127.0.0.1", int(server.server_address[1])
    release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def tcp_listener() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield int(sock.getsockname()[1])
    sock.close()


def test_probes_against_real_listeners(http_server: tuple[str, int], tcp_listener: int) -> None:
    host, port = http_server
    closed = free_port("127.0.0.1")
    targets = [
        ProbeTarget("tcp-ok", f"tcp://127.0.0.1:{tcp_listener}"),
        ProbeTarget("tcp-refused", f"tcp://127.0.0.1:{closed}"),
        ProbeTarget("http-ok", f"http://{host}:{port}/health"),
        ProbeTarget("http-503", f"http://{host}:{port}/other"),
        ProbeTarget("http-slow", f"http://{host}:{port}/slow"),
        ProbeTarget("http-slow-2", f"http://{host}:{port}/slow-2"),
        ProbeTarget("http-slow-3", f"http://{host}:{port}/slow-3"),
        ProbeTarget("smb-no-server", "smb", host="127.0.0.1", smb_port=closed, smb_share="DATAD",
                    smb_username="u", password="s3cret-pw"),
        ProbeTarget("bad", "ftp://x"),
    ]
    results = {r.server: r for r in probe_all(targets, timeout=2)}
    assert max(SLOW_IN_FLIGHT, default=0) == 3, "the probes run concurrently: three slow ones in flight at once"
    assert results["tcp-ok"].ok and results["http-ok"].ok
    assert not results["tcp-refused"].ok and "Refused" in results["tcp-refused"].error
    assert not results["http-503"].ok and "503" in results["http-503"].error
    for slow in ("http-slow", "http-slow-2", "http-slow-3"):
        assert not results[slow].ok and "within" in results[slow].error, results[slow]
    assert not results["smb-no-server"].ok and "s3cret-pw" not in results["smb-no-server"].error
    assert not results["bad"].ok


@pytest.mark.samba
def test_smb_probe_against_samba(samba_farm: Any) -> None:
    from tests.fixtures.samba import PASSWORD, USERNAME

    smbd = samba_farm.servers[0]
    ok = ProbeTarget("s", "smb", host=smbd.host, smb_port=smbd.port, smb_share="DATAD", smb_username=USERNAME,
                     password=PASSWORD)
    wrong = ProbeTarget("w", "smb", host=smbd.host, smb_port=smbd.port, smb_share="DATAD", smb_username=USERNAME,
                        password="wrong-pw")
    results = {r.server: r for r in probe_all([ok, wrong], timeout=2)}
    assert results["s"].ok, results["s"].error
    assert not results["w"].ok and "wrong-pw" not in results["w"].error


def test_probe_timeout_follows_interval() -> None:
    assert probe_timeout(10) == 2.0
    assert probe_timeout(1) == 0.5
    assert probe_timeout(0.1) == 0.2


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


UP, DOWN, UNKNOWN = ServerState.up, ServerState.down, ServerState.unknown


@pytest.mark.parametrize(
    ("before", "ok", "now", "state", "failing_since", "transition"),
    [
        # first answer of an unknown server
        (Health(UNKNOWN), True, 0, UP, None, Transition.up),
        # healthy stays healthy, no transition
        (Health(UP, None, at(0), at(0)), True, 1, UP, None, None),
        # the first failure: down_after counts from the last success, not from this probe
        (Health(UP, None, at(0), at(0)), False, 1, UP, at(0), None),
        # no success for down_after: down at once, however the sweeps were spaced
        (Health(UP, None, at(0), at(0)), False, 5, DOWN, at(0), Transition.down),
        # still failing, below down_after (5 s)
        (Health(UP, at(1), at(0), at(5)), False, 5.9, UP, at(1), None),
        # failing for exactly down_after: down
        (Health(UP, at(1), at(0), at(5)), False, 6, DOWN, at(1), Transition.down),
        # in maintenance: down, but the maintenance transition (no failover)
        (Health(UP, at(1), at(0), at(5), maintenance=True), False, 6, DOWN, at(1), Transition.down_maintenance),
        # already down: no second transition
        (Health(DOWN, at(1), at(0), at(6)), False, 7, DOWN, at(1), None),
        # answers again: recovered
        (Health(DOWN, at(1), at(0), at(7)), True, 8, UP, None, Transition.recovered),
        # one success resets the clock
        (Health(UP, None, at(4), at(4)), False, 5, UP, at(4), None),
        # sweeps driven by cron, 11 s apart (> down_after): the gap does not restart the count
        (Health(UP, None, at(0), at(0)), False, 11, DOWN, at(0), Transition.down),
        (Health(UP, at(0), at(0), at(11)), False, 22, DOWN, at(0), Transition.down),
        # a gap longer than max(2 min, 3 x interval) restarts the count (the control plane was stopped)
        (Health(UP, at(0), at(-1), at(1)), False, 122, UP, at(122), None),
        (Health(UP, None, at(0), at(0)), False, 121, UP, at(121), None),
        # unknown server failing from the start goes down after down_after
        (Health(UNKNOWN, at(0), None, at(4)), False, 5, DOWN, at(0), Transition.down),
    ],
)
def test_state_machine(before: Health, ok: bool, now: float, state: ServerState, failing_since: datetime | None,
                       transition: Transition | None) -> None:
    change = next_health(before, ok, at(now), down_after_s=5, error="" if ok else "refused")
    assert change.health.state == state
    assert change.health.failing_since == failing_since
    assert change.transition == transition
    assert change.health.probed_at == at(now)
    if ok:
        assert change.health.last_seen == at(now) and change.error is None
    else:
        assert change.health.last_seen == before.last_seen and change.error == "refused"


def test_apply_probe_results_reports_each_transition_once(make_farm: Any) -> None:
    make_farm([("a", "primary"), ("b", "redundant")], [{"id": "c1", "home": "a"}])
    engine = ensure_schema(get_engine())
    fail_a = [ProbeResult("a", False, 0.1, "refused"), ProbeResult("b", True, 0.1)]
    with session_scope(engine) as s:
        first = apply_probe_results(s, fail_a, 5, now=at(0))
    assert {(t.server, t.transition) for t in first} == {("b", Transition.up)}
    with session_scope(engine) as s:
        assert apply_probe_results(s, fail_a, 5, now=at(3)) == []
    # two sweeps see the same failure at 6 s: only one reports "down"
    with session_scope(engine) as s1:
        down1 = apply_probe_results(s1, fail_a, 5, now=at(6))
    with session_scope(engine) as s2:
        down2 = apply_probe_results(s2, fail_a, 5, now=at(6.1))
    assert [(t.server, t.transition) for t in down1 + down2] == [("a", Transition.down)]
    with session_scope(engine) as s:
        a = s.exec(select(Server).where(Server.name == "a")).one()
        assert a.state == ServerState.down and a.probe_error == "refused" and a.version > 1
        kinds = [e.kind for e in s.exec(select(ServerEvent).where(ServerEvent.server == "a"))]
        assert kinds == ["down"]


def test_pending_failovers_reads_the_cameras_only_when_a_server_is_down(make_farm: Any, monkeypatch: Any) -> None:
    """Every sweep asks; with every server up it must not read every camera (0.3-0.5 s at 10,000 cameras)."""
    from farmkeeper import failover, inventory

    make_farm([("a", "primary"), ("b", "redundant")], [{"id": "c1", "home": "a"}])
    engine = ensure_schema(get_engine())
    reads: list[int] = []
    original = inventory.list_cameras
    monkeypatch.setattr(inventory, "list_cameras", lambda s: reads.append(1) or original(s))
    both_up = [ProbeResult("a", True, 0.1), ProbeResult("b", True, 0.1)]
    with session_scope(engine) as s:
        apply_probe_results(s, both_up, 5, now=at(0))
        assert failover.pending_failovers(s) == [] and reads == []
        a = s.exec(select(Server).where(Server.name == "a")).one()
        a.state, a.maintenance = ServerState.down, True
        s.add(a)
        s.flush()
        assert failover.pending_failovers(s) == [] and reads == [], "down in maintenance: not failed over"
        a.maintenance = False
        s.add(a)
        s.flush()
        assert failover.pending_failovers(s) == ["a"] and reads == [1]

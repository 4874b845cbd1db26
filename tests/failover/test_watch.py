"""The watch's memory and lease (no Prefect): held results through an outage, one sweeper at a time,
and the one retry policy."""

from __future__ import annotations

import errno
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy.exc as sa_exc
from sqlmodel import select

from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.errors import (
    FarmFileError,
    NotFoundError,
    StorageError,
    StorageFull,
    StorageUnavailable,
    is_transient,
)
from farmkeeper.health import ProbeResult, Transition, apply_probe_results
from farmkeeper.models import Server, ServerState
from farmkeeper.watch import HeldResults, acquire_lease, lease_holder, lease_ttl, reduce_history, release_lease

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def r(server: str, ok: bool, t: float) -> ProbeResult:
    return ProbeResult(server, ok, 0.01, "" if ok else "refused", at(t))


def test_reduce_keeps_last_success_first_failure_after_it_and_latest() -> None:
    history = [r("a", True, 0), r("a", False, 1), r("a", True, 2), r("a", False, 3), r("a", False, 4),
               r("a", False, 5)]
    assert [(x.ok, x.at) for x in reduce_history(history)] == [(True, at(2)), (False, at(3)), (False, at(5))]
    assert reduce_history([r("a", False, 1), r("a", False, 2), r("a", False, 9)]) == \
        [r("a", False, 1), r("a", False, 9)]
    assert reduce_history([r("a", True, 1), r("a", True, 2)]) == [r("a", True, 2)]


def test_held_results_stay_bounded_and_come_back_in_order() -> None:
    held = HeldResults()
    for t in range(1000):   # a long outage: one sweep a second
        held.add([r("a", t < 3, t), r("b", True, t)])
    assert len(held) == 4, "a: last success, first failure, latest; b: its latest success"
    assert held.sweeps_held == 1000
    batch = held.take()
    assert [x.at for x in batch] == sorted(x.at for x in batch)
    assert len(held) == 0
    held.put_back(batch, 1000)
    held.add([r("a", False, 1000)])
    assert len(held) == 4 and held.sweeps_held == 1001


def test_a_server_that_failed_every_probe_of_an_outage_is_down_once_recorded(make_farm: Any) -> None:
    make_farm([("a", "primary"), ("b", "redundant")], [{"id": "c1", "home": "a"}])
    engine = ensure_schema(get_engine())
    with session_scope(engine) as s:
        apply_probe_results(s, [r("a", True, 0), r("b", True, 0)], 5)
    held = HeldResults()            # the inventory is away from 1 s to 40 s; a dies at 2 s
    for t in range(1, 41):
        held.add([r("a", t < 2, t), r("b", True, t)])
    with session_scope(engine) as s:
        transitions = apply_probe_results(s, held.take(), 5, stopped_gap_s=120)
        a = s.exec(select(Server).where(Server.name == "a")).one()
    assert [(t.server, t.transition) for t in transitions] == [("a", Transition.down)]
    assert a.state == ServerState.down and a.failing_since == at(1), "counted from its last success"


def test_lease_one_holder_renewal_expiry_takeover_and_release(make_farm: Any) -> None:
    make_farm([("a", "primary")], [])
    engine = ensure_schema(get_engine())
    with session_scope(engine) as s:
        assert acquire_lease(s, "w1", 3, flow_run_id="run-1", now=at(0)).held
    with session_scope(engine) as s:
        other = acquire_lease(s, "w2", 3, now=at(1))
        assert not other.held and other.holder == "w1"
    with session_scope(engine) as s:
        assert acquire_lease(s, "w1", 3, now=at(2)).held, "renewed"
    with session_scope(engine) as s:
        assert not acquire_lease(s, "w2", 3, now=at(4.9)).held, "renewed at 2 s: valid until 5 s"
    with session_scope(engine) as s:
        grant = acquire_lease(s, "w2", 3, now=at(5))
    assert grant.held and grant.taken_from is not None and grant.taken_from.flow_run_id == "run-1"
    with session_scope(engine) as s:
        assert not acquire_lease(s, "w1", 3, now=at(5.5)).held, "the old holder does not get it back"
        assert release_lease(s, "w2") and lease_holder(s) is None
    with session_scope(engine) as s:
        assert acquire_lease(s, "w1", 3, now=at(6)).held, "released: taken at once"


def test_lease_ttl_bounds_the_takeover() -> None:
    assert lease_ttl(30) == 10 and lease_ttl(5) == 2.5 and lease_ttl(1) == 2
    for down_after in (4, 5, 10, 30, 300):
        assert lease_ttl(down_after) * 1.25 <= min(down_after, 15)


@pytest.mark.parametrize(("exc", "transient"), [
    (StorageUnavailable("no answer", server="s", share="DATAD"), True),
    (StorageError(errno.EIO, "read error", transient=True), True),
    (StorageFull(errno.ENOSPC, "full"), False),
    (StorageError(errno.EACCES, "denied"), False),
    (NotFoundError("unknown camera x"), False),
    (FarmFileError(["farm.yaml:3: servers: bad"]), False),
    (ConnectionResetError(errno.ECONNRESET, "reset"), True),
    (TimeoutError(), True),
    (OSError(errno.EHOSTUNREACH, "unreachable"), True),
    (OSError(errno.ENOENT, "missing"), False),
    (sa_exc.OperationalError("SELECT 1", {}, Exception("database is locked")), True),
    (sa_exc.IntegrityError("INSERT", {}, Exception("UNIQUE")), False),
    (KeyError("bug"), False),
])
def test_one_retry_policy(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_a_slow_holder_still_running_here_is_not_taken_for_dead() -> None:
    """Only a holder whose process is gone (or a zombie) has its flow run marked crashed at takeover."""
    import os
    import socket
    import subprocess

    from flows.health_check import running_here

    host = socket.gethostname()
    assert running_here(f"{host}:{os.getpid()}:abc"), "this process runs"
    child = subprocess.Popen(["sleep", "0"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)     # exited, not reaped: a zombie
    assert not running_here(f"{host}:{child.pid}:abc"), "a zombie is dead"
    child.wait()
    assert not running_here(f"{host}:{child.pid}:abc"), "reaped: dead"
    assert not running_here(f"elsewhere:{os.getpid()}:abc"), "another machine's holder cannot be checked"

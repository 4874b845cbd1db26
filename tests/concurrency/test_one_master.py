"""One master: the database holds at most one ``master`` row and every writer decides on locked rows.

Issue 19, point 4: ``apply`` during a failover left two masters on PostgreSQL (apply cleared only the
masters it had read; the election wrote from an unlocked read).
"""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from farmkeeper import failover, health, hooks, inventory
from farmkeeper.farmfile import FarmFile
from farmkeeper.models import Server, ServerState
from farmkeeper.status import farm_status
from tests.concurrency.conftest import Inventory, Pause, Worker, apply_spec, farm_spec, wait_blocked_on_lock


def masters(inv: Inventory) -> list[str]:
    with inv.session() as session:
        return [s["name"] for s in farm_status(session)["servers"] if s["master"]]


def probe(inv: Inventory, server: str, ok: bool) -> None:
    """A health sweep's record of one probe (down at once: ``down_after`` 0), then recovery and election."""
    with inv.session() as session:
        moved = health.apply_probe_results(session, [health.ProbeResult(server, ok, 0.0, "" if ok else "refused")],
                                           down_after_s=0)
        if any(t.transition == health.Transition.recovered for t in moved):
            failover.apply_recovery(session, server)
        failover.ensure_master(session)


def test_the_database_refuses_a_second_master(inv: Inventory, tmp_path: Path) -> None:
    apply_spec(inv, farm_spec(tmp_path))
    assert masters(inv) == ["rec1"]
    table = Server.__table__  # type: ignore[attr-defined]
    with pytest.raises(IntegrityError), inv.session() as session:
        session.execute(sa.update(table).where(table.c.name == "rec2").values(master=True))
    assert masters(inv) == ["rec1"]


def test_apply_during_a_failover_leaves_one_master(inv: Inventory, tmp_path: Path) -> None:
    """apply (declaring rec2) stopped right after reading the servers; the master rec1 dies and its
    failover elects a new master meanwhile: the failover waits for apply's locks and keeps apply's master."""
    apply_spec(inv, farm_spec(tmp_path))
    for name in ("rec2", "spare1", "spare2"):
        probe(inv, name, True)
    declares_rec2 = farm_spec(tmp_path, master="rec2")
    pause = Pause()
    with hooks.installed("apply.servers-locked", pause):
        applying = Worker(lambda: apply_spec(inv, declares_rec2), "apply")
        applying.start()
        pause.wait()

        def rec1_dies() -> None:
            probe(inv, "rec1", False)   # rec1 down: the election runs (it must wait for apply's locks)
            with inv.session() as session:
                failover.apply_failover(session, "rec1")

        dying = Worker(rec1_dies, "failover")
        dying.start()
        dying.started_work.wait()
        wait_blocked_on_lock(inv)
        assert dying.is_alive(), "the failover wrote while apply held the server rows"
        pause.release()
        applying.join_ok()
        dying.join_ok()
    assert masters(inv) == ["rec2"]


def _apply_many(url: str, specs: list[FarmFile], first: int, count: int, done: Any) -> None:
    """A process applying ``count`` farm files in turn (its own engine and connections)."""
    from farmkeeper.db import make_engine

    inv = Inventory(url, make_engine(url), "child")
    for i in range(count):
        apply_spec(inv, specs[(first + i) % 2])
        with done.get_lock():
            done.value += 1


def test_one_master_after_1000_concurrent_applies_during_failovers(inv: Inventory, tmp_path: Path) -> None:
    """Two processes apply 500 farm files each (the declared master flips between rec1 and rec2) while two
    threads fail rec1 and rec2 over and back, each failure electing a master; no writer is ever refused
    by the database (they all lock first) and the farm ends with one master, a live one."""
    specs = [farm_spec(tmp_path, master="rec1"), farm_spec(tmp_path, master="rec2")]
    apply_spec(inv, specs[0])
    for name in ("rec1", "rec2", "spare1", "spare2"):
        probe(inv, name, True)
    applies_done = threading.Event()
    failovers = itertools.count()
    ctx = multiprocessing.get_context("spawn")
    applied = ctx.Value("i", 0)

    def failing_over(server: str) -> None:
        for cycle in itertools.count(1):   # one failover and recovery per 20 applies, while they run
            while applied.value < 20 * cycle and not applies_done.is_set():
                time.sleep(0.005)
            if applies_done.is_set():
                return
            probe(inv, server, False)
            with inv.session() as session:
                failover.apply_failover(session, server)
            next(failovers)
            probe(inv, server, True)

    appliers = [ctx.Process(target=_apply_many, args=(inv.url, specs, w, 500, applied), name=f"apply-{w}")
                for w in range(2)]
    chaos = [Worker(lambda s=s: failing_over(s), f"failover-{s}") for s in ("rec1", "rec2")]
    for w in chaos:
        w.start()
    for p in appliers:
        p.start()
    try:
        for p in appliers:
            p.join(300)
    finally:
        applies_done.set()
    for w in chaos:
        w.join_ok(60)
    assert [p.exitcode for p in appliers] == [0, 0], "an apply failed (see its traceback above)"
    assert applied.value == 1000
    assert next(failovers) > 2, "the failovers did not run during the applies"
    with inv.session() as session:
        failover.ensure_master(session)   # the next health sweep
        state = {s.name: s.state for s in inventory.list_servers(session)}
    found = masters(inv)
    assert len(found) == 1, found
    assert state[found[0]] != ServerState.down

"""A copy slot held by a dead run does not stall the next copy job for the lease's 60 s (issue 19).

Prefect keeps a concurrency slot until its lease runs out (60 s at the shortest); ``copy_slot`` asks the
inventory when no slot frees in a few seconds: no live copy job means the holder is dead, so the job goes on.
A live job holding the slot is waited for.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

from farmkeeper.db import get_engine, session_scope
from farmkeeper.models import CopyJob, CopyJobState, utcnow
from tasks.copyjobs import COPY_LIMIT, copy_slot

pytestmark = pytest.mark.usefixtures("prefect_api", "inventory_url")


def _limit_of_one_held_by_a_run_that_never_releases() -> uuid.UUID:
    with get_client(sync_client=True) as client:
        with contextlib.suppress(Exception):        # not there yet
            client.delete_global_concurrency_limit_by_name(COPY_LIMIT)
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=COPY_LIMIT, limit=1))
        response = client.increment_concurrency_slots_with_lease(names=[COPY_LIMIT], slots=1, mode="concurrency",
                                                                 lease_duration=60)
        return uuid.UUID(response.json()["lease_id"])


@flow
def _enter_slot(entered: threading.Event) -> None:
    with copy_slot(1, wait_s=1.0):
        entered.set()


def test_a_dead_runs_slot_does_not_hold_the_next_job() -> None:
    _limit_of_one_held_by_a_run_that_never_releases()
    entered = threading.Event()
    started = time.monotonic()
    _enter_slot(entered)
    assert entered.is_set()
    assert time.monotonic() - started < 30, "went on long before the dead run's 60 s lease ran out"


def test_a_live_jobs_slot_is_waited_for() -> None:
    lease = _limit_of_one_held_by_a_run_that_never_releases()
    with session_scope(get_engine()) as session:      # the holder: a running job whose owner (this process) lives
        now = utcnow()
        session.add(CopyJob(state=CopyJobState.running, created_at=now, updated_at=now, cameras=["cam-a"],
                            target="rec1",
                            params={"owner": {"host": socket.gethostname(), "pid": os.getpid()}}))
    entered = threading.Event()
    worker = threading.Thread(target=_enter_slot, args=(entered,), daemon=True)
    worker.start()
    assert not entered.wait(4.0), "entered while a live copy job held the only slot"
    with get_client(sync_client=True) as client:
        client.release_concurrency_slots_with_lease(lease)
    assert entered.wait(30.0), "entered once the live job released its slot"
    worker.join(30.0)

"""Claims on a camera's footage on a volume: one live owner, taken over when the owner is dead."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import sqlalchemy as sa

from farmkeeper import claims
from farmkeeper.models import FootageClaim, utcnow
from tests.concurrency.conftest import Inventory

KEY = ("cam-1", "spare1", "D")


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_one_live_owner_per_camera_volume(inv: Inventory) -> None:
    swap = claims.Owner.here("copy-job-1")
    sweep = claims.Owner.here("retention-r1")
    with inv.session() as s:
        assert claims.take(s, swap, [KEY, ("cam-2", "spare1", "D")]) == {}
    with inv.session() as s:
        assert claims.take(s, sweep, [KEY, ("cam-3", "spare1", "D")]) == {KEY: "copy-job-1"}
        assert claims.claimed_by_others(s, "retention-r1", "spare1", "D") == {"cam-1": "copy-job-1",
                                                                           "cam-2": "copy-job-1"}
    with inv.session() as s:
        assert claims.take(s, swap, [KEY]) == {}, "the owner renews its own claim"
        claims.release(s, "copy-job-1")
    with inv.session() as s:
        assert claims.take(s, sweep, [KEY]) == {}
        assert claims.live_owners(s) == {"retention-r1"}


def test_a_dead_owners_claim_is_taken_over_and_its_rows_may_be_settled(inv: Inventory) -> None:
    killed = claims.Owner("copy-job-7", claims.Owner.here("x").host, dead_pid())
    with inv.session() as s:
        assert claims.take(s, killed, [KEY]) == {}
    with inv.session() as s:
        may_settle = claims.settleable(s, "retention-r2")
        assert may_settle("copy-job-7") and may_settle("retention-r2")
        assert claims.take(s, claims.Owner.here("retention-r2"), [KEY]) == {}
        row = s.get(FootageClaim, KEY)
        assert row is not None and row.owner == "retention-r2"


def test_another_hosts_claim_lives_as_long_as_its_lease(inv: Inventory) -> None:
    remote = claims.Owner("copy-job-9", "another-host", 4242)
    with inv.session() as s:
        claims.take(s, remote, [KEY], ttl_s=600)
    with inv.session() as s:
        assert claims.take(s, claims.Owner.here("retention-r3"), [KEY]) == {KEY: "copy-job-9"}
        assert not claims.settleable(s, "retention-r3")("copy-job-9"), "a live owner settles its own rows"
        table = FootageClaim.__table__  # type: ignore[attr-defined]
        s.execute(sa.update(table).values(until=utcnow() - timedelta(seconds=1)))   # its lease ran out
    with inv.session() as s:
        assert claims.take(s, claims.Owner.here("retention-r3"), [KEY]) == {}

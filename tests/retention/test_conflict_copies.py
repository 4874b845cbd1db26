"""Conflict copies (``<stamp>~<server>.<ext>``) are footage: age rules, floors and holds apply to them."""

from __future__ import annotations

from datetime import timedelta

from farmkeeper.layout import FOOTAGE_RE, conflict_name, parse_footage
from farmkeeper.retention import HoldRange, plan_volume
from farmkeeper.storage.base import Space
from tests.retention.helpers import NOW, camera, listing_of, policy, series

T = NOW.timestamp()


def test_the_grammar_reads_a_conflict_copy_as_its_camera_and_time() -> None:
    rel = series("cam-1", 0, NOW - timedelta(days=3), 1)[0]
    copy = conflict_name(rel, "spare-1.hq")
    fp = parse_footage(copy)
    assert (fp.camera, fp.stream, fp.start, fp.copy_of) == ("cam-1", 0, NOW - timedelta(days=3), "spare-1.hq")
    assert fp.relpath == copy and FOOTAGE_RE.match(copy)
    assert not FOOTAGE_RE.match(copy.replace("~", "~~"))


def test_age_rules_and_floors_reclaim_conflict_copies() -> None:
    old = series("cam-1", 0, NOW - timedelta(days=10), 3)
    new = series("cam-1", 0, NOW - timedelta(days=1), 3)
    copies = [conflict_name(p, "rec2") for p in old + new]
    listing = listing_of(old + new + copies)
    assert listing.other_files == 0                       # nothing left out as "not footage"
    plan = plan_volume(listing, policy([camera("cam-1")], default_days=7), space=None, now=T, force=True)
    deleted = set(plan.deletions["relpath"])
    assert {conflict_name(p, "rec2") for p in old} <= deleted and not deleted & {conflict_name(p, "rec2")
                                                                                 for p in new}
    floor = plan_volume(listing_of(new + copies[3:]), policy([camera("cam-1")], limit=False, min_free=250),
                        space=Space(1000, 0), now=T, force=True)
    # oldest first: the first segment and its conflict copy (same start) go before newer ones
    assert set(floor.deletions["relpath"]) == {new[0], copies[3], new[1]}


def test_holds_keep_conflict_copies() -> None:
    old = series("cam-1", 0, NOW - timedelta(days=10), 3)
    copies = [conflict_name(p, "rec2") for p in old]
    start = NOW - timedelta(days=10)
    hold = HoldRange("cam-1", start.timestamp(), (start + timedelta(minutes=5)).timestamp())
    plan = plan_volume(listing_of(old + copies), policy([camera("cam-1")], default_days=7), space=None, now=T,
                       holds=[hold], force=True)
    kept = set(old + copies) - set(plan.deletions["relpath"])
    assert kept == {old[0], copies[0]} and plan.kept["held"]["files"] == 2

"""Retention as the law reads it: configured metadata days, spans that end at a segment's close, floors first."""

from __future__ import annotations

from datetime import timedelta

from farmkeeper.layout import parse_footage, video_path
from farmkeeper.retention import HoldRange, plan_volume, read_listing, segment_ends
from farmkeeper.storage.base import Entry, Space
from tests.retention.helpers import NOW, camera, days_back, listing_of, policy, series

T = NOW.timestamp()
DAY = 86400.0
BIG = Space(10**12, 10**11)


def _entry(rel: str, close_after_s: float | None, size: int = 100) -> Entry:
    start = parse_footage(rel).timestamp
    return Entry(rel, size, start + close_after_s if close_after_s is not None else 0.0)


def test_metadata_kept_exactly_the_configured_days_even_below_the_video_days() -> None:
    """The issue's case: metadata days 10, a stream kept 20 days: 19-day-old metadata goes."""
    meta = days_back("cam-b", None, 21)
    cams = [camera("cam-b", streams=2, days="5;20")]
    plan = plan_volume(listing_of(meta), policy(cams, keep_meta=True, meta_days=10), space=BIG, now=T, force=True)
    gone = {p for p in meta if parse_footage(p).timestamp < T - 10 * DAY}
    assert set(plan.deletions["relpath"]) == gone
    nineteen = [p for p in meta if 19 * DAY <= T - parse_footage(p).timestamp < 19.1 * DAY]
    assert nineteen and set(nineteen) <= gone


def test_a_segment_ends_at_its_close_so_a_later_hold_does_not_keep_it() -> None:
    old = video_path("cam-1", 0, NOW - timedelta(days=10)).relpath       # closed 10 minutes after its start
    late = video_path("cam-1", 0, NOW - timedelta(days=2)).relpath       # the next segment, days later
    hold = [HoldRange("cam-1", T - 9 * DAY, T - 8 * DAY)]                 # between the two
    listing = read_listing([_entry(old, 600), _entry(late, 600)])
    plan = plan_volume(listing, policy([camera("cam-1")], default_days=7), space=BIG, now=T, holds=hold, force=True)
    assert set(plan.deletions["relpath"]) == {old}
    assert plan.kept["held"]["files"] == 0
    # a hold over the segment itself still keeps it, older than its limit or not
    inside = [HoldRange("cam-1", T - 10 * DAY + 300, T - 10 * DAY + 301)]
    assert plan_volume(listing, policy([camera("cam-1")], default_days=7), space=BIG, now=T, holds=inside,
                       force=True).deletions.empty


def test_segment_end_is_the_close_bounded_by_the_next_start() -> None:
    rels = series("cam-1", 0, NOW - timedelta(hours=3), 3, step=timedelta(hours=1))
    starts = [parse_footage(r).timestamp for r in rels]
    listing = read_listing([_entry(rels[0], 600),          # closed early: ends at its close
                            _entry(rels[1], 5 * 3600),     # mtime after the next start: bounded by it
                            _entry(rels[2], None)])        # no usable mtime: start + typical length (1 h)
    ends = dict(zip(listing.frame["relpath"], segment_ends(listing.frame), strict=True))
    assert ends[rels[0]] == starts[0] + 600
    assert ends[rels[1]] == starts[2]
    assert ends[rels[2]] == starts[2] + 3600


def test_floors_delete_a_cameras_oldest_footage_even_all_of_it() -> None:
    """cam-old recorded here before it moved away: the floor takes its footage first, the camera guard allows it."""
    gone = series("cam-old", 0, NOW - timedelta(days=3), 3)
    recent = series("cam-new", 0, NOW - timedelta(hours=20), 40)
    cams = [camera("cam-old"), camera("cam-new")]
    plan = plan_volume(listing_of(gone + recent), policy(cams, limit=False, min_free=10_300),
                       space=Space(10**6, 10_000), now=T)
    assert not plan.blocked, plan.alerts
    assert set(plan.deletions["relpath"]) == set(gone) and set(plan.deletions["rule"]) == {"min_free"}
    # the age rules wiping a camera are still guarded
    aged = plan_volume(listing_of(gone + recent), policy(cams, default_days=2), space=BIG, now=T)
    assert aged.blocked and "cam-old" in aged.alerts[0][1]


def test_percentage_guard_still_blocks_floors_and_alerts_at_once() -> None:
    paths = series("cam-1", 0, NOW - timedelta(hours=10), 10)
    plan = plan_volume(listing_of(paths), policy([camera("cam-1")], limit=False, min_free=10_700),
                       space=Space(10**6, 10_000), now=T)
    assert plan.blocked and plan.deletions["rule"].tolist() == ["min_free"] * 7
    kinds = [k for k, _ in plan.alerts]
    assert kinds == ["purge_guard", "floors_blocked"]
    assert "stays below its floor" in plan.alerts[1][1]

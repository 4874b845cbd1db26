"""The retention planner on pure data: every rule alone and together, holds at the edges, guards."""

from __future__ import annotations

from datetime import timedelta

import pytest

from farmkeeper.retention import HoldRange, plan_volume, read_listing
from farmkeeper.storage.base import Entry, Space
from tests.retention.helpers import NOW, STEP, camera, days_back, listing_of, policy, series

T = NOW.timestamp()
BIG = Space(10**12, 10**11)


def planned(plan, rule: str | None = None) -> set[str]:  # type: ignore[no-untyped-def]
    d = plan.deletions
    return set(d["relpath"] if rule is None else d[d["rule"] == rule]["relpath"])


def older_than(paths: list[str], days: float) -> set[str]:
    from farmkeeper.layout import parse_footage

    return {p for p in paths if parse_footage(p).timestamp < T - days * 86400}


def test_global_days_delete_exactly_older_video() -> None:
    paths = days_back("cam-1", 0, 10)
    plan = plan_volume(listing_of(paths), policy([camera("cam-1")], default_days=7), space=BIG, now=T)
    assert planned(plan, "age") == older_than(paths, 7)
    assert plan.totals()["age"] == {"files": len(older_than(paths, 7)), "bytes": 100 * len(older_than(paths, 7))}
    assert not plan.blocked and plan.alerts == []


def test_limit_off_deletes_nothing_by_age() -> None:
    paths = days_back("cam-1", 0, 10) + days_back("cam-1", None, 10)
    plan = plan_volume(listing_of(paths), policy([camera("cam-1")], limit=False), space=BIG, now=T)
    assert planned(plan) == set()


def test_camera_override_and_per_stream_days() -> None:
    a = days_back("cam-a", 0, 6)
    b0, b1 = days_back("cam-b", 0, 6), days_back("cam-b", 1, 6)
    cams = [camera("cam-a", days="2"), camera("cam-b", streams=2, days="3;5")]
    plan = plan_volume(listing_of(a + b0 + b1), policy(cams, default_days=30), space=BIG, now=T, force=True)
    assert planned(plan, "age") == older_than(a, 2) | older_than(b0, 3) | older_than(b1, 5)


@pytest.mark.parametrize(("keep_meta", "meta_days", "expected_days"), [
    (False, 30, 5),    # metadata goes with the camera's longest video retention (3;5 -> 5)
    (True, 8, 8),      # kept longer: default_metadata_days
    (True, 2, 2),      # the configured days, even when shorter than the video's (apply warns)
])
def test_metadata_days(keep_meta: bool, meta_days: int, expected_days: int) -> None:
    meta = days_back("cam-b", None, 12)
    video = days_back("cam-b", 1, 1)
    cams = [camera("cam-b", streams=2, days="3;5")]
    plan = plan_volume(listing_of(meta + video), policy(cams, keep_meta=keep_meta, meta_days=meta_days),
                       space=BIG, now=T, force=True)
    assert planned(plan, "metadata_age") == older_than(meta, expected_days)
    assert planned(plan, "age") == set()


def _hold(cam: str, start: float, end: float) -> HoldRange:
    return HoldRange(cam, start, end)


def test_holds_exact_edges() -> None:
    paths = days_back("cam-1", 0, 10)  # 10-minute segments
    step = STEP.total_seconds()
    old = sorted(older_than(paths, 7))
    from farmkeeper.layout import parse_footage

    s = [parse_footage(p).timestamp for p in old]
    holds = [
        _hold("cam-1", s[10] + step / 2, s[10] + step / 2 + 1),  # starts mid-segment: protects segment 10 only
        _hold("cam-1", s[20] - 60, s[20]),                        # ends exactly at segment 20's start: 19 only
        _hold("cam-1", s[30] + step, s[31] + 1),                  # starts exactly at 31's start: 31 only
        _hold("cam-2", s[0], s[-1]),                              # another camera: nothing here
    ]
    plan = plan_volume(listing_of(paths), policy([camera("cam-1"), camera("cam-2")]), space=BIG, now=T,
                       holds=holds)
    kept = set(old) - planned(plan)
    assert kept == {old[10], old[19], old[31]}
    assert plan.kept["held"]["files"] == 3


def test_hold_on_newest_segment_uses_typical_length() -> None:
    paths = series("cam-1", 0, NOW - timedelta(days=9), 3)
    from farmkeeper.layout import parse_footage

    last = parse_footage(paths[-1]).timestamp
    inside = [_hold("cam-1", last + STEP.total_seconds() - 1, last + 10_000)]
    outside = [_hold("cam-1", last + STEP.total_seconds(), last + 10_000)]
    cams = [camera("cam-1")]
    assert paths[-1] not in planned(plan_volume(listing_of(paths), policy(cams), space=BIG, now=T, holds=inside,
                                                force=True))
    assert paths[-1] in planned(plan_volume(listing_of(paths), policy(cams), space=BIG, now=T, holds=outside,
                                            force=True))


def test_unknown_cameras_and_non_layout_left_alone() -> None:
    paths = days_back("cam-1", 0, 10) + days_back("ghost", 0, 10)
    junk = ["video/cam-1/0/notes.txt", "thumbs.db", "video/cam-1/0/2024-01-01/00/20240101T010000Z.mkv",
            "meta/cam-1/2024-01-01/00/20240101T000000Z.json.bak", "recycle/video/cam-1/0/x.mkv"]
    plan = plan_volume(listing_of(paths + junk), policy([camera("cam-1")]), space=BIG, now=T)
    assert all(p.startswith("video/cam-1/") for p in planned(plan))
    assert plan.unknown_cameras == {"ghost": len(days_back("ghost", 0, 10))}
    assert plan.other_files == len(junk)
    assert not planned(plan) & set(junk)


def test_the_floors_never_take_footage_of_unknown_cameras() -> None:
    """Below a free-space floor the oldest footage goes first, but never an unknown camera's (however old):
    the floor stays unmet and the alert says what is kept."""
    ghost = days_back("ghost", 0, 10, now=NOW - timedelta(days=20))
    paths = days_back("cam-1", 0, 2) + ghost
    plan = plan_volume(listing_of(paths), policy([camera("cam-1")], min_free=10**6 + 100 * 400),
                       space=Space(10**9, 10**6), now=T, force=True)
    assert not planned(plan) & set(ghost) and all(p.startswith("video/cam-1/") for p in planned(plan))
    assert not plan.floors_met and "unknown cameras ghost" in plan.alerts[0][1]


def test_in_flight_copy_paths_skipped() -> None:
    paths = days_back("cam-1", 0, 10)
    old = sorted(older_than(paths, 7))
    plan = plan_volume(listing_of(paths), policy([camera("cam-1")]), space=BIG, now=T, protected=set(old[:5]))
    assert planned(plan) == set(old[5:])
    assert plan.kept["in_flight"]["files"] == 5


def test_min_free_floor_oldest_first_across_cameras_video_before_meta() -> None:
    a = series("cam-a", 0, NOW - timedelta(hours=10), 60)
    b = series("cam-b", 0, NOW - timedelta(hours=9, minutes=55), 60)
    m = series("cam-a", None, NOW - timedelta(hours=20), 60)
    cams = [camera("cam-a"), camera("cam-b")]
    space = Space(1_000_000, 10_000)
    plan = plan_volume(listing_of(a + b + m), policy(cams, min_free=12_050), space=space, now=T, force=True)
    # 2050 bytes short -> 21 files of 100 bytes, alternating a/b, oldest first; no metadata
    expected = sorted(a[:11] + b[:10])
    assert sorted(planned(plan, "min_free")) == expected
    assert plan.floor_rule == "min_free" and plan.expected_free == 12_100
    assert plan.totals()["min_free"]["files"] == 21


def test_percent_floor_and_metadata_after_all_video() -> None:
    v = series("cam-a", 0, NOW - timedelta(hours=2), 10)
    m = series("cam-a", None, NOW - timedelta(days=3), 10)
    space = Space(100_000, 4_000)             # 4% free, floor 5% -> 1000 bytes short
    plan = plan_volume(listing_of(v + m), policy([camera("cam-a")], limit=False, min_free_percent=5),
                       space=space, now=T, force=True)
    assert plan.floor_rule == "min_free_percent"
    assert set(planned(plan, "min_free_percent")) == set(v)   # exactly 1000 bytes of video, no metadata
    plan2 = plan_volume(listing_of(v + m), policy([camera("cam-a")], limit=False, min_free_percent=5.5),
                        space=space, now=T, force=True)
    assert set(planned(plan2)) == set(v) | set(m[:5])


def test_age_rules_count_towards_floors() -> None:
    paths = days_back("cam-1", 0, 10)
    old = older_than(paths, 7)
    space = Space(10**9, 10**6)
    plan = plan_volume(listing_of(paths), policy([camera("cam-1")], min_free=10**6 + 100 * len(old)),
                       space=space, now=T)
    assert planned(plan) == old and plan.floor_rule is None


def test_holds_blocking_floors_stop_floor_deletion_and_alert() -> None:
    paths = series("cam-1", 0, NOW - timedelta(hours=5), 30)
    from farmkeeper.layout import parse_footage

    hold = [_hold("cam-1", parse_footage(paths[0]).timestamp, parse_footage(paths[20]).timestamp)]
    plan = plan_volume(listing_of(paths), policy([camera("cam-1")], min_free=5000), space=Space(10**6, 2000),
                       now=T, holds=hold, force=True)
    assert planned(plan) == set()
    assert not plan.floors_met
    assert [k for k, _ in plan.alerts] == ["holds_block_floors"]
    assert "min_free" in plan.alerts[0][1] and "held" in plan.alerts[0][1]


def test_purge_guard_fraction_and_whole_camera() -> None:
    paths = days_back("cam-1", 0, 10) + days_back("cam-2", 0, 10)
    cams = [camera("cam-1", days="2"), camera("cam-2")]
    plan = plan_volume(listing_of(paths), policy(cams), space=BIG, now=T)
    assert plan.blocked and [k for k, _ in plan.alerts] == ["purge_guard"]
    assert list(plan.batches(100)) == []
    forced = plan_volume(listing_of(paths), policy(cams), space=BIG, now=T, force=True)
    assert not forced.blocked and len(forced.deletions) == len(plan.deletions)
    assert [k for k, _ in forced.alerts] == ["purge_guard_forced"]
    # every file of a camera (small next to the volume) also trips the guard
    gone = series("cam-3", 0, NOW - timedelta(days=40), 3)
    whole = plan_volume(listing_of(days_back("cam-1", 0, 3) + gone), policy([camera("cam-1"), camera("cam-3")]),
                        space=BIG, now=T)
    assert whole.blocked and "cam-3" in whole.alerts[0][1]


@pytest.mark.parametrize("share", ["bytes", "files"])
def test_purge_guard_counts_bytes_and_files_each(share: str) -> None:
    """More than half of the volume by bytes only (a few large files) or by files only (many tiny ones) trips
    the guard on its own."""
    doomed = days_back("cam-1", 0, 10, step=STEP if share == "bytes" else STEP / 8)   # 80 % older than 2 days
    kept = days_back("cam-2", 0, 10, step=STEP / 8 if share == "bytes" else STEP)
    big, tiny = (doomed, kept) if share == "bytes" else (kept, doomed)
    listing = read_listing([*(Entry(r, 10_000, 0.0) for r in big), *(Entry(r, 1, 0.0) for r in tiny)])
    plan = plan_volume(listing, policy([camera("cam-1", days="2"), camera("cam-2")]), space=BIG, now=T)
    files_share = len(plan.deletions) / plan.footage_files
    bytes_share = int(plan.deletions["size"].sum()) / plan.footage_bytes
    assert (files_share < 0.5 < bytes_share) if share == "bytes" else (bytes_share < 0.5 < files_share)
    assert plan.blocked and [k for k, _ in plan.alerts] == ["purge_guard"] and list(plan.batches(100)) == []


def test_shortfall_reported_when_floors_cut_into_rule() -> None:
    paths = days_back("cam-7", 0, 7)
    space = Space(10**7, 1000)
    plan = plan_volume(listing_of(paths), policy([camera("cam-7")], min_free=100 * 400 + 1000), space=space,
                       now=T)
    usage = plan.cameras[0]
    assert usage.floor_deleted and usage.in_shortfall(False)
    assert usage.shortfall_text().startswith("cam-7 holds 4.2 of 7 days")

"""Property tests of the planner against brute-force oracles."""

from __future__ import annotations

import statistics
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farmkeeper.layout import meta_path, parse_footage, try_parse_footage, video_path
from farmkeeper.retention import DEFAULT_SEGMENT_S, HoldRange, plan_volume, read_listing
from farmkeeper.storage.base import Entry, Space
from tests.retention.helpers import NOW, camera, policy

T = NOW.timestamp()
CAMS = ["cam-a", "cam-b", "ghost"]
KNOWN = [camera("cam-a", streams=2, days="2;5"), camera("cam-b")]

footage = st.builds(
    lambda cam, stream, secs, size, ext: (
        (video_path(cam, stream, NOW - timedelta(seconds=secs), ext) if stream is not None
         else meta_path(cam, NOW - timedelta(seconds=secs), ext)).relpath, size),
    st.sampled_from(CAMS), st.one_of(st.none(), st.integers(0, 2)),
    st.integers(0, 12 * 86400).map(lambda s: s - s % 60), st.integers(1, 500), st.sampled_from(["mkv", "json"]))
junk = st.tuples(st.one_of(
    st.text(st.sampled_from("videomta/-_0123456789TZ.x"), min_size=1, max_size=60),
    st.builds(lambda p: "video/cam-a/0/" + p, st.text(st.sampled_from("0123456789-/TZ.mkv"), max_size=40)),
), st.integers(1, 500)).filter(lambda e: not e[0].startswith("/") and "//" not in e[0] and not e[0].endswith("/"))
holds = st.lists(st.builds(lambda cam, a, length: HoldRange(cam, T - a, T - a + length),
                           st.sampled_from(CAMS), st.integers(0, 12 * 86400), st.integers(1, 6 * 3600)), max_size=4)


def _ends(paths: list[str], closes: dict[str, float]) -> dict[str, float]:
    """Oracle: a file closed after its start ends at min(close, next distinct start of its series); one
    without a close at the next distinct start, else start + the median positive gap."""
    series: dict[tuple[str, int | None], list[float]] = {}
    parsed = {p: parse_footage(p) for p in paths}
    for fp in parsed.values():
        series.setdefault((fp.camera, fp.stream), []).append(fp.timestamp)
    out = {}
    for p, fp in parsed.items():
        starts = sorted(set(series[(fp.camera, fp.stream)]))
        later = [s for s in starts if s > fp.timestamp]
        all_starts = sorted(series[(fp.camera, fp.stream)])
        nxt_gaps = []
        for i, a in enumerate(all_starts[:-1]):
            nxt = [s for s in all_starts[i + 1:] if s > a]
            if nxt:
                nxt_gaps.append(nxt[0] - a)
        typical = statistics.median(nxt_gaps) if nxt_gaps else DEFAULT_SEGMENT_S
        out[p] = later[0] if later else fp.timestamp + typical
        close = closes.get(p, 0.0)
        if close > fp.timestamp:
            out[p] = min(close, later[0]) if later else close
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(footage, max_size=80, unique_by=lambda e: e[0]), st.lists(junk, max_size=10), holds,
       st.integers(0, 60_000), st.sampled_from([0, 5, 30]), st.booleans(),
       st.lists(st.one_of(st.none(), st.integers(-60, 4 * 86400)), min_size=80, max_size=80))
def test_planner_properties(files: list[tuple[str, int]], junk_files: list[tuple[str, int]], hold: list[HoldRange],
                            min_free: int, pct: float, limit: bool, close_after: list[int | None]) -> None:
    closes = {p: parse_footage(p).timestamp + off for (p, _), off in zip(files, close_after, strict=False)
              if off is not None and try_parse_footage(p) is not None}
    entries = [Entry(p, s, closes.get(p, 0.0)) for p, s in files + junk_files]
    listing = read_listing(entries)
    space = Space(1_000_000, 20_000)
    protected = {p for i, (p, _) in enumerate(files) if i % 7 == 3}
    pol = policy(KNOWN, limit=limit, min_free=min_free, min_free_percent=pct)
    plan = plan_volume(listing, pol, space=space, now=T, holds=hold, protected=protected, force=True)
    chosen = dict(zip(plan.deletions["relpath"], plan.deletions["rule"], strict=True))
    sizes = {p: s for p, s in files}

    # only layout files of known cameras, never in flight
    layout = {p for p, _ in files + junk_files if try_parse_footage(p) is not None}
    assert set(chosen) <= layout
    assert all(parse_footage(p).camera in ("cam-a", "cam-b") for p in chosen)
    assert not set(chosen) & protected

    # never a held file (oracle intervals)
    ends = _ends(sorted(layout), closes)
    held = {p for p in layout for h in hold
            if parse_footage(p).camera == h.camera and parse_footage(p).timestamp < h.end and ends[p] > h.start}
    assert not set(chosen) & held

    eligible = {p for p in layout if parse_footage(p).camera != "ghost"} - held - protected

    # age: exactly the eligible files older than their rule
    def keep_days(p: str) -> float | None:
        fp = parse_footage(p)
        if not limit:
            return None
        if fp.camera == "cam-a":
            return 5 if fp.stream is None else (2, 5, 5)[fp.stream]
        return 7
    old = {p for p in eligible if (d := keep_days(p)) is not None and parse_footage(p).timestamp < T - d * 86400}
    assert {p for p, r in chosen.items() if r in ("age", "metadata_age")} == old

    # floors: oldest first, metadata only after every eligible video file
    floor = {p for p, r in chosen.items() if r in ("min_free", "min_free_percent")}
    rest = eligible - set(chosen)
    if floor:
        key = lambda p: (parse_footage(p).timestamp, p)  # noqa: E731
        fv = [p for p in floor if parse_footage(p).kind == "video"]
        rv = [p for p in rest if parse_footage(p).kind == "video"]
        if fv and rv:
            assert max(map(key, fv)) < min(map(key, rv))
        if any(parse_footage(p).kind == "meta" for p in floor):
            assert not rv
        freed = sum(sizes[p] for p in chosen)
        need = max(min_free - space.free, -(-pct * space.total // 100) - space.free)
        assert freed >= need
        assert freed - max(sizes[p] for p in floor) < need  # no more than needed

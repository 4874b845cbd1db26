"""Property tests of the pure ownership rule and the layout checks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from farmkeeper.ownership import decide_home
from farmkeeper.validation import check_layout, clock_skew

SERVERS = ["rec1", "rec2", "rec3", "spare1"]
counts_st = st.dictionaries(st.sampled_from(SERVERS), st.integers(0, 10_000), max_size=4)
margin_st = st.floats(0, 2, allow_nan=False)


@given(counts_st, st.sampled_from(SERVERS), st.sampled_from(SERVERS), margin_st,
       st.sets(st.sampled_from(SERVERS)))
def test_pin_always_wins(counts: dict[str, int], home: str, pin: str, margin: float, unknown: set[str]) -> None:
    d = decide_home("cam", home, counts, margin=margin, pinned=pin, unknown=unknown)
    assert d.new_home == pin


@given(counts_st, st.sampled_from(SERVERS), margin_st)
def test_home_changes_only_beyond_margin(counts: dict[str, int], home: str, margin: float) -> None:
    d = decide_home("cam", home, counts, margin=margin)
    home_n = counts.get(home, 0)
    if d.changed:
        assert counts[d.new_home] > (1 + margin) * home_n
        assert counts[d.new_home] == max(counts.values())
    else:
        best_n = max(counts.values(), default=0)
        assert best_n == 0 or best_n <= (1 + margin) * home_n


@given(counts_st, st.sampled_from(SERVERS), margin_st, st.sets(st.sampled_from(SERVERS)))
def test_unknown_home_or_no_files_keeps_home(counts: dict[str, int], home: str, margin: float,
                                             unknown: set[str]) -> None:
    d = decide_home("cam", home, counts, margin=margin, unknown=unknown | {home})
    assert not d.changed
    zero = decide_home("cam", home, {s: 0 for s in counts}, margin=margin, unknown=unknown)
    assert not zero.changed


@given(counts_st, st.sampled_from(SERVERS), margin_st, st.sets(st.sampled_from(SERVERS)))
def test_unknown_challenger_never_wins(counts: dict[str, int], home: str, margin: float, unknown: set[str]) -> None:
    d = decide_home("cam", home, counts, margin=margin, unknown=unknown - {home})
    assert d.new_home == home or d.new_home not in unknown


def test_examples() -> None:
    assert decide_home("c", "rec1", {"rec1": 100, "spare1": 110}, margin=0.1).new_home == "rec1"
    assert decide_home("c", "rec1", {"rec1": 100, "spare1": 111}, margin=0.1).new_home == "spare1"
    assert decide_home("c", "rec1", {"rec1": 0, "rec2": 1}, margin=0.1).new_home == "rec2"
    tie = decide_home("c", "rec3", {"rec1": 5, "rec2": 5, "rec3": 0}, margin=0)
    assert tie.new_home == "rec1"  # equal challengers: by name


def test_layout_messages() -> None:
    findings = check_layout({"rec1": {"D", "E"}, "rec2": {"D"}, "spare1": {"D", "E"}})
    bad = {(f.server, f.requirement.value): f for f in findings if f.status == "fail"}
    assert set(bad) == {("rec2", "lun-count"), ("rec2", "drive-letters")}
    assert bad["rec2", "drive-letters"].text() == "rec2: drive E: missing — map the LUN as E: like rec1, spare1"
    assert "map the missing LUN(s) E: to rec2" in bad["rec2", "lun-count"].fix
    findings = check_layout({"rec1": {"D", "E"}, "rec2": {"D", "F"}, "spare1": {"D", "E"}})
    bad = {(f.server, f.requirement.value): f for f in findings if f.status == "fail"}
    assert set(bad) == {("rec2", "drive-letters")}
    assert "map that LUN as E: instead of F:" in bad["rec2", "drive-letters"].fix


def test_clock_skew() -> None:
    assert clock_skew(100.0, 101.0, 100.5) == 0
    assert clock_skew(100.0, 101.0, 40.0) == 60.0
    assert clock_skew(100.0, 101.0, 191.0) == 90.0


def test_apply_on_postgres_locks_and_records(postgres_url: str) -> None:
    """``apply_ownership`` on PostgreSQL: row locks, version bump, change and counts recorded; dry run is a no-op."""
    import pandas as pd
    from sqlmodel import select

    from farmkeeper.db import make_engine, migrate, session_scope
    from farmkeeper.farmfile import apply_farm_file, parse_farm_file
    from farmkeeper.models import Camera, OwnershipChange, OwnershipCount
    from farmkeeper.ownership import COLUMNS, CountResult, apply_ownership

    migrate(postgres_url)
    engine = make_engine(postgres_url)
    farm = """
servers:
  - {name: rec1, host: h1, volumes: [{drive: D}]}
  - {name: spare1, host: h2, role: redundant, volumes: [{drive: D}]}
cameras:
  - {id: c1, home: rec1}
  - {id: c2, home: rec1}
"""
    rows = [("rec1", "D", "c1", 0, "2026-01-01", 10), ("spare1", "D", "c1", 0, "2026-01-02", 30),
            ("spare1", "D", "c2", 0, "2026-01-02", 30), ("rec1", "D", "c2", 1, "2026-01-01", 28)]
    counts = CountResult(frame=pd.DataFrame(rows, columns=COLUMNS), servers=["rec1", "spare1"])
    try:
        with session_scope(engine) as session:
            apply_farm_file(session, parse_farm_file(farm))
        with session_scope(engine) as session:
            dry = apply_ownership(session, counts, dry_run=True)
        assert [d.camera for d in dry.changes] == ["c1"]
        with session_scope(engine) as session:
            assert session.exec(select(OwnershipCount)).all() == []
            outcome = apply_ownership(session, counts)
        assert [(d.camera, d.new_home) for d in outcome.changes] == [("c1", "spare1")]
        with session_scope(engine) as session:
            cams = {c.id: c for c in session.exec(select(Camera))}
            assert (cams["c1"].home, cams["c1"].version) == ("spare1", 2) and cams["c2"].home == "rec1"
            [change] = session.exec(select(OwnershipChange)).all()
            assert change.counts == {"rec1": 10, "spare1": 30}
            recorded = {(r.camera_id, r.server): r.files for r in session.exec(select(OwnershipCount))}
            assert recorded == {("c1", "rec1"): 10, ("c1", "spare1"): 30, ("c2", "spare1"): 30, ("c2", "rec1"): 28}
    finally:
        engine.dispose()


@given(counts_st, st.sampled_from(SERVERS), margin_st)
def test_non_movable_camera_keeps_its_home_whatever_the_counts(counts: dict[str, int], home: str,
                                                               margin: float) -> None:
    """A USB or analog camera records only on its server: file counts elsewhere never move its home."""
    from farmkeeper.models import Camera
    from farmkeeper.ownership import plan_ownership

    cams = [Camera(id="usb", declared_home=home, home=home, movable=False),
            Camera(id="ip", declared_home=home, home=home, movable=True)]
    usb, ip = plan_ownership(cams, {"usb": counts, "ip": counts}, servers=SERVERS, margin=margin)
    assert not usb.changed and "not movable" in usb.reason
    assert ip == decide_home("ip", home, {s: 0 for s in SERVERS} | counts, margin=margin)

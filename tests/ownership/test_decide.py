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

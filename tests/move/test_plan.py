"""The move planner and the move pin, without storage: space floors, resumed plans, pin release."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import Session, create_engine

from farmkeeper.copyjobs import PlannedFile, PlanReport
from farmkeeper.models import Camera, StorageSettings
from farmkeeper.move import MoveSelection, build_plan, floor_bytes, refusal
from farmkeeper.ownership import release_move_pins
from farmkeeper.storage import Space

GB = 10**9


def _sel(drives: tuple[str, ...] = ("D", "E")) -> MoveSelection:
    return MoveSelection("rec4", ["cam-a"], {"cam-a": "rec1"}, {"cam-a": "rec1"}, ["rec1"], [], list(drives))


def _files(n: int, size: int, drive: str = "D", server: str = "rec1") -> list[PlannedFile]:
    return [PlannedFile("cam-a", server, drive, f"video/cam-a/0/2026-11-20/10/20261120T10{i:04d}Z.mkv", size, 0.0)
            for i in range(n)]


@pytest.mark.parametrize(("total", "min_free", "percent", "floor"), [
    (100 * GB, 0, 0.0, 0),
    (100 * GB, 5 * GB, 0.0, 5 * GB),
    (100 * GB, 0, 10.0, 10 * GB),
    (100 * GB, 5 * GB, 10.0, 10 * GB),
    (100 * GB, 20 * GB, 10.0, 20 * GB),
    (101, 0, 1.0, 2),                     # rounded up: never below the floor
])
def test_floor_is_the_larger_of_both_settings(total: int, min_free: int, percent: float, floor: int) -> None:
    assert floor_bytes(total, StorageSettings(min_free_bytes=min_free, min_free_percent=percent)) == floor


@pytest.mark.parametrize(("free", "fits"), [(30 * GB, True), (10 * GB + 10 * GB, True), (20 * GB - 1, False)])
def test_fits_only_above_the_floor(free: int, fits: bool) -> None:
    storage = StorageSettings(min_free_bytes=0, min_free_percent=10.0)       # floor 10 GB of 100 GB
    plan = build_plan(_sel(("D",)), "move", _files(10, GB), PlanReport(None, "rec4"), {},
                      {"D": Space(100 * GB, free)}, storage)
    assert plan.drives[0].needed == 10 * GB and plan.drives[0].floor == 10 * GB
    assert plan.fits is fits
    assert (refusal(plan) is None) is fits


def test_files_already_on_the_target_need_no_space_and_keep_needs_none() -> None:
    files = _files(4, GB) + _files(2, GB, drive="E")
    on_target = {("D", files[0].relpath): GB, ("D", files[1].relpath): GB - 1}     # one identical, one partial
    plan = build_plan(_sel(), "move", files, PlanReport(None, "rec4"), on_target,
                      {"D": Space(10 * GB, 4 * GB), "E": "cannot open \\\\rec4\\DATAE"}, StorageSettings())
    d, e = plan.drives
    assert (d.needed, d.files, d.fits) == (3 * GB, 3, True)
    assert e.needed == 2 * GB and e.free is None and not e.fits and "free space unknown" in e.describe()
    assert plan.rows[0].at_target == 1 and plan.files == 6 and plan.bytes == 6 * GB
    keep = build_plan(_sel(), "keep", files, PlanReport(None, "rec4"), {}, {"D": Space(10 * GB, 0)},
                      StorageSettings(min_free_bytes=GB))
    assert keep.needed == 0 and keep.fits and refusal(keep) is None and keep.holding == ["rec1"]


@given(sizes=st.lists(st.integers(0, 10**12), max_size=30), free=st.integers(0, 10**13),
       total=st.integers(1, 10**13), min_free=st.integers(0, 10**12), percent=st.floats(0, 99))
def test_a_plan_that_fits_leaves_the_floor_free(sizes: list[int], free: int, total: int, min_free: int,
                                                percent: float) -> None:
    files = [PlannedFile("cam-a", "rec1", "D", f"video/cam-a/0/2026-11-20/10/{i}.mkv", s, 0.0)
             for i, s in enumerate(sizes)]
    storage = StorageSettings(min_free_bytes=min_free, min_free_percent=percent)
    plan = build_plan(_sel(("D",)), "move", files, PlanReport(None, "rec4"), {}, {"D": Space(total, free)}, storage)
    if plan.fits:
        assert free - sum(sizes) >= floor_bytes(total, storage) or not sum(sizes)
    else:
        assert free - sum(sizes) < floor_bytes(total, storage)


def _cam(pin: str | None, reason: str | None) -> Camera:
    return Camera(id="cam-a", declared_home="rec1", home=pin or "rec1", current=pin or "rec1", pinned_home=pin,
                  pin_reason=reason)


@pytest.mark.parametrize(("counts", "reason", "released"), [
    ({"rec4": 100, "rec1": 0}, "move", True),           # all footage moved: the counts agree
    ({"rec4": 100, "rec1": 105}, "move", True),         # within the margin: the rule keeps rec4
    ({"rec4": 10, "rec1": 500}, "move", False),         # footage kept on rec1: the pin holds
    ({"rec4": 0, "rec1": 0}, "move", False),            # nothing on the target yet
    ({"rec4": 100, "rec1": 0}, None, False),            # an operator pin is never released
])
def test_move_pin_released_when_the_counts_agree(counts: dict[str, int], reason: str | None,
                                                 released: bool) -> None:
    cam = _cam("rec4", reason)
    with Session(create_engine("sqlite://")) as session:
        out = release_move_pins(session, [cam], {"cam-a": counts}, counted=["rec1", "rec4"], unknown=[],
                                margin=0.1)
    assert (out == ["cam-a"]) is released
    assert (cam.pinned_home is None) is released and cam.home == "rec4"


def test_move_pin_kept_while_the_target_cannot_be_counted() -> None:
    cam = _cam("rec4", "move")
    with Session(create_engine("sqlite://")) as session:
        assert release_move_pins(session, [cam], {"cam-a": {"rec4": 50}}, counted=["rec1"], unknown=["rec4"],
                                 margin=0.1) == []
    assert cam.pinned_home == "rec4"

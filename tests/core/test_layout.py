"""Footage layout: build and parse relative paths, map Windows paths to shares and back, reject escapes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from farmkeeper.errors import SpecError
from farmkeeper.layout import (
    FootagePath,
    from_share,
    meta_path,
    parse_footage,
    parse_unc,
    safe_relpath,
    to_share,
    video_path,
)

moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)).map(
    lambda d: d.replace(microsecond=0, tzinfo=UTC))
cameras = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)


def test_video_layout() -> None:
    fp = video_path("cam-001", 1, datetime(2026, 11, 25, 14, 3, 7, tzinfo=UTC))
    assert fp.relpath == "video/cam-001/1/2026-11-25/14/20261125T140307Z.mkv"
    assert meta_path("cam-001", fp.start).relpath == "meta/cam-001/2026-11-25/14/20261125T140307Z.json"


@given(cameras, st.integers(min_value=0, max_value=15), moments)
def test_video_round_trip(camera: str, stream: int, moment: datetime) -> None:
    fp = video_path(camera, stream, moment)
    assert parse_footage(fp.relpath) == fp


@given(cameras, moments)
def test_meta_round_trip(camera: str, moment: datetime) -> None:
    fp = meta_path(camera, moment)
    assert parse_footage(fp.relpath) == fp and fp.stream is None


def test_naive_and_other_zone_times_become_utc() -> None:
    from datetime import timedelta, timezone

    local = datetime(2026, 1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    assert video_path("c", 0, local).relpath == "video/c/0/2025-12-31/23/20251231T230000Z.mkv"


@pytest.mark.parametrize("relpath", [
    "video/cam/0/2026-11-25/14/20261125T140307Z",          # no extension
    "video/cam/0/2026-11-25/15/20261125T140307Z.mkv",      # hour folder mismatch
    "video/cam/0/2026-11-24/14/20261125T140307Z.mkv",      # day folder mismatch
    "video/cam/x/2026-11-25/14/20261125T140307Z.mkv",      # stream not a number
    "video/cam/01/2026-11-25/14/20261125T140307Z.mkv",     # stream with leading zero
    "video/c@m/0/2026-11-25/14/20261125T140307Z.mkv",      # camera id
    "meta/cam/0/2026-11-25/14/20261125T140307Z.json",      # meta has no stream folder
    "logs/cam/2026-11-25/14/20261125T140307Z.txt",         # outside video/ and meta/
    "video/cam/0/2026-13-25/14/20261325T140307Z.mkv",      # invalid date
    "video/../0/2026-11-25/14/20261125T140307Z.mkv",
    "/video/cam/0/2026-11-25/14/20261125T140307Z.mkv",
    "video/cam/0/2026-11-25/14/.20261125T140307Z.mkv.part",
])
def test_parse_rejects(relpath: str) -> None:
    with pytest.raises(SpecError):
        parse_footage(relpath)


@pytest.mark.parametrize("path", ["../x", "a/../../b", "/etc/passwd", "C:/x", "a/C:b", "a//b", "a/./b",
                                  "\\\\srv\\share", "a\x00b", "..", "."])
def test_safe_relpath_rejects(path: str) -> None:
    with pytest.raises(SpecError):
        safe_relpath(path)


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="/\\:\x00"), min_size=1, max_size=8),
                min_size=1, max_size=6))
def test_safe_relpath_never_escapes(parts: list[str]) -> None:
    try:
        out = safe_relpath("/".join(parts))
    except SpecError:
        return
    assert not out.startswith("/") and ".." not in out.split("/") and "." not in out.split("/")


def _reference_safe_relpath(path: str) -> str:
    """``safe_relpath`` part by part, as it was before its shortcut for paths that are normal already."""
    if "\x00" in path:
        raise SpecError("nul")
    text = path.replace("\\", "/")
    if text.startswith("/"):
        raise SpecError("absolute")
    parts = text.split("/")
    if parts and parts[-1] == "":
        parts = parts[:-1]
    if any(part in ("", ".", "..") or ":" in part for part in parts):
        raise SpecError("part")
    return "/".join(parts)


@given(st.text(alphabet=st.sampled_from(["a", "b", "/", "\\", ".", ":", "\x00", "é"]), max_size=12))
def test_safe_relpath_answers_as_part_by_part_checks_do(path: str) -> None:
    """Its shortcut for normal paths (every generated name takes it) never accepts or changes what the checks of
    every part would refuse or normalise."""
    try:
        expected = _reference_safe_relpath(path)
    except SpecError:
        with pytest.raises(SpecError):
            safe_relpath(path)
        return
    assert safe_relpath(path) == expected


@pytest.mark.parametrize(("server", "win", "unc"), [
    ("rec1", "D:\\Data\\video\\cam-1\\0", "\\\\rec1\\DATAD\\video\\cam-1\\0"),
    ("rec1", "d:\\data", "\\\\rec1\\DATAD"),
    ("rec2", "E:\\Data\\meta\\cam-2", "\\\\rec2\\DATAE\\meta\\cam-2"),
])
def test_share_mapping(server: str, win: str, unc: str) -> None:
    location = to_share(server, win)
    assert location.unc == unc
    assert parse_unc(unc) == location
    assert str(from_share(location)).lower() == win.lower()


@pytest.mark.parametrize("win", ["D:\\Other\\video", "D:\\", "D:\\Data\\..\\x"])
def test_share_mapping_rejects(win: str) -> None:
    with pytest.raises(SpecError):
        to_share("rec1", win)


def test_ordering_is_by_time() -> None:
    a = video_path("b", 0, datetime(2026, 1, 1, tzinfo=UTC))
    b = video_path("a", 0, datetime(2026, 1, 2, tzinfo=UTC))
    assert sorted([b, a]) == [a, b]
    assert isinstance(a, FootagePath)


@given(st.text(alphabet="0123456789", min_size=14, max_size=14))
def test_parse_stamp_agrees_with_strptime(digits: str) -> None:
    """The fast stamp parser accepts exactly what ``strptime`` accepts, with the same moment."""
    from datetime import datetime

    from farmkeeper.layout import parse_stamp

    stamp = f"{digits[:8]}T{digits[8:]}Z"
    try:
        expected = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        expected = None
    try:
        got = parse_stamp(stamp)
    except ValueError:
        got = None
    assert got == expected

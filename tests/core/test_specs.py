"""Specs: sizes, durations, storage path lists, per-stream days (table-driven and property tests)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from farmkeeper.errors import SpecError
from farmkeeper.specs import (
    StoragePathList,
    WindowsPath,
    format_duration,
    format_size,
    format_stream_days,
    parse_duration,
    parse_size,
    parse_stream_days,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("50GB", 50 * 10**9), ("2TiB", 2 * 2**40), ("500 MB", 500 * 10**6), ("1.5GiB", 3 * 2**29),
    ("1048576", 2**20), (4096, 4096), ("0", 0), ("10k", 10 * 1024), ("7B", 7),
])
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "-5GB", "5XB", "five", "5 G B", -1, True])
def test_parse_size_rejects(text: str | int) -> None:
    with pytest.raises(SpecError):
        parse_size(text)


@given(st.integers(min_value=0, max_value=2**60))
def test_size_round_trips(n: int) -> None:
    assert parse_size(format_size(n)) == n


@pytest.mark.parametrize(("text", "expected"), [
    ("30s", 30.0), ("5m", 300.0), ("2h", 7200.0), ("1h30m", 5400.0), ("1d", 86400.0), ("250ms", 0.25),
    ("45", 45.0), (12, 12.0), (0.5, 0.5),
])
def test_parse_duration(text: str | float, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "s", "5x", "m5", "5 minutes", "-5s", True])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(SpecError):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**8))
def test_duration_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(("text", "drives", "read_drive"), [
    ("c:\\data;*d:\\data", ("C", "D"), "D"),
    ("D:\\Data", ("D",), "D"),
    ("D:\\Data;E:\\Data", ("D", "E"), "D"),
    ("*D:\\Data;E:\\Data", ("D", "E"), "D"),
    (" D:\\Data ; *E:\\Data\\ ", ("D", "E"), "E"),
])
def test_storage_path_list(text: str, drives: tuple[str, ...], read_drive: str) -> None:
    spec = StoragePathList.parse(text)
    assert spec.drives == drives
    assert spec.read_path.drive == read_drive
    assert StoragePathList.parse(str(spec)) == spec


@pytest.mark.parametrize(("text", "needle"), [
    ("*c:\\data;*d:\\data", "at most one"),
    ("c:\\data;;d:\\data", "empty entry"),
    ("data", "drive-qualified"),
    ("\\\\srv\\share", "drive-qualified"),
    ("D:\\Data\\..\\x", "'..'"),
    ("D:\\Data;d:\\data", "listed twice"),
])
def test_storage_path_list_rejects(text: str, needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        StoragePathList.parse(text)


@given(st.lists(st.sampled_from("CDEFGH"), min_size=1, max_size=6, unique=True), st.data())
def test_storage_path_list_property(drives: list[str], data: st.DataObject) -> None:
    star = data.draw(st.integers(min_value=-1, max_value=len(drives) - 1))
    text = ";".join(("*" if i == star else "") + f"{d}:\\Data" for i, d in enumerate(drives))
    spec = StoragePathList.parse(text)
    assert list(spec.drives) == drives
    assert spec.read_index == max(star, 0)


@pytest.mark.parametrize(("text", "streams", "expected"), [
    ("3;20", 2, (3, 20)), ("7", 3, (7, 7, 7)), (5, 1, (5,)), ("1;2;3", 3, (1, 2, 3)),
])
def test_stream_days(text: str | int, streams: int, expected: tuple[int, ...]) -> None:
    assert parse_stream_days(text, streams) == expected
    assert parse_stream_days(format_stream_days(expected), streams) == expected


@pytest.mark.parametrize(("text", "streams", "needle"), [
    ("3;20;4", 2, "3 values for 2 streams"), ("3;x", 2, "whole days"), ("0", 1, "at least 1"),
    ("3;20", 1, "2 values for 1 stream"),
])
def test_stream_days_rejects(text: str, streams: int, needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        parse_stream_days(text, streams)


def test_windows_path_normalises() -> None:
    assert str(WindowsPath.parse("d:/Data/")) == "D:\\Data"

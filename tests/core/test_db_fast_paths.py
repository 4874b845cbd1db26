"""The inventory's fast paths write and read exactly what SQLAlchemy's own ones do.

``UTCDateTime`` converts SQLite's datetime text directly (``isoformat``/``fromisoformat``) instead of through
SQLAlchemy's DATETIME processors; ``BulkUpdate`` hands a sweep's rows to the driver's executemany. Both are
checked against SQLAlchemy itself: the same text for every datetime, the same rows read back on SQLite and
PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite
from sqlmodel import select

from farmkeeper.db import BulkUpdate, make_engine, migrate
from farmkeeper.models import Camera, CameraWatch, Server, UTCDateTime

SQLITE = sqlite.dialect()
THEIRS = sa.DateTime().dialect_impl(SQLITE)
OURS = UTCDateTime()

offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9998, 12, 31),
                       timezones=st.none() | st.just(UTC) | offsets)


@given(moments)
def test_sqlite_datetime_text_is_sqlalchemys(moment: datetime) -> None:
    naive_utc = moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    text = OURS.bind_processor(SQLITE)(moment)
    assert text == THEIRS.bind_processor(SQLITE)(naive_utc)
    assert OURS.result_processor(SQLITE, None)(text) == naive_utc.replace(tzinfo=UTC)


@pytest.mark.parametrize("text", ["2026-11-26 16:00:36", "2026-11-26 16:00:36.5", "2026-11-26 16:00:36.000123",
                                  "2026-11-26 16:00:36.123456"])
def test_sqlite_datetime_text_written_by_others_is_read_like_sqlalchemy(text: str) -> None:
    assert OURS.result_processor(SQLITE, None)(text) == THEIRS.result_processor(SQLITE, None)(text).replace(tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, sqlite_url: str) -> Any:
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    migrate(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def test_bulk_update_writes_what_the_orm_reads(engine: Any) -> None:
    from sqlmodel import Session

    t0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    with Session(engine) as s:
        s.add(Server(name="p1", host="127.0.0.1", role="primary", declared_role="primary"))
        s.flush()
        for i in range(3):
            s.add(Camera(id=f"cam-{i}", declared_home="p1", home="p1", current="p1"))
            s.add(CameraWatch(camera_id=f"cam-{i}", server="p1", since=t0))
        s.commit()
    columns = ("server", "since", "last_segment_at", "segment_s", "checked_at", "stalled_at")
    rows = [{"camera_id": "cam-0", "server": "p1", "since": t0, "last_segment_at": t0 + timedelta(minutes=1),
             "segment_s": 60.0, "checked_at": (t0 + timedelta(minutes=2)).astimezone(timezone(timedelta(hours=2))),
             "stalled_at": None},
            {"camera_id": "cam-2", "server": "p1", "since": t0, "last_segment_at": None, "segment_s": None,
             "checked_at": t0 + timedelta(seconds=1, microseconds=5), "stalled_at": t0 + timedelta(hours=1)}]
    with Session(engine) as s:
        BulkUpdate(CameraWatch.__table__, "camera_id", columns).execute(s.connection(), rows)  # type: ignore[attr-defined]
        s.commit()
    with Session(engine) as s:
        got = {w.camera_id: {c: getattr(w, c) for c in columns} for w in s.exec(select(CameraWatch)).all()}
    assert got["cam-0"] == {c: rows[0][c] for c in columns}
    assert got["cam-2"] == {c: rows[1][c] for c in columns}
    assert got["cam-1"] == {"server": "p1", "since": t0, "last_segment_at": None, "segment_s": None,
                            "checked_at": None, "stalled_at": None}                 # untouched

"""Engine, sessions and schema migration of the inventory (SQLite by default, PostgreSQL unchanged)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine
from sqlmodel import Session

from farmkeeper.settings import Settings, load_settings

MIGRATIONS = Path(__file__).parent / "migrations"
_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def make_engine(url: str, *, busy_timeout_ms: int = 30_000) -> Engine:
    """A new engine; SQLite gets WAL, a busy timeout, foreign keys and write-serialising transactions."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below be the only one
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            # IMMEDIATE takes the write lock up front: concurrent flows queue on busy_timeout
            # instead of failing with "database is locked" when a reader upgrades to a writer.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def get_engine(settings: Settings | None = None) -> Engine:
    """The process-wide engine for the configured database URL."""
    settings = settings or load_settings()
    url = settings.database_url
    with _lock:
        if url not in _engines:
            _engines[url] = make_engine(url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
        return _engines[url]


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _AT_HEAD.clear()


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error."""
    with Session(engine or get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str | None = None, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (Alembic owns the schema)."""
    url = url or load_settings().database_url
    with _lock:
        _AT_HEAD.clear()
    command.upgrade(alembic_config(url), revision)


_AT_HEAD: set[str] = set()   # engines found at head in this process (reading the scripts costs ~30 ms)


def ensure_schema(engine: Engine | None = None) -> Engine:
    """Migrate the database behind ``engine`` if it is not at head; returns the engine.

    Checked once per engine and process: the migration scripts are not re-read for every transaction.
    """
    engine = engine or get_engine()
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    url = engine.url.render_as_string(hide_password=False)
    key = f"{id(engine)}:{url}"
    if key in _AT_HEAD:
        return engine
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current != head:
        migrate(url)
    with _lock:
        _AT_HEAD.add(key)
    return engine


class BulkUpdate:
    """``UPDATE table SET columns... WHERE key = ?`` for many rows in one driver ``executemany``.

    SQLAlchemy processes every parameter set of an executemany through its compiler (about 30 µs a row);
    a sweep writes hundreds of rows. This compiles the statement once per dialect, converts each value with
    its column type's own bind processor (the same conversion SQLAlchemy applies) and hands the rows to the
    driver as they are. Rows are dicts keyed by column name.
    """

    def __init__(self, table: sa.Table, key: str, columns: tuple[str, ...]) -> None:
        self.table, self.key, self.columns = table, key, columns
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}

    def _for(self, dialect: sa.Dialect) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
        if dialect.name not in self._compiled:
            c = self.table.c
            stmt = self.table.update().where(c[self.key] == sa.bindparam(f"b_{self.key}", type_=c[self.key].type)) \
                .values({name: sa.bindparam(f"b_{name}", type_=c[name].type) for name in self.columns})
            compiled = stmt.compile(dialect=dialect)
            order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
            processors = {f"b_{name}": c[name].type.dialect_impl(dialect).bind_processor(dialect)
                          for name in (self.key, *self.columns)}
            self._compiled[dialect.name] = (str(compiled), order, processors)
        return self._compiled[dialect.name]

    def execute(self, connection: sa.Connection, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        sql, order, processors = self._for(connection.dialect)
        names = list(processors)
        params: list[Any] = []
        for row in rows:
            values = {}
            for name in names:
                value = row[name[2:]]
                fn = processors[name]
                values[name] = fn(value) if fn is not None and value is not None else value
            params.append(tuple(values[n] for n in order) if order is not None else values)
        connection.exec_driver_sql(sql, params)

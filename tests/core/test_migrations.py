"""Alembic owns the schema: the migrations build exactly the models, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

import farmkeeper.models  # noqa: F401  (registers the tables)
from farmkeeper.db import alembic_config, make_engine, migrate


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrations_match_models(backend: str, sqlite_url: str, request: pytest.FixtureRequest) -> None:
    url = sqlite_url if backend == "sqlite" else request.getfixturevalue("postgres_url")
    migrate(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert context.get_current_revision() == ScriptDirectory.from_config(
                alembic_config(url)).get_current_head()
            diff = compare_metadata(context, SQLModel.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"


def test_single_head() -> None:
    assert len(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()) == 1

"""Shared fixtures: a real Prefect API, temp inventories (SQLite and PostgreSQL), Samba, receivers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.samba",
    "tests.fixtures.receivers",
    "tests.fixtures.prefect_server",
]


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A real (ephemeral, SQLite-backed) Prefect API for flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'inventory.db'}"


@pytest.fixture
def inventory_url(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh migrated SQLite inventory, set as FARMKEEPER_DATABASE_URL for the test."""
    from farmkeeper.db import dispose_engines, migrate

    monkeypatch.setenv("FARMKEEPER_DATABASE_URL", sqlite_url)
    migrate(sqlite_url)
    yield sqlite_url
    dispose_engines()


@pytest.fixture(autouse=True)
def _no_stray_database_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never touch a farmkeeper.db in the working directory by accident."""
    if "FARMKEEPER_DATABASE_URL" not in os.environ:
        monkeypatch.setenv("FARMKEEPER_DATABASE_URL", f"sqlite:///{tmp_path / 'default.db'}")

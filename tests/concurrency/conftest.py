"""Concurrent flows on one inventory, on SQLite and PostgreSQL: a farm, an engine per backend, pause points.

``Pause`` stops a flow at one of the core's named points (``farmkeeper.hooks``) until the test lets it go,
so an interleaving is driven at the exact step, never by sleeping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import Engine

from farmkeeper.db import dispose_engines, make_engine, migrate, session_scope
from farmkeeper.farmfile import FarmFile, apply_farm_file, parse_farm_file

SERVERS = [("rec1", "primary"), ("rec2", "primary"), ("spare1", "redundant"), ("spare2", "redundant")]
CAMERAS = [{"id": "cam-1", "home": "rec1"}, {"id": "cam-2", "home": "rec1"}, {"id": "cam-3", "home": "rec2"},
           {"id": "cam-usb", "home": "rec1", "movable": False}]


@dataclass
class Inventory:
    url: str
    engine: Engine
    backend: str

    def session(self) -> Any:
        return session_scope(self.engine)


@pytest.fixture(params=["sqlite", "postgres"])
def inv(request: pytest.FixtureRequest, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inventory]:
    """A migrated inventory on each backend, set as FARMKEEPER_DATABASE_URL for the test."""
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    monkeypatch.setenv("FARMKEEPER_DATABASE_URL", url)
    migrate(url)
    engine = make_engine(url)
    yield Inventory(url, engine, request.param)
    engine.dispose()
    dispose_engines()


def farm_data(tmp_path: Path, *, master: str = "rec1", notify: list[str] | None = None,
              servers: list[tuple[str, str]] | None = None, keep_days: int | None = None) -> dict[str, Any]:
    storage: dict[str, Any] = {"default_path": "D:\\Data"}
    if keep_days is not None:
        storage |= {"limit_storage_days": True, "default_max_storage_days": keep_days}
    data: dict[str, Any] = {"farm": {"name": "concur", "down_after": "5s", "health_interval": "1s",
                                     "notify": notify or []},
                            "storage": storage, "servers": [], "cameras": CAMERAS}
    for i, (name, role) in enumerate(servers or SERVERS):
        vol = tmp_path / "vol" / name / "D"
        vol.mkdir(parents=True, exist_ok=True)
        data["servers"].append({"name": name, "host": f"127.0.0.{20 + i}", "role": role, "master": name == master,
                                "health": f"tcp://127.0.0.{20 + i}:9", "san_failover_mode": True,
                                "volumes": [{"drive": "D", "path": str(vol)}]})
    return data


def farm_spec(tmp_path: Path, **kw: Any) -> FarmFile:
    path = tmp_path / f"farm-{kw.get('master', 'rec1')}.yaml"
    path.write_text(yaml.safe_dump(farm_data(tmp_path, **kw), sort_keys=False))
    return parse_farm_file(path.read_text(), str(path))


def apply_spec(inv: Inventory, spec: FarmFile) -> None:
    with inv.session() as session:
        apply_farm_file(session, spec)


@dataclass
class Pause:
    """Stops the first flow (or every flow, ``once=False``) reaching a point until ``release``."""

    once: bool = True
    reached: threading.Event = field(default_factory=threading.Event)
    go: threading.Event = field(default_factory=threading.Event)
    context: dict[str, Any] = field(default_factory=dict)
    _taken: bool = False

    def __call__(self, **context: Any) -> None:
        if self.once and self._taken:
            return
        self._taken = True
        self.context = context
        self.reached.set()
        assert self.go.wait(60), "the test never released the paused flow"

    def wait(self) -> dict[str, Any]:
        assert self.reached.wait(60), "the flow never reached the pause point"
        return self.context

    def release(self) -> None:
        self.go.set()


class Worker(threading.Thread):
    """A flow in a thread; ``join_ok`` re-raises what it raised."""

    def __init__(self, target: Callable[[], Any], name: str = "flow") -> None:
        super().__init__(name=name, daemon=True)
        self.fn = target
        self.error: BaseException | None = None
        self.result: Any = None
        self.started_work = threading.Event()

    def run(self) -> None:
        self.started_work.set()
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test by join_ok
            self.error = exc

    def join_ok(self, timeout: float = 60) -> Any:
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} did not finish within {timeout} s"
        if self.error is not None:
            raise self.error
        return self.result


def wait_blocked_on_lock(inv: Inventory, count: int = 1) -> None:
    """PostgreSQL: until ``count`` sessions wait for a row lock (a flow stopped by another's lock).

    SQLite serialises write transactions (BEGIN IMMEDIATE): a second writer cannot start before the first
    one commits, so there is nothing to wait for.
    """
    if inv.backend != "postgres":
        return
    import time

    deadline = time.monotonic() + 30
    with inv.engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                           "AND datname = current_database()")).scalar_one()
            if waiting >= count:
                return
            conn.rollback()
            time.sleep(0.01)
    raise AssertionError(f"no {count} session(s) waiting for a lock within 30 s")

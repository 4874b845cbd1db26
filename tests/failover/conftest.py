"""Helpers of the failover tests: a farm file with temp volumes and free loopback ports, applied."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.farmfile import apply_farm_file, parse_farm_file


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Farm:
    path: Path
    data: dict[str, Any]
    volumes: dict[str, Path]          # server → local share root of drive D

    def health(self, server: str) -> str:
        return next(s["health"] for s in self.data["servers"] if s["name"] == server)


def build_farm(tmp_path: Path, servers: Sequence[tuple[str, str]], cameras: Sequence[dict[str, Any]], *,
               notify: Sequence[str] = (), down_after: str = "5s", interval: str = "1s",
               san: bool = True, extra_server: dict[str, dict[str, Any]] | None = None) -> Farm:
    """servers: (name, role); the first is the master; host 127.0.0.<10+i>, a free port each."""
    data: dict[str, Any] = {
        "farm": {"name": "test", "down_after": down_after, "health_interval": interval, "notify": list(notify)},
        "storage": {"default_path": "D:\\Data"},
        "servers": [], "cameras": list(cameras),
    }
    volumes = {}
    for i, (name, role) in enumerate(servers):
        host = f"127.0.0.{10 + i}"
        vol = tmp_path / "vol" / name / "D"
        vol.mkdir(parents=True)
        volumes[name] = vol
        entry = {"name": name, "host": host, "role": role, "master": i == 0,
                 "health": f"tcp://{host}:{free_port(host)}", "san_failover_mode": san,
                 "volumes": [{"drive": "D", "path": str(vol)}]}
        entry.update((extra_server or {}).get(name, {}))
        data["servers"].append(entry)
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return Farm(path, data, volumes)


def apply(farm: Farm) -> None:
    spec = parse_farm_file(farm.path.read_text(), str(farm.path))
    with session_scope(ensure_schema(get_engine())) as session:
        apply_farm_file(session, spec)


@pytest.fixture
def make_farm(tmp_path: Path, inventory_url: str) -> Callable[..., Farm]:
    """Build and apply a farm on the test's inventory (``inventory_url``)."""

    def _make(*args: Any, **kw: Any) -> Farm:
        farm = build_farm(tmp_path, *args, **kw)
        apply(farm)
        return farm

    return _make

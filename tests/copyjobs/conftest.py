"""Copy jobs on SQLite and local volumes: a two-server farm (rec1 home, rec2 source) with folder volumes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.farmfile import apply_farm_file, parse_farm_file
from farmkeeper.storage import Volume, VolumeAccess, open_volume


def sessions() -> Any:
    return session_scope(get_engine())


@dataclass
class LocalFarm:
    root: Path
    path: Path
    data: dict[str, Any]

    def share(self, server: str, drive: str = "D") -> Path:
        return self.root / server / drive

    def volume(self, server: str, drive: str = "D") -> Volume:
        return open_volume(VolumeAccess(server=server, drive=drive, local_path=str(self.share(server, drive))),
                           prefer="local")

    def apply(self) -> None:
        self.path.write_text(yaml.safe_dump(self.data, sort_keys=False))
        spec = parse_farm_file(self.path.read_text(), str(self.path))
        with session_scope(ensure_schema(get_engine())) as session:
            apply_farm_file(session, spec)


@pytest.fixture
def local_farm(inventory_url: str, tmp_path: Path) -> Iterator[Callable[..., LocalFarm]]:
    def make(cameras: tuple[str, ...] = ("cam-1",), *, paths: dict[str, str] | None = None) -> LocalFarm:
        root = tmp_path / "shares"
        data: dict[str, Any] = {"farm": {"name": "cj"}, "storage": {"default_path": "D:\\Data"}, "servers": [],
                                "cameras": [{"id": c, "home": "rec1", "movable": True, "streams": 2}
                                            for c in cameras]}
        for i, name in enumerate(("rec1", "rec2")):
            share = root / name / "D"
            share.mkdir(parents=True, exist_ok=True)
            data["servers"].append({"name": name, "host": f"127.0.0.{70 + i}", "role": "primary",
                                    "master": i == 0, "health": "smb",
                                    "volumes": [{"drive": "D", "path": (paths or {}).get(name, str(share))}]})
        farm = LocalFarm(root, tmp_path / "farm.yaml", data)
        farm.apply()
        return farm

    yield make

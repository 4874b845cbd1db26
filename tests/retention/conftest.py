"""Fixtures of the retention tests: a small tmpfs volume (real free space), an inventory session factory."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture
def tmpfs_volume(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for the test (needs root), unmounted after."""
    path = tmp_path / "tmpfs"
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {path} (run the tests as root): {result.stderr.strip()}",
                    pytrace=False)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


class RetentionFarm:
    """A farm file with local volumes under ``tmp_path`` (or given paths), applied to the test inventory."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.volumes: dict[tuple[str, str], Path] = {}

    def apply(self, *, storage: dict[str, Any] | None = None, cameras: list[dict[str, Any]] | None = None,
              volumes: dict[str, list[str]] | None = None, paths: dict[tuple[str, str], Path] | None = None,
              notify: list[str] | None = None, purge_guard_percent: float = 50,
              servers: list[dict[str, Any]] | None = None) -> RetentionFarm:
        from farmkeeper.db import ensure_schema, get_engine, session_scope
        from farmkeeper.farmfile import apply_farm_file, parse_farm_file

        volumes = volumes or {"rec1": ["D", "E"], "rec2": ["D"]}
        data: dict[str, Any] = {
            "farm": {"name": "ret", "notify": notify or [], "purge_guard_percent": purge_guard_percent},
            "storage": {"limit_storage_days": True, "default_max_storage_days": 7, **(storage or {})},
            "servers": servers or [], "cameras": cameras or [
                {"id": "cam-001", "home": "rec1", "streams": 2, "max_storage_days": "3;8"},
                {"id": "cam-002", "home": "rec1"},
                {"id": "cam-003", "home": "rec2"},
            ],
        }
        if not servers:
            for i, (name, drives) in enumerate(volumes.items()):
                vols = []
                for drive in drives:
                    path = (paths or {}).get((name, drive)) or self.tmp_path / "vol" / name / drive
                    path.mkdir(parents=True, exist_ok=True)
                    self.volumes[(name, drive)] = path
                    vols.append({"drive": drive, "path": str(path)})
                data["servers"].append({"name": name, "host": f"127.0.0.{20 + i}", "role": "primary",
                                        "master": i == 0, "health": "smb", "volumes": vols})
        spec = parse_farm_file(yaml.safe_dump(data, sort_keys=False), "farm.yaml")
        with session_scope(ensure_schema(get_engine())) as session:
            apply_farm_file(session, spec)
        return self

    def root(self, server: str = "rec1", drive: str = "D") -> Path:
        return self.volumes[(server, drive)]


@pytest.fixture
def retention_farm(tmp_path: Path, inventory_url: str) -> RetentionFarm:
    return RetentionFarm(tmp_path)

"""A farm of three real Samba servers (rec1, rec2, spare1) with shares DATAD/DATAE, applied to a temp inventory.

These tests break shares on purpose (remove, read only, wrong password), so they run their own
``SambaFarm`` on 127.0.0.50-52 instead of the session-wide ``samba_farm`` used by other areas.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.samba import PASSWORD, USERNAME, SambaFarm, SambaServer, Share, running

NAMES = ("rec1", "rec2", "spare1")
PASSWORD_ENV = "FK_OWN_SMB_PASSWORD"
DAY = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.fixture(scope="session")
def own_samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaFarm]:
    farm = SambaFarm(3, root=tmp_path_factory.mktemp("own-samba"), first_host=50)
    with running(farm):
        yield farm


def write_footage(root: Path, camera: str, n: int, *, stream: int = 0, day: datetime = DAY,
                  step_s: int = 7) -> None:
    """``n`` empty video files of ``camera`` under a share root, ``step_s`` seconds apart from ``day``."""
    made: set[Path] = set()
    for i in range(n):
        t = day + timedelta(seconds=i * step_s)
        folder = root / "video" / camera / str(stream) / t.strftime("%Y-%m-%d") / t.strftime("%H")
        if folder not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(folder)
        (folder / f"{t.strftime('%Y%m%dT%H%M%SZ')}.mkv").touch()


@dataclass
class Farm:
    """The Samba farm as an inventory: ``spec`` is the farm file (a dict), ``apply()`` loads it."""

    samba: SambaFarm
    spec: dict[str, Any] = field(default_factory=dict)

    def server(self, name: str) -> SambaServer:
        return self.samba.servers[NAMES.index(name)]

    def root(self, name: str, drive: str = "D") -> Path:
        return self.server(name).share_path(f"DATA{drive}")

    def srv_spec(self, name: str) -> dict[str, Any]:
        return next(s for s in self.spec["servers"] if s["name"] == name)

    def footage(self, server: str, camera: str, n: int, drive: str = "D", **kw: Any) -> None:
        write_footage(self.root(server, drive), camera, n, **kw)

    def apply(self) -> None:
        from farmkeeper.db import ensure_schema, get_engine, session_scope
        from farmkeeper.farmfile import apply_farm_file, parse_farm_file

        spec = parse_farm_file(yaml.safe_dump(self.spec), "farm.yaml")
        with session_scope(ensure_schema(get_engine())) as session:
            apply_farm_file(session, spec)

    def set_share(self, name: str, share: str, *, present: bool = True, read_only: bool = False) -> None:
        server = self.server(name)
        if present:
            path = self.samba.root / server.host / "shares" / share
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o777)
            server.shares[share] = Share(share, path, read_only)
        else:
            server.shares.pop(share, None)
        server.write_conf()
        server._reload()


def farm_spec(samba: SambaFarm, *, local_paths: bool = True) -> dict[str, Any]:
    servers = []
    for name, s in zip(NAMES, samba.servers, strict=True):
        servers.append({
            "name": name, "host": s.host, "role": "redundant" if name == "spare1" else "primary",
            "master": name == "rec1", "health": "smb", "san_failover_mode": True,
            "smb": {"port": s.port, "username": USERNAME, "password_env": PASSWORD_ENV},
            "volumes": [{"drive": d, **({"path": str(s.share_path(f"DATA{d}"))} if local_paths else {})}
                        for d in ("D", "E")],
        })
    return {
        "farm": {"name": "own", "ownership_margin": 0.1},
        "servers": servers,
        "cameras": [{"id": "cam-1", "home": "rec1", "streams": 2}, {"id": "cam-2", "home": "rec1"},
                    {"id": "cam-3", "home": "rec2"}],
    }


@pytest.fixture
def farm(own_samba: SambaFarm, inventory_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Farm]:
    """A clean farm: default shares (read/write), empty share folders, inventory applied."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    for server in own_samba.servers:
        shares_dir = own_samba.root / server.host / "shares"
        for child in shares_dir.iterdir() if shares_dir.exists() else []:
            shutil.rmtree(child, ignore_errors=True)
        server.shares = {}
        for share in ("DATAD", "DATAE"):
            path = shares_dir / share
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o777)
            server.shares[share] = Share(share, path)
        server.write_conf()
        server._reload()
    f = Farm(own_samba, farm_spec(own_samba))
    f.apply()
    yield f

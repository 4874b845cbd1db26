"""A swap-back farm on real Samba: rec1 (home, 127.0.0.60), spare1 (redundant, .61), rec2 (.62).

The tests kill smbd and fill shares on purpose, so they run their own ``SambaFarm`` (shares DATAD,
DATAE, DATAF as folders; DATAG on rec1 is an 8 MiB tmpfs for the full-disk test). Volumes have no
local ``path`` unless a test asks for it, so every copy goes over SMB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.farmfile import apply_farm_file, parse_farm_file
from farmkeeper.models import Camera, FailoverEvent
from tests.fixtures.samba import PASSWORD, USERNAME, SambaError, SambaFarm, SambaServer, reset_shares
from tests.helpers import START, cli, parse_json, tree_hashes, write_footage  # noqa: F401  (used by the tests here)

PASSWORD_ENV = "FK_SB_SMB_PASSWORD"
NAS_SHARE = "CCTV"
NAMES = ("rec1", "spare1", "rec2")


@pytest.fixture(scope="session")
def sb_samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaFarm]:
    farm = SambaFarm(3, root=tmp_path_factory.mktemp("sb-samba"), first_host=60,
                     shares=("DATAD", "DATAE", "DATAF"))
    try:
        farm.start()
        farm.tmpfs_share(farm.servers[0], "DATAG", "8m")
        spare_g = farm.root / farm.servers[1].host / "shares" / "DATAG"
        farm.servers[1].add_share("DATAG", spare_g)
        farm.servers[2].add_share("DATAG", farm.root / farm.servers[2].host / "shares" / "DATAG")
        farm.servers[2].add_share(NAS_SHARE, farm.root / "nas" / NAS_SHARE)     # central storage (a NAS)
    except SambaError as exc:
        farm.close()
        pytest.fail(f"Samba could not start: {exc}", pytrace=False)
    try:
        yield farm
    finally:
        farm.close()


@dataclass
class SBFarm:
    samba: SambaFarm
    path: Path
    data: dict[str, Any]

    def server(self, name: str) -> SambaServer:
        return self.samba.servers[NAMES.index(name)]

    def share(self, name: str, drive: str = "D") -> Path:
        return self.server(name).share_path(f"DATA{drive}")

    @property
    def nas(self) -> Path:
        """The central storage's folder (share ``CCTV`` on rec2's Samba, standing in for a NAS)."""
        return self.samba.servers[2].share_path(NAS_SHARE)

    @property
    def nas_unc(self) -> str:
        return f"\\\\{self.samba.servers[2].host}\\{NAS_SHARE}"

    def apply(self) -> None:
        self.path.write_text(yaml.safe_dump(self.data, sort_keys=False))
        spec = parse_farm_file(self.path.read_text(), str(self.path))
        with session_scope(ensure_schema(get_engine())) as session:
            apply_farm_file(session, spec)


@pytest.fixture
def make_farm(sb_samba: SambaFarm, inventory_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[Callable[..., SBFarm]]:
    """Build and apply a farm; ``drives`` per server, ``local`` gives volumes their local path."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    reset_shares(sb_samba)

    def _make(cameras: list[dict[str, Any]], *, drives: str = "DE", notify: list[str] | None = None,
              local: bool = False, servers: tuple[str, ...] = NAMES, san: bool = True) -> SBFarm:
        data: dict[str, Any] = {
            "farm": {"name": "sb", "notify": notify or []},
            "storage": {"default_path": "D:\\Data"},
            "servers": [], "cameras": cameras,
        }
        for i, name in enumerate(servers):
            srv = sb_samba.servers[NAMES.index(name)]
            vols = []
            for d in drives:
                vol: dict[str, Any] = {"drive": d}
                if local:
                    vol["path"] = str(srv.share_path(f"DATA{d}"))
                vols.append(vol)
            data["servers"].append({
                "name": name, "host": srv.host, "role": "redundant" if name.startswith("spare") else "primary",
                "master": i == 0, "health": "smb", "san_failover_mode": san,
                "smb": {"port": 445, "username": USERNAME, "password_env": PASSWORD_ENV},
                "volumes": vols})
        farm = SBFarm(sb_samba, tmp_path / "farm.yaml", data)
        farm.apply()
        return farm

    yield _make
    reset_shares(sb_samba)


def camera(cam_id: str, home: str = "rec1", storage_path: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": cam_id, "home": home, "movable": True, "streams": 2}
    if storage_path:
        out["storage_path"] = storage_path
    return out


def fail_over(cam: str, to: str = "spare1", from_server: str = "rec1",
              started_at: datetime | None = None) -> None:
    """What a failover leaves: the camera records on ``to`` and an open FailoverEvent."""
    with session_scope(ensure_schema(get_engine())) as session:
        row = session.get(Camera, cam)
        assert row is not None
        row.current = to
        row.version += 1
        session.add(row)
        session.add(FailoverEvent(camera_id=cam, from_server=from_server, to_server=to,
                                  started_at=started_at or START - timedelta(minutes=1)))



"""A move farm on real Samba: rec1 (127.0.0.80), spare1 (redundant, .81), rec2 (.82) and rec4 (.83, added later).

Its own ``SambaFarm`` (other suites use .2-4, .50-52, .60-62, .70-72): shares DATAD and DATAE on every
server; DATAG is an 8 MiB tmpfs on rec4 (the too-small target) and a plain folder elsewhere; DATAH
exists everywhere but on rec4 (a missing share for the validation tests). Volumes have no local
``path`` unless a test asks, so footage moves over SMB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.farmfile import apply_farm_file, parse_farm_file
from tests import helpers
from tests.fixtures.samba import PASSWORD, USERNAME, SambaError, SambaFarm, SambaServer, reset_shares
from tests.helpers import cli, parse_json, tree_hashes  # noqa: F401  (used by the tests here)

PASSWORD_ENV = "FK_MV_SMB_PASSWORD"
NAMES = ("rec1", "spare1", "rec2", "rec4")
START = datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def mv_samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaFarm]:
    farm = SambaFarm(4, root=tmp_path_factory.mktemp("mv-samba"), first_host=80, shares=("DATAD", "DATAE"))
    try:
        farm.start()
        farm.tmpfs_share(farm.servers[3], "DATAG", "8m")
        for srv in farm.servers[:3]:
            for share in ("DATAG", "DATAH"):
                srv.add_share(share, farm.root / srv.host / "shares" / share)
    except SambaError as exc:
        farm.close()
        pytest.fail(f"Samba could not start: {exc}", pytrace=False)
    try:
        yield farm
    finally:
        farm.close()


def server_entry(samba: SambaFarm, name: str, drives: str, *, local: bool = False,
                 san_failover_mode: bool = True) -> dict[str, Any]:
    srv = samba.servers[NAMES.index(name)]
    vols = []
    for d in drives:
        vol: dict[str, Any] = {"drive": d}
        if local:
            vol["path"] = str(srv.share_path(f"DATA{d}"))
        vols.append(vol)
    return {"name": name, "host": srv.host, "role": "redundant" if name.startswith("spare") else "primary",
            "master": name == "rec1", "health": "smb", "san_failover_mode": san_failover_mode,
            "smb": {"port": 445, "username": USERNAME, "password_env": PASSWORD_ENV}, "volumes": vols}


@dataclass
class MVFarm:
    samba: SambaFarm
    path: Path
    data: dict[str, Any]
    drives: str

    def server(self, name: str) -> SambaServer:
        return self.samba.servers[NAMES.index(name)]

    def share(self, name: str, drive: str = "D") -> Path:
        return self.server(name).share_path(f"DATA{drive}")

    def write(self) -> Path:
        self.path.write_text(yaml.safe_dump(self.data, sort_keys=False))
        return self.path

    def apply(self) -> None:
        spec = parse_farm_file(self.write().read_text(), str(self.path))
        with session_scope(ensure_schema(get_engine())) as session:
            apply_farm_file(session, spec)

    def add_server(self, name: str, drives: str | None = None, **kw: Any) -> None:
        """Add ``name`` to the farm file (not applied: run ``farmkeeper apply``)."""
        self.data["servers"].append(server_entry(self.samba, name, drives or self.drives, **kw))
        self.write()

    def remove_server(self, name: str) -> None:
        self.data["servers"] = [s for s in self.data["servers"] if s["name"] != name]
        self.write()


@pytest.fixture
def make_farm(mv_samba: SambaFarm, inventory_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[Callable[..., MVFarm]]:
    """Build and apply a farm of ``servers`` (rec4 is usually added by the test with ``farmkeeper apply``)."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    reset_shares(mv_samba)

    def _make(cameras: list[dict[str, Any]], *, drives: str = "DE", notify: list[str] | None = None,
              local: bool = False, servers: tuple[str, ...] = ("rec1", "spare1", "rec2"),
              storage: dict[str, Any] | None = None, san_failover_mode: bool = True) -> MVFarm:
        data: dict[str, Any] = {
            "farm": {"name": "mv", "notify": notify or []},
            "storage": {"default_path": "D:\\Data", **(storage or {})},
            "servers": [server_entry(mv_samba, name, drives, local=local, san_failover_mode=san_failover_mode)
                        for name in servers],
            "cameras": cameras,
        }
        farm = MVFarm(mv_samba, tmp_path / "farm.yaml", data, drives)
        farm.apply()
        return farm

    yield _make
    reset_shares(mv_samba)


def camera(cam_id: str, home: str = "rec1", **kw: Any) -> dict[str, Any]:
    return {"id": cam_id, "home": home, "movable": True, "streams": 2, **kw}


def write_footage(root: Path, cam: str, count: int, **kw: Any) -> dict[str, str]:
    """``tests.helpers.write_footage`` starting at this farm's ``START`` unless told otherwise."""
    return helpers.write_footage(root, cam, count, **{"start": START, **kw})




def flat(text: str) -> str:
    return " ".join(text.split())

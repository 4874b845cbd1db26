"""Same storage under two names: apply refuses it (naming both places), a copy job refuses it at run time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlmodel import select

from farmkeeper import copyjobs
from farmkeeper.errors import FarmFileError, StoragePermission
from farmkeeper.farmfile import parse_farm_file
from farmkeeper.models import CopyItem, CopyItemState, DeletionAudit
from farmkeeper.samestorage import SameStorageError, VolumeRef, prove_distinct, same_storage_pairs
from farmkeeper.storage import VolumeAccess, open_volume
from tests.copyjobs.conftest import LocalFarm, sessions
from tests.copyjobs.test_invariants import digest, plan
from tests.helpers import write_footage


def farm_text(rec1: dict[str, Any], rec2: dict[str, Any], host2: str = "127.0.0.71", port2: int = 445) -> str:
    return yaml.safe_dump({"servers": [
        {"name": "rec1", "host": "127.0.0.70", "master": True, "volumes": [{"drive": "D", **rec1}]},
        {"name": "rec2", "host": host2, "smb": {"port": port2}, "volumes": [{"drive": "D", **rec2}]},
    ]}, sort_keys=False)


def refused(text: str) -> str:
    with pytest.raises(FarmFileError) as err:
        parse_farm_file(text, "farm.yaml")
    return str(err.value)


@pytest.mark.parametrize("spelling", ["dotdot", "symlink", "nested"])
def test_apply_refuses_one_folder_under_two_names(tmp_path: Path, spelling: str) -> None:
    rec1 = tmp_path / "srv" / "rec1" / "D"
    rec1.mkdir(parents=True)
    other = {
        "dotdot": str(tmp_path / "srv" / "rec2" / ".." / "rec1" / "D"),
        "nested": str(rec1 / "sub"),
    }
    if spelling == "symlink":
        (tmp_path / "alias").symlink_to(rec1)
        other["symlink"] = str(tmp_path / "alias")
    (rec1 / "sub").mkdir()
    text = refused(farm_text({"path": str(rec1)}, {"path": other[spelling]}))
    assert "farm.yaml:" in text and "servers[1].volumes[0]" in text and "(rec1 D:)" in text
    assert "the same storage as farm.yaml:" in text


def test_apply_refuses_the_same_smb_share_and_accepts_distinct_storage(tmp_path: Path) -> None:
    text = refused(farm_text({}, {}, host2="127.0.0.70"))
    assert "\\\\127.0.0.70:445\\DATAD" in text and "servers[1].volumes[0]" in text
    parse_farm_file(farm_text({}, {}, host2="127.0.0.70", port2=1445), "farm.yaml")    # another endpoint
    (tmp_path / "a").mkdir()
    (tmp_path / "ab").mkdir()                                                        # a prefix, not nested
    parse_farm_file(farm_text({"path": str(tmp_path / "a")}, {"path": str(tmp_path / "ab")}), "farm.yaml")


def test_the_same_central_storage_on_two_servers_is_one_storage_on_purpose(tmp_path: Path) -> None:
    refs = [VolumeRef("a", "rec1", "N", "127.0.0.70", 445, str(tmp_path), "\\\\nas01\\cctv"),
            VolumeRef("b", "rec2", "N", "127.0.0.70", 445, str(tmp_path), "\\\\NAS01\\cctv\\")]
    assert same_storage_pairs(refs) == []
    other = [refs[0], VolumeRef("b", "rec2", "N", "127.0.0.70", 445, str(tmp_path), "\\\\nas02\\cctv")]
    assert len(same_storage_pairs(other)) == 1


@pytest.mark.parametrize("alias", ["same", "symlink"])
def test_a_copy_job_onto_its_own_source_copies_and_deletes_nothing(local_farm: Any, tmp_path: Path,
                                                                   alias: str) -> None:
    farm: LocalFarm = local_farm()
    files = write_footage(farm.share("rec2"), "cam-1", 3, size=4096)
    report = plan(farm)
    assert report.job_id is not None
    path = farm.share("rec2")
    if alias == "symlink":
        (tmp_path / "alias").symlink_to(path)
        path = tmp_path / "alias"
    home = open_volume(VolumeAccess(server="rec1", drive="D", local_path=str(path)), prefer="local")
    with farm.volume("rec2") as src, home, pytest.raises(SameStorageError, match="same device and inode"):
        copyjobs.run_batch(sessions, report.job_id, report.batches[0], src, home, copyjobs.JobOptions())
    assert digest(farm.share("rec2"), files) == files
    with sessions() as s:
        assert {i.state for i in s.exec(select(CopyItem))} == {CopyItemState.pending}
        assert not s.exec(select(DeletionAudit)).all()
    assert not [p for p in farm.share("rec2").rglob("*") if ".farmkeeper" in p.parts and p.is_file()]


@pytest.mark.samba
def test_the_same_share_over_samba_is_recognised_by_a_probe(samba_farm: Any) -> None:
    server, other = samba_farm.servers[0], samba_farm.servers[1]
    a = open_volume(server.access("D", server="rec1"), prefer="smb")
    same = open_volume(server.access("D", server="rec2"), prefer="smb")           # same host:port + share
    local = open_volume(server.local_access("D", server="rec3"), prefer="local")  # its folder, locally
    distinct = open_volume(other.access("D", server="rec4"), prefer="smb")
    with a, same, local, distinct:
        for x, y in ((a, same), (same, a), (local, a), (a, local)):
            with pytest.raises(SameStorageError, match="probe file"):
                prove_distinct(x, y)
        prove_distinct(a, distinct)
        prove_distinct(a, open_volume(server.access("E", server="rec1"), prefer="smb"))
    assert not [p for p in server.share_path("DATAD").rglob("*") if p.is_file()]
    assert os.listdir(server.share_path("DATAD")) in ([], [".farmkeeper"])


class _ReadOnly:
    """A volume that cannot be written through (a read-only share or mount)."""

    def __init__(self, vol: Any) -> None:
        self.vol = vol

    def __getattr__(self, name: str) -> Any:
        return getattr(self.vol, name)

    def __repr__(self) -> str:
        return repr(self.vol)

    def write_bytes(self, relpath: str, data: bytes, *args: Any, **kwargs: Any) -> None:
        raise StoragePermission(13, "read-only (test)", server=self.vol.server, share=self.vol.share, path=relpath)


@pytest.mark.samba
def test_the_probe_goes_the_other_way_through_a_read_only_volume_and_never_passes_unproven(samba_farm: Any) -> None:
    server = samba_farm.servers[0]
    a = open_volume(server.access("D", server="rec1"), prefer="smb")
    same = open_volume(server.access("D", server="rec2"), prefer="smb")
    with a, same:
        for x, y in ((_ReadOnly(a), same), (a, _ReadOnly(same))):
            with pytest.raises(SameStorageError, match="probe file"):
                prove_distinct(x, y)                                  # type: ignore[arg-type]
        with pytest.raises(StoragePermission):                        # no proof either way: refused, not passed
            prove_distinct(_ReadOnly(a), _ReadOnly(same))             # type: ignore[arg-type]

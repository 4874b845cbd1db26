"""The SMB backend against a real smbd that is honest but awkward: names that are not UTF-16, a server that
refuses this client; and the smbprotocol internals our request path is built on."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from farmkeeper.errors import StorageError, StoragePermission
from farmkeeper.ownership import count_footage
from farmkeeper.storage import _smb2 as smb2
from farmkeeper.storage import open_volume
from farmkeeper.volumes import ServerVolume
from tests.fixtures.samba import SambaFarm, reset_shares, running

pytestmark = pytest.mark.samba

HOUR = "video/cam-1/0/2024-03-01/10"
GOOD = f"{HOUR}/20240301T100000Z.mkv"
BAD_NAME = b"20240301T100500Z\xed\xa0\x80.mkv"   # a lone UTF-16 surrogate, as NTFS allows (UTF-8 of U+D800)
BAD_DIR = b"video/cam\xed\xa0\x80x"


@pytest.fixture
def farm(samba_farm: SambaFarm) -> Iterator[SambaFarm]:
    reset_shares(samba_farm)
    yield samba_farm
    reset_shares(samba_farm)


def _put(root: Path, rel: bytes, data: bytes = b"x") -> None:
    path = os.path.join(os.fsencode(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_names_not_valid_utf16_are_listed_not_fatal(farm: SambaFarm) -> None:
    server = farm.servers[0]
    root = server.share_path("DATAD")
    _put(root, GOOD.encode())
    _put(root, HOUR.encode() + b"/" + BAD_NAME, b"odd")
    _put(root, BAD_DIR + b"/0/2024-03-01/10/20240301T100000Z.mkv")
    with open_volume(server.access("D")) as vol:
        paths = {e.relpath for e in vol.walk()}
        bad = f"{HOUR}/20240301T100500Z\ud800.mkv"
        # Samba lists the odd folder but cannot open it by that name again: it is skipped, the rest is walked
        assert paths == {GOOD, bad}
        assert vol.count() == {("cam-1", 0, "2024-03-01"): 1}   # the odd names are strays, never footage
        by_dir = dict(vol.list_files_by_dir(HOUR))
        assert sorted(by_dir[HOUR]) == sorted(["20240301T100000Z.mkv", "20240301T100500Z\ud800.mkv"])
        with pytest.raises(StorageError) as info:
            vol.read_bytes(bad)
        assert "DATAD" in str(info.value)
    counted = count_footage([ServerVolume(server.host, "D", server.access("D"))], prefer="smb")
    assert not counted.errors and counted.frame["files"].sum() == 1


def test_refusing_server_says_so(tmp_path_factory: pytest.TempPathFactory) -> None:
    farm = SambaFarm(1, root=tmp_path_factory.mktemp("refusing"), first_host=21)
    server = farm.servers[0]
    server.extra_global["hosts allow"] = "127.0.0.99"    # not us
    with running(farm), pytest.raises(StoragePermission) as info:
        open_volume(server.access("D"))
    text = str(info.value)
    assert text.startswith(f"\\\\{server.host}\\DATAD: ") and "refused this client" in text, text
    assert server.password not in text


def test_smbprotocol_internals_are_the_ones_we_use() -> None:
    """_FastConnection replaces smbprotocol's receive loop and reads private fields: a new minor version of
    smbprotocol must be checked by hand before the pin in pyproject.toml moves."""
    problems = smb2.smbprotocol_problems()
    assert not problems, "smbprotocol changed under farmkeeper's SMB path:\n" + "\n".join(problems)
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    series = smb2.SMBPROTOCOL_SERIES
    major, minor = series.split(".")
    assert re.search(rf'"smbprotocol>={series}(\.\d+)?,<{major}\.{int(minor) + 1}"', pyproject), \
        f"pyproject.toml must pin smbprotocol to {series}.x (the series _smb2.SMBPROTOCOL_SERIES names)"

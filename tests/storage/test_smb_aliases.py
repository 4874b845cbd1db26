"""No deletion through an alias over SMB (issue 12, point 3): Samba follows a symbolic link to a folder and
reports the target's file id, so the walk must recognise a folder met under two names and skip it, naming
both; the validation probe reports such aliases on a share. Real smbd, real symlinks on the share."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from farmkeeper.storage import open_volume
from farmkeeper.validation import probe_share
from tests.fixtures.samba import SambaFarm, reset_shares
from tests.fixtures.smb_relay import QUERY_DIRECTORY, SMBRelay, command, status

pytestmark = pytest.mark.samba

DAY = "0/2024-03-01"
CAM1_FILE = f"video/cam-001/{DAY}/10/20240301T100000Z.mkv"
CAM4_FILE = f"video/cam-004/{DAY}/10/20240301T100000Z.mkv"


@pytest.fixture
def share(samba_farm: SambaFarm) -> Iterator[Path]:
    reset_shares(samba_farm)
    root = samba_farm.servers[0].share_path("DATAD")
    for rel in (CAM1_FILE, CAM4_FILE):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"held footage")
    yield root
    reset_shares(samba_farm)


def _where(samba_farm: SambaFarm, rel: str) -> str:
    return f"\\\\{samba_farm.servers[0].host}\\DATAD\\" + rel.replace("/", "\\")


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_two_names_of_one_camera_folder_walk_neither(share: Path, samba_farm: SambaFarm,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """video/cam-002 -> cam-001: which name is the link cannot be told over SMB, so neither is walked (a
    retention rule for cam-002 never reaches cam-001's files); the warning names both."""
    os.symlink("cam-001", share / "video/cam-002")
    with open_volume(samba_farm.servers[0].access("D")) as vol:
        caplog.set_level(logging.WARNING)
        assert [e.relpath for e in vol.walk()] == [CAM4_FILE]
        warned = _warnings(caplog)
        for a, b in (("video/cam-002", "video/cam-001"), ("video/cam-001", "video/cam-002")):
            assert any(m.startswith(_where(samba_farm, a)) and _where(samba_farm, b) in m for m in warned), warned
        assert list(vol.walk("video/cam-002")) == [] and list(vol.walk("video/cam-001")) == []
        assert vol.count() == {("cam-004", 0, "2024-03-01"): 1}
    assert (share / CAM1_FILE).read_bytes() == b"held footage"


def test_link_to_a_folder_elsewhere_is_skipped_the_real_one_walked(share: Path, samba_farm: SambaFarm,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """video/cam-003/0 -> ../cam-001/0: its '..' is cam-001, not cam-003, so it is the link."""
    (share / "video/cam-003").mkdir()
    os.symlink("../cam-001/0", share / "video/cam-003/0")
    with open_volume(samba_farm.servers[0].access("D")) as vol:
        caplog.set_level(logging.WARNING)
        assert sorted(e.relpath for e in vol.walk()) == [CAM1_FILE, CAM4_FILE]
        link, real = _where(samba_farm, "video/cam-003/0"), _where(samba_farm, "video/cam-001/0")
        assert any(m.startswith(link) and real in m for m in _warnings(caplog)), _warnings(caplog)
        assert list(vol.walk("video/cam-003")) == [] and list(vol.walk("video/cam-003/0")) == []
        assert list(vol.walk(f"video/cam-003/{DAY}")) == []     # a walk rooted below the link: not walked either
        assert [e.relpath for e in vol.walk("video/cam-001")] == [CAM1_FILE]
        assert vol.count("video") == {("cam-001", 0, "2024-03-01"): 1, ("cam-004", 0, "2024-03-01"): 1}


def test_a_loop_is_walked_once(share: Path, samba_farm: SambaFarm) -> None:
    os.symlink("..", share / f"video/cam-004/{DAY}/again")       # .../2024-03-01/again -> 0/
    os.symlink(".", share / f"video/cam-004/{DAY}/10/here")
    with open_volume(samba_farm.servers[0].access("D")) as vol:
        assert sorted(e.relpath for e in vol.walk("video/cam-004")) == [CAM4_FILE]


def test_reparse_point_is_never_entered(share: Path, samba_farm: SambaFarm, caplog: pytest.LogCaptureFixture) -> None:
    """A server that marks a folder as a reparse point (Windows: a junction or symbolic link): not entered.
    Samba does not mark followed links, so a relay sets the attribute on the cam-001 entry (signing off)."""
    server = samba_farm.servers[0]
    relay = SMBRelay(server.host)

    def mark(msgs: list[bytearray]) -> None:
        for m in msgs:
            if command(m) != QUERY_DIRECTORY or status(m) != 0:
                continue
            off = int.from_bytes(m[66:68], "little")
            while True:
                nxt = int.from_bytes(m[off:off + 4], "little")
                size = int.from_bytes(m[off + 60:off + 64], "little")
                if bytes(m[off + 80:off + 80 + size]).decode("utf-16-le") == "cam-001":
                    attrs = int.from_bytes(m[off + 56:off + 60], "little") | 0x400
                    m[off + 56:off + 60] = attrs.to_bytes(4, "little")
                if not nxt:
                    break
                off += nxt

    relay.mutate = lambda msgs: mark(msgs)
    try:
        with open_volume(server.access("D", host=relay.host, port=relay.port, require_signing=False)) as vol:
            caplog.set_level(logging.WARNING)
            assert [e.relpath for e in vol.walk()] == [CAM4_FILE]
            assert list(vol.walk("video/cam-001")) == []
            assert any("reparse point" in m and "cam-001" in m for m in _warnings(caplog))
    finally:
        relay.close()


def test_validation_probe_reports_aliases(share: Path, samba_farm: SambaFarm) -> None:
    os.symlink("cam-001", share / "video/cam-002")
    (share / "video/cam-003").mkdir()
    os.symlink("../cam-001/0", share / "video/cam-003/0")
    probe = probe_share(samba_farm.servers[0].access("D"))
    text = "\n".join(probe.aliases)
    assert probe.status == "ok" and len(probe.aliases) == 3, text
    for name in ("video\\cam-002", "video\\cam-001", "video\\cam-003\\0"):
        assert name in text

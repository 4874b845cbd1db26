"""SMB replies are checked as the protocol says (issue 12, point 2): when the session signs, every reply
MS-SMB2 requires to be signed must carry a valid signature, and on an encrypted session every reply must be
encrypted; anything else ends the connection with ``StorageUnavailable`` naming the share and never reaches
the caller. A relay between the client and a real smbd strips the "signed" flag and rewrites data."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from farmkeeper.errors import StorageUnavailable
from farmkeeper.storage import CopyItem, VolumeAccess, copy_files, open_volume
from farmkeeper.storage.copy import temp_name
from tests.fixtures.samba import SambaFarm, reset_shares
from tests.fixtures.smb_relay import (
    CREATE,
    F_SIGNED,
    QUERY_DIRECTORY,
    READ,
    STATUS_SUCCESS,
    TREE_CONNECT,
    Action,
    Mutation,
    SMBRelay,
    command,
    status,
)

pytestmark = pytest.mark.samba

NAME = "rec-signed"
WHERE = f"\\\\{NAME}\\DATAD"
FILE = "video/cam-1/0/2024-03-01/10/20240301T100000Z.mkv"
DATA = random.Random(12).randbytes(3 << 20)


def tamper(cmd: int, *, strip: bool, rewrite: bool = True) -> Mutation:
    """Clear the signed flag (and the signature) of replies to ``cmd``; optionally change their bytes too."""
    def mutate(msgs: list[bytearray]) -> Action:
        for m in msgs:
            if command(m) != cmd or status(m) != STATUS_SUCCESS:
                continue
            if strip:
                struct.pack_into("<I", m, 16, struct.unpack_from("<I", m, 16)[0] & ~F_SIGNED)
                m[48:64] = bytes(16)
            if rewrite and cmd == READ and len(m) > 100:
                m[-20:] = b"T" * 20    # the last bytes of the file data: tampered footage
            elif rewrite:
                m[-1] ^= 0xFF
        return None
    return mutate


@pytest.fixture(scope="module")
def relay(samba_farm: SambaFarm) -> Iterator[SMBRelay]:
    r = SMBRelay(samba_farm.servers[0].host)
    yield r
    r.close()


@pytest.fixture
def share(samba_farm: SambaFarm, relay: SMBRelay, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("FARMKEEPER_STORAGE__TIMEOUT", "10")   # no stalls here: only a bound on a loaded machine
    reset_shares(samba_farm)
    root = samba_farm.servers[0].share_path("DATAD")
    (root / FILE).parent.mkdir(parents=True)
    (root / FILE).write_bytes(DATA)
    yield root
    relay.mutate = relay.mutate_raw = None
    reset_shares(samba_farm)


def _access(relay: SMBRelay, samba_farm: SambaFarm, **kw: bool) -> VolumeAccess:
    s = samba_farm.servers[0]
    return VolumeAccess(NAME, "D", host=relay.host, port=relay.port, username=s.username, password=s.password, **kw)


@pytest.mark.parametrize("strip", [True, False], ids=["flag stripped", "flag kept"])
def test_tampered_read_never_reaches_the_caller(share: Path, relay: SMBRelay, samba_farm: SambaFarm,
                                                strip: bool) -> None:
    with open_volume(_access(relay, samba_farm)) as vol:
        assert vol.read_bytes(FILE) == DATA                     # signed and untouched: fine
        relay.mutate = tamper(READ, strip=strip)
        with pytest.raises(StorageUnavailable) as info:
            vol.read_bytes(FILE)
        relay.mutate = None
        text = str(info.value)
        assert text.startswith(WHERE) and ("unsigned reply" if strip else "does not verify") in text, text
        assert relay.settle(len(vol._all)) == len(vol._all)     # type: ignore[attr-defined]


def test_tampered_copy_is_not_copied_and_the_source_stays(share: Path, relay: SMBRelay,
                                                          samba_farm: SambaFarm) -> None:
    """The swap-back case: with the flag stripped and the data rewritten, verify=hash would hash the stream
    received; the copy must fail instead, leaving no destination file and the source as it was."""
    dst_server = samba_farm.servers[1]
    dst_root = dst_server.share_path("DATAE")
    with open_volume(_access(relay, samba_farm)) as src, open_volume(dst_server.access("E")) as dst:
        relay.mutate = tamper(READ, strip=True)
        with pytest.raises(StorageUnavailable) as info:
            copy_files(src, dst, [CopyItem(FILE, len(DATA), 0.0)], verify="hash", connections=1)
        assert str(info.value).startswith(WHERE), info.value
    assert not (dst_root / FILE).exists()
    partial = dst_root / temp_name(FILE)
    assert not partial.exists() or DATA.startswith(partial.read_bytes())   # only genuine bytes, to be resumed
    assert (share / FILE).read_bytes() == DATA


@pytest.mark.parametrize("cmd", [CREATE, QUERY_DIRECTORY], ids=["CREATE", "QUERY_DIRECTORY"])
def test_unsigned_listing_replies_end_the_connection(share: Path, relay: SMBRelay, samba_farm: SambaFarm,
                                                     cmd: int) -> None:
    with open_volume(_access(relay, samba_farm)) as vol:
        relay.mutate = tamper(cmd, strip=True, rewrite=False)
        with pytest.raises(StorageUnavailable) as info:
            list(vol.walk())
        assert str(info.value).startswith(WHERE) and "unsigned reply" in str(info.value)


@pytest.mark.parametrize("strip", [True, False], ids=["flag stripped", "flag kept, bytes changed"])
def test_unsigned_or_forged_tree_connect_refused(share: Path, relay: SMBRelay, samba_farm: SambaFarm,
                                                 strip: bool) -> None:
    relay.mutate = tamper(TREE_CONNECT, strip=strip, rewrite=not strip)
    with pytest.raises(StorageUnavailable) as info:
        open_volume(_access(relay, samba_farm))
    text = str(info.value)
    assert text.startswith(WHERE) and ("unsigned reply" if strip else "does not verify") in text, text
    assert relay.settle(0) == 0


def test_unencrypted_reply_on_an_encrypted_session(share: Path, relay: SMBRelay, samba_farm: SambaFarm) -> None:
    """On an encrypted session a plaintext reply (here: a forged READ answer) ends the connection."""
    with open_volume(_access(relay, samba_farm, encrypt=True)) as vol:
        assert vol.read_bytes(FILE) == DATA

        def forge(payload: bytes) -> Action:
            if payload[:4] != b"\xfdSMB":
                return None
            header = struct.pack("<4sHHIHHIIQIIQ16s", b"\xfeSMB", 64, 1, 0, READ, 1, 1, 0, 0, 0, 0, 0, bytes(16))
            return header + struct.pack("<HBBII4x", 17, 80, 0, 4, 0) + b"FAKE"

        relay.mutate_raw = forge
        with pytest.raises(StorageUnavailable) as info:
            vol.read_bytes(FILE)
        relay.mutate_raw = None
        assert str(info.value).startswith(WHERE) and "unencrypted reply" in str(info.value), info.value

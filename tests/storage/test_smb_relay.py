"""A broken or hostile file server cannot hang, crash or fool the SMB backend (issue 18).

Each case puts a reply-mutating relay (``tests/fixtures/smb_relay.py``) between the client and a real smbd,
signing off (so the mutations are not the signing issue), and runs every storage operation through it. Each
operation either gives exactly what it gives without the relay's mutation, or ends in a ``StorageError``
naming the share within the I/O timeout (``FARMKEEPER_STORAGE__TIMEOUT``); no other exception type escapes,
and no connection is leaked (the relay's open connections equal the volume's pooled ones, none checked out).
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from farmkeeper.errors import StorageError, StoragePermission
from farmkeeper.storage import CopyItem, Volume, VolumeAccess, copy_files, open_volume
from tests.fixtures.samba import SambaFarm, reset_shares
from tests.fixtures.smb_relay import (
    CLOSE,
    CREATE,
    EOF,
    NEGOTIATE,
    QUERY_DIRECTORY,
    READ,
    SESSION_SETUP,
    STALL,
    STATUS_NO_MORE_FILES,
    STATUS_SUCCESS,
    TREE_CONNECT,
    WRITE,
    Action,
    Mutation,
    SMBRelay,
    command,
    join,
    set_u16,
    set_u32,
    status,
)

pytestmark = pytest.mark.samba

TIMEOUT = 2.0
NAME = "rec-relay"                     # the server name errors must carry: \\rec-relay\DATAD
WHERE = f"\\\\{NAME}\\DATAD"
HOUR = "video/cam-1/0/2024-03-01/10"
BIG = f"{HOUR}/20240301T100000Z.mkv"   # 3 MiB: read with the open, then in pipelined READs
SMALL = f"{HOUR}/20240301T100500Z.mkv"
META = "meta/cam-1/2024-03-01/10/20240301T100000Z.json"
NEW = f"{HOUR}/20240301T101000Z.mkv"
BIG_DATA = random.Random(18).randbytes(3 << 20)
NEW_DATA = b"new footage" * 100


# --- mutations ---------------------------------------------------------------------------------------------

def at(cmd: int, action: Action) -> Mutation:
    """``action`` (STALL or EOF) for the first frame holding a reply to ``cmd``."""
    return lambda msgs: action if any(command(m) == cmd for m in msgs) else None


def edit(cmd: int, fn: Callable[[bytearray], None]) -> Mutation:
    """Apply ``fn`` to every successful reply to ``cmd``."""
    def mutate(msgs: list[bytearray]) -> Action:
        for m in msgs:
            if command(m) == cmd and status(m) == STATUS_SUCCESS:
                fn(m)
        return None
    return mutate


def truncate(cmd: int, keep: int) -> Mutation:
    return edit(cmd, lambda m: m.__delitem__(slice(keep, None)))


def first_entry(fn: Callable[[bytearray, int], None]) -> Mutation:
    """Edit the first entry of a QUERY_DIRECTORY listing (``fn(msg, entry offset)``)."""
    def apply(m: bytearray) -> None:
        if int.from_bytes(m[68:72], "little"):
            fn(m, int.from_bytes(m[66:68], "little"))
    return edit(QUERY_DIRECTORY, apply)


def endless_listing(min_page: int = 0) -> Mutation:
    """The server never says STATUS_NO_MORE_FILES: it repeats its last page of entries (of at least
    ``min_page`` bytes; smaller listings stay honest) instead."""
    last: dict[str, bytes] = {}

    def mutate(msgs: list[bytearray]) -> Action:
        for m in msgs:
            if command(m) != QUERY_DIRECTORY:
                continue
            if status(m) == STATUS_SUCCESS:
                if len(m) >= min_page:
                    last["page"] = bytes(m[64:])
                else:
                    last.pop("page", None)
            elif status(m) == STATUS_NO_MORE_FILES and "page" in last:
                set_u32(m, 8, STATUS_SUCCESS)
                del m[64:]
                m += last["page"]
        return None
    return mutate


def next_command_beyond(msgs: list[bytearray]) -> Action:
    if len(msgs) < 2:
        return None
    payload = bytearray(join(msgs))
    set_u32(payload, 20, len(payload) + 8)
    return bytes(payload)


def reply_to_unsent(msgs: list[bytearray]) -> Action:
    for m in msgs:
        if command(m) == CREATE:
            m[24:32] = (int.from_bytes(m[24:32], "little") + 100_000).to_bytes(8, "little")
    return None


# --- operations --------------------------------------------------------------------------------------------

@dataclass
class Ctx:
    access: VolumeAccess
    dst: VolumeAccess
    dst_root: Path
    share: Path


def op_walk(vol: Volume, ctx: Ctx) -> Any:
    return sorted((e.relpath, e.size) for e in vol.walk())


def op_count(vol: Volume, ctx: Ctx) -> Any:
    return vol.count()


def op_read(vol: Volume, ctx: Ctx) -> Any:
    return hashlib.sha256(vol.read_bytes(BIG)).hexdigest()


def op_write(vol: Volume, ctx: Ctx) -> Any:
    vol.write_bytes(NEW, NEW_DATA, mtime=1_700_000_000.0)
    return (ctx.share / NEW).read_bytes() == NEW_DATA


def op_delete(vol: Volume, ctx: Ctx) -> Any:
    result = vol.delete_files([SMALL])
    return result.deleted, result.missing, result.failed, (ctx.share / SMALL).exists()


def op_copy(vol: Volume, ctx: Ctx) -> Any:
    with open_volume(ctx.dst) as dst:   # a fresh one: the share was emptied behind the last one's back
        report = copy_files(vol, dst, [CopyItem(BIG, len(BIG_DATA), 1_700_000_000.0)], verify="hash",
                            connections=1)
    failed = [r.error for r in report.results if r.status == "failed"]
    if failed:
        return ("failed", failed)
    copied = ctx.dst_root / BIG
    return [r.status for r in report.results], copied.exists() and copied.read_bytes() == BIG_DATA


OPS: dict[str, Callable[[Volume, Ctx], Any]] = {
    "walk": op_walk, "count": op_count, "read_bytes": op_read, "write_bytes": op_write,
    "delete_files": op_delete, "copy_files": op_copy,
}
AFTER_OPEN = tuple(OPS)


@dataclass
class Case:
    name: str
    mutation: Callable[[], Mutation] | None
    targets: tuple[str, ...]                 # operations that must fail (with a StorageError naming the share)
    ops: tuple[str, ...] = field(default=AFTER_OPEN)


SETUP = ("open",)
CASES = [
    # the server stops answering, or hangs up, at each stage
    Case("stall at negotiate", lambda: at(NEGOTIATE, STALL), SETUP, SETUP),
    Case("stall at session setup", lambda: at(SESSION_SETUP, STALL), SETUP, SETUP),
    Case("stall at tree connect", lambda: at(TREE_CONNECT, STALL), SETUP, SETUP),
    Case("stall at read", lambda: at(READ, STALL), ("read_bytes", "copy_files"), ("read_bytes", "copy_files")),
    Case("stall at create", lambda: at(CREATE, STALL), ("walk", "delete_files"), ("walk", "delete_files")),
    Case("EOF at negotiate", lambda: at(NEGOTIATE, EOF), SETUP, SETUP),
    Case("EOF at session setup", lambda: at(SESSION_SETUP, EOF), SETUP, SETUP),
    Case("EOF at tree connect", lambda: at(TREE_CONNECT, EOF), SETUP, SETUP),
    Case("EOF at create", lambda: at(CREATE, EOF), AFTER_OPEN),
    Case("EOF at read", lambda: at(READ, EOF), ("read_bytes", "copy_files")),
    Case("EOF at write", lambda: at(WRITE, EOF), ("write_bytes",)),
    Case("negative session response", None, SETUP, SETUP),
    # truncated replies
    Case("truncated TREE_CONNECT", lambda: truncate(TREE_CONNECT, 64 + 4), SETUP, SETUP),
    Case("truncated CREATE", lambda: truncate(CREATE, 64 + 8), ("read_bytes", "write_bytes", "copy_files")),
    Case("truncated READ", lambda: truncate(READ, 64 + 10), ("read_bytes", "copy_files")),
    Case("truncated WRITE", lambda: truncate(WRITE, 64 + 4), ("write_bytes",)),
    Case("truncated CLOSE", lambda: truncate(CLOSE, 64 + 10), ("write_bytes",)),
    Case("truncated QUERY_DIRECTORY", lambda: truncate(QUERY_DIRECTORY, 64 + 6), ("walk", "count")),
    # offsets and lengths out of bounds
    Case("READ data offset 0 (the header)", lambda: edit(READ, lambda m: m.__setitem__(66, 0)),
         ("read_bytes", "copy_files")),
    Case("READ data offset inside the fixed part", lambda: edit(READ, lambda m: m.__setitem__(66, 64)),
         ("read_bytes", "copy_files")),
    Case("READ data length beyond the frame", lambda: edit(READ, lambda m: set_u32(m, 68, len(m))),
         ("read_bytes", "copy_files")),
    Case("WRITE count above the request", lambda: edit(WRITE, lambda m: set_u32(m, 68, 1 << 30)),
         ("write_bytes",)),
    Case("listing offset beyond the frame", lambda: edit(QUERY_DIRECTORY, lambda m: set_u16(m, 66, 0xFFF0)),
         ("walk", "count")),
    Case("listing offset into the header", lambda: edit(QUERY_DIRECTORY, lambda m: set_u16(m, 66, 16)),
         ("walk", "count")),
    Case("listing length beyond the frame", lambda: edit(QUERY_DIRECTORY, lambda m: set_u32(m, 68, len(m))),
         ("walk", "count")),
    Case("entry offset backward (into its own entry)", lambda: first_entry(lambda m, o: set_u32(m, o, 8)),
         ("walk", "count")),
    Case("entry offset beyond the listing", lambda: first_entry(lambda m, o: set_u32(m, o, 0x7FFFFFF0)),
         ("walk", "count")),
    Case("entry name beyond the listing", lambda: first_entry(lambda m, o: set_u32(m, o + 60, 0xFFF0)),
         ("walk", "count")),
    Case("next command beyond the frame", lambda: next_command_beyond, AFTER_OPEN),
    Case("reply to a message never sent", lambda: reply_to_unsent, AFTER_OPEN),
    Case("reply with another command", lambda: edit(CREATE, lambda m: set_u16(m, 12, CLOSE)), AFTER_OPEN),
    Case("endless listing", endless_listing, ("walk", "count")),
]


# --- fixtures ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def relay(samba_farm: SambaFarm) -> Iterator[SMBRelay]:
    r = SMBRelay(samba_farm.servers[0].host)
    yield r
    r.close()


@pytest.fixture
def ctx(samba_farm: SambaFarm, relay: SMBRelay, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ctx]:
    monkeypatch.setenv("FARMKEEPER_STORAGE__TIMEOUT", str(TIMEOUT))
    monkeypatch.setenv("FARMKEEPER_STORAGE__MAX_DIR_REQUESTS", "16")
    monkeypatch.setenv("FARMKEEPER_STORAGE__MAX_DIR_ENTRIES", "10000")
    reset_shares(samba_farm)
    src, dst = samba_farm.servers[0], samba_farm.servers[1]
    access = VolumeAccess(NAME, "D", host=relay.host, port=relay.port, username=src.username,
                          password=src.password, require_signing=False)
    relay.mutate, relay.refuse = None, False
    yield Ctx(access, dst.access("E"), dst.share_path("DATAE"), src.share_path("DATAD"))
    relay.mutate, relay.refuse = None, False
    reset_shares(samba_farm)


def _tree(ctx: Ctx) -> None:
    for rel, data in ((BIG, BIG_DATA), (SMALL, b"small"), (META, b"{}"), (NEW, None)):
        path = ctx.share / rel
        if data is None:
            path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (1_700_000_000.0, 1_700_000_000.0))
    for child in ctx.dst_root.iterdir():
        if child.is_dir():
            import shutil

            shutil.rmtree(child)


def _baseline(ctx: Ctx) -> dict[str, Any]:
    out = {}
    with open_volume(ctx.access) as vol:
        for name, op in OPS.items():
            _tree(ctx)
            out[name] = op(vol, ctx)
    return out


_BASELINE: dict[str, Any] = {}


@pytest.fixture
def baseline(ctx: Ctx) -> dict[str, Any]:
    """What each operation gives through the relay when it mutates nothing (computed once per session)."""
    if not _BASELINE:
        _BASELINE.update(_baseline(ctx))
    return _BASELINE


# --- the test ----------------------------------------------------------------------------------------------

def _attempt(fn: Callable[[], Any], what: str) -> tuple[Any, StorageError | None, float]:
    started = time.monotonic()
    try:
        result, error = fn(), None
    except StorageError as exc:
        result, error = None, exc
    except BaseException as exc:  # noqa: BLE001 - the point: nothing else may escape
        pytest.fail(f"{what}: {type(exc).__name__} escaped the storage layer: {exc}")
    return result, error, time.monotonic() - started


def _judge(case: Case, op: str, result: Any, error: StorageError | None, elapsed: float,
           baseline: dict[str, Any]) -> None:
    what = f"{case.name} / {op}"
    if error is not None:
        assert str(error).startswith(WHERE), f"{what}: the error does not name the share: {error}"
        assert elapsed < 2 * TIMEOUT, f"{what}: took {elapsed:.1f} s (I/O timeout {TIMEOUT} s): {error}"
        return
    if isinstance(result, tuple) and result and result[0] == "failed":   # copy_files: a failed file
        assert all(WHERE in e for e in result[1]), f"{what}: {result[1]}"
        return
    assert op not in case.targets, f"{what}: no error, result {result!r}"
    assert result == baseline[op], f"{what}: wrong result without an error"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_server_is_refused_in_time(case: Case, ctx: Ctx, relay: SMBRelay,
                                           baseline: dict[str, Any]) -> None:
    for op in case.ops:
        _tree(ctx)
        if op == "open":
            relay.refuse = case.mutation is None
            relay.mutate = case.mutation() if case.mutation else None
            vol, error, elapsed = _attempt(lambda: open_volume(ctx.access), f"{case.name} / open")
            relay.mutate, relay.refuse = None, False
            assert error is not None, f"{case.name}: open_volume succeeded"
            _judge(case, op, None, error, elapsed, baseline)
            if case.mutation is None:
                assert isinstance(error, StoragePermission) and "refused this client" in str(error), error
            assert relay.settle(0) == 0, f"{case.name}: connections left open after a failed open"
            continue
        with open_volume(ctx.access) as vol:
            relay.mutate = case.mutation() if case.mutation else None
            result, error, elapsed = _attempt(lambda: OPS[op](vol, ctx), f"{case.name} / {op}")  # noqa: B023
            relay.mutate = None
            _judge(case, op, result, error, elapsed, baseline)
            held = len(vol._all)                         # type: ignore[attr-defined]
            assert len(vol._pool) == held, f"{case.name} / {op}: a connection was not returned to the pool"  # type: ignore[attr-defined]
            assert relay.settle(held) == held, f"{case.name} / {op}: {relay.open_connections()} sockets open, " \
                f"{held} pooled"
        assert relay.settle(0) == 0, f"{case.name} / {op}: sockets left open after close"


def test_endless_listing_stops_at_the_entry_cap(ctx: Ctx, relay: SMBRelay) -> None:
    """A big page repeated for ever: the entry cap (well above the seed's 5000 per folder) ends it."""
    for i in range(700):
        path = ctx.share / f"{HOUR}/20240301T10{i // 60:02d}{i % 60:02d}Z.mkv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    with open_volume(ctx.access) as vol:
        relay.mutate = endless_listing(min_page=10_000)   # the 700-file folder's page only
        with pytest.raises(StorageError) as info:
            list(vol.walk(HOUR))
        assert "MAX_DIR_ENTRIES" in str(info.value) and str(info.value).startswith(WHERE)
        relay.mutate = None
        with pytest.raises(StorageError) as info:   # the root's small page repeated: the request cap
            relay.mutate = endless_listing()
            list(vol.walk())
        assert "MAX_DIR_REQUESTS" in str(info.value)

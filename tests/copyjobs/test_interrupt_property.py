"""Property: a copy job interrupted at any point (the connection dies with writes in flight: lost, landed out
of order, or torn) and then resumed ends with every file byte-identical, and no source is ever deleted before
its copy is verified — with the default read-back check and with ``verify=size`` alike (a partial is resumed
only from its recorded, acknowledged length, so even the size check cannot be fooled by it)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections import deque
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import delete, select

from farmkeeper import copyjobs
from farmkeeper.errors import StorageUnavailable
from farmkeeper.layout import video_path
from farmkeeper.models import CopyItem, CopyItemState, CopyJob, DeletionAudit
from farmkeeper.storage import Entry, Volume
from farmkeeper.storage.base import FileReader, FileWriter
from tests.copyjobs.conftest import LocalFarm, sessions
from tests.copyjobs.test_invariants import plan
from tests.helpers import START

CHUNK = 128 << 10


class Killed(StorageUnavailable):
    def __init__(self) -> None:
        super().__init__("connection killed (test)", server="rec1", share="DATAD")


class FlakyWriter(FileWriter):
    """Keeps up to ``depth`` writes in flight; when the budget runs out the connection dies and the writes in
    flight are lost (``lost``), only the newest lands (``gap``), or the oldest lands torn (``torn``)."""

    def __init__(self, owner: Flaky, inner: FileWriter) -> None:
        self.owner, self.inner = owner, inner
        self.flight: deque[tuple[int, bytes]] = deque()

    def write(self, offset: int, data: bytes) -> None:
        self.flight.append((offset, bytes(data)))
        self.owner.budget -= len(data)
        if self.owner.budget < 0:
            self._die()
        while len(self.flight) > 3:
            self.inner.write(*self.flight.popleft())

    def _die(self) -> None:
        mode = self.owner.mode
        if mode == "gap" and len(self.flight) > 1:
            self.inner.write(*self.flight[-1])
        elif mode == "torn":
            off, data = self.flight[0]
            self.inner.write(off, data[: len(data) // 2] + b"\xa5" * (len(data) - len(data) // 2))
        self.flight.clear()
        self.inner.abort()
        raise Killed()

    def acked(self) -> int | None:
        return self.inner.acked()

    def finish(self, mtime: float | None) -> Entry:
        while self.flight:
            self.inner.write(*self.flight.popleft())
        return self.inner.finish(mtime)

    def abort(self) -> None:
        self.inner.abort()


class DyingReader(FileReader):
    def __init__(self, owner: Flaky, inner: FileReader) -> None:
        self.owner, self.inner, self.size, self.mtime = owner, inner, inner.size, inner.mtime

    def chunks(self, start: int, end: int, chunk_size: int) -> Iterator[bytes]:
        for data in self.inner.chunks(start, end, chunk_size):
            self.owner.budget -= len(data)
            if self.owner.budget < 0:
                raise Killed()
            yield data

    def close(self) -> None:
        self.inner.close()


class Flaky:
    """A volume whose connection dies after ``budget`` bytes (on the writing or the reading side)."""

    def __init__(self, vol: Volume, budget: int, mode: str) -> None:
        self.vol, self.budget, self.mode = vol, budget, mode

    def __getattr__(self, name: str) -> Any:
        return getattr(self.vol, name)

    def __repr__(self) -> str:
        return repr(self.vol)

    def open_writer(self, relpath: str, *, truncate_to: int | None = None) -> FileWriter:
        writer = self.vol.open_writer(relpath, truncate_to=truncate_to)
        return FlakyWriter(self, writer) if self.mode != "read" else writer

    def open_reader(self, relpath: str) -> FileReader:
        reader = self.vol.open_reader(relpath)
        return DyingReader(self, reader) if self.mode == "read" else reader


def sha(path: Any) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reset(farm: LocalFarm) -> None:
    for server in ("rec1", "rec2"):
        shutil.rmtree(farm.share(server))
        farm.share(server).mkdir(parents=True)
    with sessions() as s:
        for table in (CopyItem, CopyJob, DeletionAudit):
            s.execute(delete(table))


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(min_value=(1 << 20) + 1, max_value=(2 << 20) + 12345), min_size=1, max_size=3),
       kills=st.lists(st.tuples(st.integers(min_value=0, max_value=5 << 20),
                                st.sampled_from(["lost", "gap", "torn", "read"])), min_size=1, max_size=3),
       verify=st.sampled_from(["hash", "size"]))
def test_interrupted_copies_resume_byte_identical_and_never_delete_unverified(
        local_farm: Any, sizes: list[int], kills: list[tuple[int, str]], verify: Any) -> None:
    farm: LocalFarm = getattr(local_farm, "farm", None) or local_farm()
    local_farm.farm = farm
    reset(farm)
    want = {}
    for i, size in enumerate(sizes):
        rel = video_path("cam-1", 0, START.replace(minute=i)).relpath
        path = farm.share("rec2") / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(hashlib.shake_256(f"{i}/{size}".encode()).digest(size))
        os.utime(path, (START.timestamp(), START.timestamp()))
        want[rel] = sha(path)
    options = copyjobs.JobOptions(verify=verify, connections=1, checkpoint_every=CHUNK, chunk_size=CHUNK)
    report = plan(farm, options)
    assert report.job_id is not None

    def check_nothing_lost() -> None:
        for rel, digest in want.items():
            src, dst = farm.share("rec2") / rel, farm.share("rec1") / rel
            assert src.exists() or sha(dst) == digest, f"{rel}: source deleted but the copy differs"
            if dst.exists():
                assert sha(dst) == digest, f"{rel}: a file in place at the destination differs"

    for budget, mode in [*kills, (1 << 40, "lost")]:
        with farm.volume("rec2") as src, farm.volume("rec1") as dst:
            s: Any = Flaky(src, budget, mode) if mode == "read" else src
            d: Any = Flaky(dst, budget, mode) if mode != "read" else dst
            with contextlib.suppress(Killed):
                copyjobs.run_batch(sessions, report.job_id, report.batches[0], s, d, options, db_interval=0.05)
        check_nothing_lost()
    for rel, digest in want.items():
        assert not (farm.share("rec2") / rel).exists() and sha(farm.share("rec1") / rel) == digest
    with sessions() as s:
        assert {i.state for i in s.exec(select(CopyItem))} == {CopyItemState.removed}

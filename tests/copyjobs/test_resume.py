"""Resume only what is provably ours and whole; the default verification reads the copy back (BLAKE2b)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from farmkeeper import copyjobs
from farmkeeper.copyjobs.batch import origin_of
from farmkeeper.errors import StorageUnavailable
from farmkeeper.models import CopyItem, CopyItemState
from farmkeeper.storage import CopyItem as StorageItem
from farmkeeper.storage import Volume, VolumeAccess, copy_files, open_volume
from farmkeeper.storage.base import FileReader
from farmkeeper.storage.copy import temp_name
from tests.copyjobs.conftest import LocalFarm, sessions
from tests.copyjobs.test_invariants import plan

REL = "video/cam-1/0/2026-03-01/10/20260301T100000Z.mkv"
SIZE = 3 << 20


def vol(root: Path, server: str) -> Volume:
    return open_volume(VolumeAccess(server=server, drive="D", local_path=str(root)), prefer="local")


def source(root: Path, rel: str = REL, size: int = SIZE, seed: str = "a") -> bytes:
    data = hashlib.shake_256(seed.encode()).digest(size)
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)
    os.utime(root / rel, (1_772_359_260, 1_772_359_260))
    return data


def item(root: Path, rel: str = REL, partial: tuple[str, int] | None = None) -> StorageItem:
    st = (root / rel).stat()
    return StorageItem(rel, st.st_size, st.st_mtime, partial=partial)


@pytest.mark.parametrize("verify", ["hash", "size"])
def test_a_stray_partial_is_restarted_not_resumed(tmp_path: Path, verify: Any) -> None:
    src_root, dst_root = tmp_path / "s", tmp_path / "d"
    data = source(src_root)
    stray = dst_root / temp_name(REL)              # another origin's partial, 2 MiB of other bytes
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"\xee" * (2 << 20))
    with vol(src_root, "rec2") as src, vol(dst_root, "rec1") as dst:
        report = copy_files(src, dst, [item(src_root)], verify=verify)
    assert [r.status for r in report.results] == ["copied"] and report.bytes_copied == SIZE
    assert (dst_root / REL).read_bytes() == data


def test_a_recorded_partial_resumes_from_its_acknowledged_length_only(tmp_path: Path) -> None:
    src_root, dst_root = tmp_path / "s", tmp_path / "d"
    data = source(src_root)
    tmp = dst_root / temp_name(REL)
    tmp.parent.mkdir(parents=True)
    acked = 1 << 20
    tmp.write_bytes(data[:acked] + b"\x00" * (512 << 10))   # a gap after the acknowledged prefix
    with vol(src_root, "rec2") as src, vol(dst_root, "rec1") as dst:
        report = copy_files(src, dst, [item(src_root, partial=(temp_name(REL), acked))])
    assert report.bytes_copied == SIZE - acked               # resumed at the checkpoint, not at the file's size
    assert (dst_root / REL).read_bytes() == data


def test_a_partial_of_a_source_that_changed_is_restarted(tmp_path: Path) -> None:
    src_root, dst_root = tmp_path / "s", tmp_path / "d"
    old = source(src_root, seed="old")
    tmp = dst_root / temp_name(REL)
    tmp.parent.mkdir(parents=True)
    tmp.write_bytes(old[: 1 << 20])
    planned = item(src_root, partial=(temp_name(REL), 1 << 20))
    new = source(src_root, seed="new")                           # same size, same mtime set back below
    os.utime(src_root / REL, (1_772_359_999, 1_772_359_999))
    with vol(src_root, "rec2") as src, vol(dst_root, "rec1") as dst:
        report = copy_files(src, dst, [planned])
    assert report.bytes_copied == SIZE and (dst_root / REL).read_bytes() == new


@pytest.mark.parametrize("verify", ["hash", "size"])
def test_a_partial_recorded_for_another_temporary_file_is_restarted(tmp_path: Path, verify: Any) -> None:
    """The recorded checkpoint names another temporary file (the item's destination changed since, e.g. to a
    conflict name): the partial found here is not that one, so it is rewritten from the start."""
    src_root, dst_root = tmp_path / "s", tmp_path / "d"
    data = source(src_root)
    tmp = dst_root / temp_name(REL)
    tmp.parent.mkdir(parents=True)
    tmp.write_bytes(b"\xee" * (2 << 20))                    # not this source's bytes
    other = temp_name(REL.replace(".mkv", "~rec3.mkv"))
    with vol(src_root, "rec2") as src, vol(dst_root, "rec1") as dst:
        report = copy_files(src, dst, [item(src_root, partial=(other, 1 << 20))], verify=verify)
    assert [r.status for r in report.results] == ["copied"] and report.bytes_copied == SIZE
    assert (dst_root / REL).read_bytes() == data


@pytest.mark.parametrize("verify", ["hash", "size"])
def test_a_partial_shorter_than_its_checkpoint_is_restarted(tmp_path: Path, verify: Any) -> None:
    """The destination lost the tail of an acknowledged partial (a crash before it reached the disk): resuming
    at the checkpoint would leave a hole, so the file is rewritten from the start."""
    src_root, dst_root = tmp_path / "s", tmp_path / "d"
    data = source(src_root)
    tmp = dst_root / temp_name(REL)
    tmp.parent.mkdir(parents=True)
    tmp.write_bytes(data[: 512 << 10])                       # the checkpoint said 1 MiB
    with vol(src_root, "rec2") as src, vol(dst_root, "rec1") as dst:
        report = copy_files(src, dst, [item(src_root, partial=(temp_name(REL), 1 << 20))], verify=verify)
    assert [r.status for r in report.results] == ["copied"] and report.bytes_copied == SIZE
    assert (dst_root / REL).read_bytes() == data


class _Corrupting:
    """A destination that flips one byte of what it is given (a bad disk, a tampering relay)."""

    def __init__(self, vol: Volume) -> None:
        self.vol = vol

    def __getattr__(self, name: str) -> Any:
        return getattr(self.vol, name)

    def open_writer(self, relpath: str, *, truncate_to: int | None = None) -> Any:
        writer = self.vol.open_writer(relpath, truncate_to=truncate_to)
        real = writer.write

        def write(offset: int, data: bytes) -> None:
            if offset == 0:
                data = bytes([data[0] ^ 1]) + bytes(data[1:])
            real(offset, data)

        writer.write = write  # type: ignore[method-assign]
        return writer


def test_read_back_verification_keeps_the_source_when_the_copy_differs(local_farm: Any) -> None:
    farm: LocalFarm = local_farm()
    data = source(farm.share("rec2"))
    report = plan(farm)
    assert report.job_id is not None
    with farm.volume("rec2") as src, farm.volume("rec1") as dst:
        result = copyjobs.run_batch(sessions, report.job_id, report.batches[0], src,
                                    _Corrupting(dst), copyjobs.JobOptions())  # type: ignore[arg-type]
    assert list(result.failed) == [REL] and "BLAKE2b" in result.failed[REL] and result.removed == 0
    assert (farm.share("rec2") / REL).read_bytes() == data and not (farm.share("rec1") / REL).exists()


class _LosingLastWrite(_Corrupting):
    """A destination that acknowledges but drops the write at ``offset`` (a lost write)."""

    def open_writer(self, relpath: str, *, truncate_to: int | None = None) -> Any:
        writer = self.vol.open_writer(relpath, truncate_to=truncate_to)
        real = writer.write
        writer.write = lambda offset, data: None if offset == SIZE - (1 << 20) else real(offset, data)  # type: ignore[method-assign]
        return writer


def test_size_verification_refuses_a_copy_that_lost_a_write(tmp_path: Path) -> None:
    """``--verify size`` still checks the finished temporary file: one short by a lost write is not put in place."""
    src_root, dst_root = tmp_path / "s", tmp_path / "d"
    source(src_root)
    dst_root.mkdir()
    with vol(src_root, "rec2") as src, vol(dst_root, "rec1") as dst:
        report = copy_files(src, _LosingLastWrite(dst), [item(src_root)], verify="size",  # type: ignore[arg-type]
                            chunk_size=1 << 20)
    assert [r.status for r in report.results] == ["failed"] and "size" in (report.results[0].error or "")
    assert not (dst_root / REL).exists() and not (dst_root / temp_name(REL)).exists()


@pytest.mark.parametrize("verify", ["hash", "size"])
def test_a_checkpoint_recorded_for_another_origin_is_not_resumed(local_farm: Any, verify: Any) -> None:
    """The item's checkpoint was recorded while copying from another origin (another source server's file of
    that name): the partial at the destination holds those bytes, so it is rewritten, not resumed."""
    farm: LocalFarm = local_farm()
    data = source(farm.share("rec2"))
    report = plan(farm, copyjobs.JobOptions(verify=verify))
    assert report.job_id is not None
    tmp = farm.share("rec1") / temp_name(REL)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(b"\xee" * (2 << 20))                   # rec3's bytes, checkpointed at 1 MiB
    with sessions() as s:
        row = s.exec(select(CopyItem)).one()
        assert row.partial_path is None
        row.partial_path, row.partial_bytes = temp_name(REL), 1 << 20
        row.partial_origin = origin_of(row).replace("rec2|", "rec3|", 1)
        s.add(row)
    with farm.volume("rec2") as src, farm.volume("rec1") as dst:
        result = copyjobs.run_batch(sessions, report.job_id, report.batches[0], src, dst,
                                    copyjobs.JobOptions(verify=verify))
    assert result.copied == 1 and result.bytes_copied == SIZE and not result.failed
    assert (farm.share("rec1") / REL).read_bytes() == data


class _DyingReader(FileReader):
    """A source whose connection dies after ``limit`` bytes."""

    def __init__(self, inner: FileReader, limit: int) -> None:
        self.inner, self.limit = inner, limit
        self.size, self.mtime = inner.size, inner.mtime

    def chunks(self, start: int, end: int, chunk_size: int) -> Iterator[bytes]:
        pos = start
        for data in self.inner.chunks(start, end, chunk_size):
            if pos + len(data) > self.limit:
                raise StorageUnavailable("connection lost (test)", server="rec2", share="DATAD", path=REL)
            pos += len(data)
            yield data

    def close(self) -> None:
        self.inner.close()


def test_a_copy_job_checkpoints_and_resumes_its_own_partial(local_farm: Any) -> None:
    farm: LocalFarm = local_farm()
    data = source(farm.share("rec2"), size=20 << 20)      # copied in 8 MiB chunks
    report = plan(farm)
    assert report.job_id is not None
    options = copyjobs.JobOptions(checkpoint_every=1 << 20, connections=1)
    with farm.volume("rec2") as src, farm.volume("rec1") as dst:
        real = src.open_reader
        src.open_reader = lambda rel: _DyingReader(real(rel), 17 << 20)  # type: ignore[method-assign]
        with pytest.raises(StorageUnavailable):
            copyjobs.run_batch(sessions, report.job_id, report.batches[0], src, dst, options)
    with sessions() as s:
        row = s.exec(select(CopyItem)).one()
        assert row.state == CopyItemState.pending and row.partial_path == temp_name(REL)
        assert row.partial_bytes == 16 << 20
        acked = row.partial_bytes
    assert (farm.share("rec2") / REL).exists()                 # nothing deleted unverified
    with sessions() as s:
        copyjobs.fail_job(s, report.job_id, "killed")
    again = plan(farm)
    with farm.volume("rec2") as src, farm.volume("rec1") as dst:
        result = copyjobs.run_batch(sessions, report.job_id, again.batches[0], src, dst, options)
    assert result.copied == 1 and result.bytes_copied == (20 << 20) - acked and result.removed == 1
    assert (farm.share("rec1") / REL).read_bytes() == data and not (farm.share("rec2") / REL).exists()
    with sessions() as s:
        row = s.exec(select(CopyItem)).one()
        assert row.partial_path is None and row.partial_bytes == 0

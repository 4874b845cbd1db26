"""The storage layer on both backends (local path and SMB against real Samba on loopback)."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farmkeeper.errors import (
    PathEscapeError,
    StorageAuthError,
    StorageFull,
    StorageNotFound,
    StoragePermission,
    StorageUnavailable,
)
from farmkeeper.layout import try_parse_footage
from farmkeeper.storage import CopyItem, Volume, copy_files, open_volume
from farmkeeper.storage import smb as smb_mod
from farmkeeper.storage.base import VolumeAccess, count_dir
from farmkeeper.storage.copy import temp_name
from tests.fixtures.samba import SambaFarm

pytestmark = pytest.mark.samba

HOUR = "video/cam-1/0/2024-03-01/10"
F1 = f"{HOUR}/20240301T100000Z.mkv"
F2 = f"{HOUR}/20240301T100500Z.mkv"
META = "meta/cam-1/2024-03-01/10/20240301T100000Z.json"


def _clean(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


@pytest.fixture(params=["local", "smb"])
def vol(request: pytest.FixtureRequest, samba_farm: SambaFarm) -> Iterator[Volume]:
    server = samba_farm.servers[0]
    _clean(server.share_path("DATAD"))
    access = server.local_access("D") if request.param == "local" else server.access("D")
    with open_volume(access) as volume:
        yield volume


@pytest.fixture
def pair(samba_farm: SambaFarm) -> Iterator[tuple[Volume, Volume, Path, Path]]:
    """An SMB source on the first server and an SMB destination on the second, both empty."""
    a, b = samba_farm.servers[0], samba_farm.servers[1]
    for s in (a, b):
        if not s.running:
            s.start()
        _clean(s.share_path("DATAE"))
    with open_volume(a.access("E")) as src, open_volume(b.access("E")) as dst:
        yield src, dst, a.share_path("DATAE"), b.share_path("DATAE")


def test_open_volume_picks_backend(samba_farm: SambaFarm) -> None:
    server = samba_farm.servers[0]
    assert type(open_volume(server.local_access("D"))).__name__ == "LocalVolume"
    with open_volume(server.access("D")) as v:
        assert type(v).__name__ == "SMBVolume"
    with open_volume(server.access("D", local_path="/nonexistent/x")) as v:
        assert type(v).__name__ == "SMBVolume"


def test_write_read_stat_walk(vol: Volume) -> None:
    vol.write_bytes(F1, b"hello", mtime=1_700_000_000.5)
    vol.write_bytes(F2, b"x" * 100_000)
    vol.write_bytes(META, b"{}")
    vol.write_bytes("notes/readme.txt", b"not footage")
    assert vol.read_bytes(F1) == b"hello"
    entry = vol.stat(F1)
    assert entry is not None and entry.size == 5 and abs(entry.mtime - 1_700_000_000.5) < 1e-3
    assert vol.stat("video/nothing/here.mkv") is None
    assert vol.stat(HOUR) is not None  # a folder
    files = {e.relpath: e.size for e in vol.walk()}
    assert files == {F1: 5, F2: 100_000, META: 2, "notes/readme.txt": 11}
    assert {e.relpath for e in vol.walk("video")} == {F1, F2}
    assert list(vol.walk("missing/prefix")) == []
    assert vol.count() == {("cam-1", 0, "2024-03-01"): 2, ("cam-1", None, "2024-03-01"): 1}
    assert vol.count("meta") == {("cam-1", None, "2024-03-01"): 1}
    space = vol.space()
    assert space.total > 0 and 0 <= space.free <= space.total and 0 <= space.free_percent <= 100
    vol.write_bytes(F1, b"shorter")  # overwrite truncates
    assert vol.read_bytes(F1) == b"shorter"


def test_has_file_answers_for_files_only(vol: Volume, samba_farm: SambaFarm) -> None:
    """The watchdog's look by name: a file is there; a missing one, a folder, a link (locally) are not files."""
    vol.write_bytes(F1, b"hello")
    vol.write_bytes(F2, b"")                       # an empty segment is still a segment
    assert vol.has_file(F1) and vol.has_file(F2)
    assert not vol.has_file("video/nothing/here.mkv")
    assert not vol.has_file(HOUR)                  # a folder
    assert not vol.has_file(F1 + "/below")         # a path through a file
    root = samba_farm.servers[0].share_path("DATAD")
    outside = root.parent / "outside-has-file.mkv"
    outside.write_bytes(b"x")
    link = root / HOUR / "20240301T000500Z.mkv"
    link.symlink_to(outside)
    try:
        if type(vol).__name__ == "LocalVolume":    # no listing counts a link; over SMB the server decides
            assert not vol.has_file(f"{HOUR}/20240301T000500Z.mkv")
        with pytest.raises(PathEscapeError):
            vol.has_file("../outside-has-file.mkv")
    finally:
        link.unlink()
        outside.unlink()


def test_makedirs_is_idempotent(vol: Volume) -> None:
    vol.makedirs("video/cam-2/1/2024-01-01/00")
    vol.makedirs("video/cam-2/1/2024-01-01/00")
    assert vol.stat("video/cam-2/1/2024-01-01/00") is not None
    assert list(vol.walk("video/cam-2")) == []


def test_walk_large_folder_pages(vol: Volume, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smb_mod, "_QD_BUFFER", 4096)  # forces several QUERY_DIRECTORY pages over SMB
    root = Path(vol.root) if hasattr(vol, "root") else None
    names = {f"{HOUR}/20240301T10{m:02d}{s:02d}Z.mkv" for m in range(10) for s in range(30)}
    for n in names:
        vol.write_bytes(n, b"")
    assert {e.relpath for e in vol.walk()} == names
    assert vol.count() == {("cam-1", 0, "2024-03-01"): 300}
    del root


def test_delete_prunes_only_hour_and_day_folders(vol: Volume) -> None:
    other_day = "video/cam-1/0/2024-03-02/00/20240302T000000Z.mkv"
    for rel in (F1, F2, META, other_day, "keep/x.bin"):
        vol.write_bytes(rel, b"data")
    result = vol.delete_files([F1, F2, META, "video/cam-1/0/2024-03-01/10/20240301T101000Z.mkv"])
    assert (result.deleted, result.missing, result.failed) == (3, 1, {})
    assert result.pruned_dirs == 4  # hour+day of video, hour+day of meta
    assert vol.stat("video/cam-1/0/2024-03-01") is None
    assert vol.stat("meta/cam-1/2024-03-01") is None
    assert vol.stat("video/cam-1/0") is not None  # never above video/<cam>/<stream>
    assert vol.stat("meta/cam-1") is not None
    assert vol.stat(other_day) is not None and vol.stat("keep/x.bin") is not None
    again = vol.delete_files([F1])
    assert (again.deleted, again.missing) == (0, 1)


@pytest.mark.parametrize("bad", ["keep/x.bin", "video", "video/x.bin", "../x", "meta"])
def test_delete_refuses_outside_footage_before_deleting(vol: Volume, bad: str) -> None:
    vol.write_bytes(F1, b"data")
    vol.write_bytes("keep/x.bin", b"data")
    with pytest.raises((StoragePermission, PathEscapeError)):
        vol.delete_files([F1, bad])
    assert vol.stat(F1) is not None and vol.stat("keep/x.bin") is not None


@pytest.mark.parametrize("bad", ["../etc/passwd", "/etc/passwd", "video/../../x", "a/./b", "C:/x", "a\x00b",
                                 "..\\..\\x"])
def test_path_escapes_rejected(vol: Volume, bad: str) -> None:
    for op in (vol.stat, vol.read_bytes, lambda p: list(vol.walk(p)), vol.makedirs, vol.remove):
        with pytest.raises(PathEscapeError) as info:
            op(bad)
        assert info.value.share == "DATAD"
    with pytest.raises(PathEscapeError):
        vol.write_bytes(bad, b"x")


def test_local_symlink_escape_rejected(samba_farm: SambaFarm, tmp_path: Path) -> None:
    server = samba_farm.servers[0]
    root = server.share_path("DATAD")
    _clean(root)
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path, root / "video")
    vol = open_volume(server.local_access("D"))
    with pytest.raises(PathEscapeError):
        vol.read_bytes("video/secret")
    with pytest.raises(PathEscapeError):
        vol.delete_files(["video/cam/secret"])
    assert (tmp_path / "secret").exists()
    assert list(vol.walk()) == []  # symlinks are not followed
    (root / "video").unlink()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["..", ".", "a", "b", "", "/", "\\", "c:", "x..y", "~"]), max_size=6))
def test_safe_paths_never_escape(tmp_path: Path, parts: list[str]) -> None:
    from farmkeeper.storage.local import LocalVolume

    vol = LocalVolume(VolumeAccess("s", "D", local_path=str(tmp_path)))
    raw = "/".join(parts)
    try:
        rel = vol.rel(raw)
    except PathEscapeError:
        return
    full = os.path.normpath(os.path.join(tmp_path, rel))
    assert full == str(tmp_path) or full.startswith(str(tmp_path) + os.sep)
    assert ".." not in rel.split("/")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["video/cam-1/0/2024-03-01/10", "video/cam-1/01/2024-03-01/10", "meta/c_2/2024-02-30/23",
                     "meta/c_2/2024-03-01/23", "video/bad id/0/2024-03-01/10", "video/cam/0/2024-03-01",
                     "other/cam/0/2024-03-01/10", "video/cam/2/2024-12-31/24"]),
    st.sampled_from(["20240301T100000Z.mkv", "20240301T105959Z.mkv", "20240301T106000Z.mkv",
                     "20240301T230000Z.json", "20241231T230000Z.mkv", "20240301T10000Z.mkv", "x.mkv",
                     "20240301T100000Z.toolongext", "20240230T230000Z.json"])), max_size=30))
def test_fast_count_matches_try_parse_footage(files: list[tuple[str, str]]) -> None:
    expected: dict[tuple[str, int | None, str], int] = {}
    for d, name in set(files):
        fp = try_parse_footage(f"{d}/{name}")
        if fp is not None:
            key = (fp.camera, fp.stream, fp.start.strftime("%Y-%m-%d"))
            expected[key] = expected.get(key, 0) + 1
    got: dict[tuple[str, int | None, str], int] = {}
    by_dir: dict[str, list[str]] = {}
    for d, name in set(files):
        by_dir.setdefault(d, []).append(name)
    for d, names in by_dir.items():
        count_dir(got, d, names)
    assert got == expected


def test_wrong_password(samba_farm: SambaFarm) -> None:
    secret = "Wr0ng-Secret-xyz"
    with pytest.raises(StorageAuthError) as info:
        open_volume(samba_farm.servers[0].access("D", password=secret))
    assert secret not in str(info.value) and secret not in repr(info.value)
    assert "127.0.0.2" in str(info.value)
    assert secret not in repr(samba_farm.servers[0].access("D", password=secret))


def test_missing_share(samba_farm: SambaFarm) -> None:
    with pytest.raises(StorageNotFound) as info:
        open_volume(samba_farm.servers[0].access("Q"))
    assert "DATAQ" in str(info.value)


def test_unreachable_server_is_transient() -> None:
    with pytest.raises(StorageUnavailable) as info:
        open_volume(VolumeAccess("ghost", "D", host="127.0.0.9", username="u", password="p"))
    assert info.value.transient


def _make(root: Path, rel: str, data: bytes, mtime: float = 1_700_000_000.0) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def _items(vol: Volume, prefix: str = "") -> list[CopyItem]:
    return [CopyItem(e.relpath, e.size, e.mtime) for e in vol.walk(prefix)]


@pytest.mark.parametrize("verify", ["size", "hash"])
def test_copy_share_to_share(pair: tuple[Volume, Volume, Path, Path], verify: str) -> None:
    src, dst, src_root, dst_root = pair
    files = {F1: os.urandom(3_000_000), F2: b"", META: b"{}", f"{HOUR}/20240301T101000Z.mkv": os.urandom(20_000)}
    for rel, data in files.items():
        _make(src_root, rel, data)
    seen = []
    report = copy_files(src, dst, _items(src), connections=3, verify=verify, chunk_size=1 << 20,  # type: ignore[arg-type]
                        progress=seen.append)
    assert report.count("copied") == 4 and report.ok
    for rel, data in files.items():
        assert (dst_root / rel).read_bytes() == data
        assert abs((dst_root / rel).stat().st_mtime - 1_700_000_000.0) < 1e-3
    assert not list(dst_root.rglob("*.fkpart"))
    assert seen[-1].files_done == 4 and seen[-1].bytes_done == seen[-1].bytes_total
    again = copy_files(src, dst, _items(src), verify=verify)  # type: ignore[arg-type]
    assert again.count("skipped") == 4


def test_copy_conflict_keeps_both(pair: tuple[Volume, Volume, Path, Path]) -> None:
    src, dst, src_root, dst_root = pair
    _make(src_root, F1, b"source version")
    _make(dst_root, F1, b"destination version", mtime=1_600_000_000.0)
    report = copy_files(src, dst, _items(src))
    (result,) = report.results
    assert result.status == "conflict"
    assert result.dst_relpath == f"{HOUR}/20240301T100000Z~{src.server}.mkv"
    assert (dst_root / F1).read_bytes() == b"destination version"
    assert (dst_root / result.dst_relpath).read_bytes() == b"source version"
    assert copy_files(src, dst, _items(src)).results[0].status == "conflict"  # idempotent


def test_copy_hash_detects_same_size_different_content(pair: tuple[Volume, Volume, Path, Path]) -> None:
    src, dst, src_root, dst_root = pair
    _make(src_root, F1, b"aaaa")
    _make(dst_root, F1, b"bbbb")  # same size and mtime: size mode is fooled, hash mode is not
    assert copy_files(src, dst, _items(src), verify="size").results[0].status == "skipped"
    assert copy_files(src, dst, _items(src), verify="hash").results[0].status == "conflict"


@pytest.mark.parametrize("size", [4096, 2 << 20], ids=["small", "large"])   # both sides of copy.SMALL_FILE
@pytest.mark.parametrize("backend", ["local", "smb"])
def test_a_different_destination_is_never_taken_for_the_copy_nor_overwritten(
        pair: tuple[Volume, Volume, Path, Path], tmp_path: Path, backend: str, size: int) -> None:
    """A destination of the same size and mtime but other bytes is not "identical" (the source would be
    deleted as copied): the copy goes to the conflict name; when that name holds other bytes too, the file
    fails and neither is overwritten; when it holds these bytes, nothing is copied again."""
    if backend == "smb":
        src, dst, src_root, dst_root = pair
    else:
        src_root, dst_root = tmp_path / "s", tmp_path / "d"
        src_root.mkdir(), dst_root.mkdir()
        src = open_volume(VolumeAccess("rec2", "D", local_path=str(src_root)), prefer="local")
        dst = open_volume(VolumeAccess("rec1", "D", local_path=str(dst_root)), prefer="local")
    ours, theirs, third = (hashlib.shake_256(seed).digest(size) for seed in (b"ours", b"theirs", b"third"))
    _make(src_root, F1, ours)
    _make(dst_root, F1, theirs)                              # same size, same mtime, other footage
    conflict = f"{HOUR}/20240301T100000Z~{src.server}.mkv"
    (first,) = copy_files(src, dst, _items(src)).results
    assert (first.status, first.dst_relpath) == ("conflict", conflict)
    assert (dst_root / F1).read_bytes() == theirs and (dst_root / conflict).read_bytes() == ours
    (again,) = copy_files(src, dst, _items(src)).results     # the conflict copy is these bytes: not copied again
    assert (again.status, again.bytes) == ("conflict", 0)
    _make(dst_root, conflict, third)                         # the conflict name now holds other bytes too
    (failed,) = copy_files(src, dst, _items(src)).results
    assert failed.status == "failed" and "both exist" in (failed.error or "")
    assert (dst_root / F1).read_bytes() == theirs and (dst_root / conflict).read_bytes() == third
    assert not list(dst_root.rglob("*.fkpart"))


def test_copy_local_to_smb_with_cap_and_dst_name(pair: tuple[Volume, Volume, Path, Path],
                                                 samba_farm: SambaFarm) -> None:
    _src, dst, src_root, dst_root = pair
    _make(src_root, F1, os.urandom(2_000_000))
    local = open_volume(samba_farm.servers[0].local_access("E"))
    calls = []
    report = copy_files(local, dst, [CopyItem(F1, 2_000_000, 1_700_000_000.0, dst_relpath=F2)],
                        max_bytes_per_s=1_000_000, chunk_size=256 << 10, progress=calls.append)
    assert report.results[0].status == "copied" and report.results[0].dst_relpath == F2
    assert (dst_root / F2).read_bytes() == (src_root / F1).read_bytes()
    assert len(calls) >= 2


def test_copy_full_destination(samba_full_share: tuple[object, str, Path], pair: tuple[Volume, Volume, Path, Path],
                               samba_farm: SambaFarm) -> None:
    src, _dst, src_root, _ = pair
    _server, _share, full_root = samba_full_share
    data = os.urandom(12 << 20)
    _make(src_root, F1, data)
    before = (src_root / F1).stat()
    with open_volume(samba_farm.servers[-1].access("F")) as full:
        with pytest.raises(StorageFull) as info:
            copy_files(src, full, _items(src), chunk_size=1 << 20)
        assert "DATAF" in str(info.value)
    after = (src_root / F1).stat()
    assert (src_root / F1).read_bytes() == data and after.st_mtime == before.st_mtime
    assert not list(full_root.rglob("*.fkpart"))


def test_copy_resumes_after_smbd_killed(pair: tuple[Volume, Volume, Path, Path], samba_farm: SambaFarm) -> None:
    src, dst, src_root, dst_root = pair
    data = os.urandom(24 << 20)
    _make(src_root, F1, data)
    tmp = dst_root / temp_name(F1)
    killer_done = threading.Event()
    acked: list[int] = []

    def kill_midway() -> None:
        """Once a checkpoint was acknowledged and 6 MiB landed (under load the acknowledgements can trail
        the bytes on disk: killing on size alone sometimes left nothing acknowledged to resume from)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if acked and tmp.exists() and tmp.stat().st_size >= 6 << 20:
                samba_farm.servers[1].kill()
                break
            time.sleep(0.01)
        killer_done.set()

    threading.Thread(target=kill_midway, daemon=True).start()
    with pytest.raises(StorageUnavailable):
        copy_files(src, dst, _items(src), chunk_size=1 << 20, max_bytes_per_s=16 << 20, checkpoint_every=1 << 20,
                   on_checkpoint=lambda rel, tmp_rel, n: acked.append(n))
    killer_done.wait(30)
    partial = tmp.stat().st_size
    assert 0 < acked[-1] <= partial < len(data)      # the acknowledged prefix, never more than what landed
    samba_farm.servers[1].start()
    item = _items(src)[0]
    resumable = CopyItem(item.relpath, item.size, item.mtime, partial=(temp_name(F1), acked[-1]))
    report = copy_files(src, dst, [resumable], chunk_size=1 << 20, verify="hash")
    assert report.results[0].status == "copied"
    assert report.results[0].bytes == len(data) - acked[-1]  # resumed from the checkpoint, not restarted
    assert hashlib.sha256((dst_root / F1).read_bytes()).digest() == hashlib.sha256(data).digest()
    assert not tmp.exists()

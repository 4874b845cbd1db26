"""Local deletes, pruning and walks never follow a symlink, also one swapped in after the paths were checked."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from farmkeeper.storage import VolumeAccess, open_volume
from farmkeeper.storage import local as local_mod
from tests.helpers import write_footage


@pytest.fixture(autouse=True, params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with both ways of opening a folder without following links: Linux's openat2
    (``RESOLVE_NO_SYMLINKS``, one call) and the ``O_NOFOLLOW`` walk used where openat2 is refused."""
    if request.param == "walk":
        monkeypatch.setattr(local_mod._OPENAT2, "usable", False)
    elif not local_mod._OPENAT2.usable:
        pytest.fail("openat2 is refused on this machine (kernel before 5.6 or a seccomp filter): only the walk "
                    "can be tested", pytrace=False)
    return str(request.param)


def volume(root: Path) -> Any:
    return open_volume(VolumeAccess(server="rec1", drive="D", local_path=str(root)), prefer="local")


def files(root: Path, under: str) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / under).rglob("*") if p.is_file()}


def relative_link(path: Path, target: Path) -> None:
    """``path`` → ``target`` as a relative link (``cam-2 -> cam-1``): what a user of the share makes, and the form a
    resolver that only refuses to leave the root (``RESOLVE_BENEATH`` alone) would follow."""
    path.symlink_to(os.path.relpath(target, path.parent), target_is_directory=True)


def swap_for_link(path: Path, target: Path) -> None:
    shutil.rmtree(path)
    relative_link(path, target)


@pytest.mark.parametrize("where", ["camera", "hour"])
def test_a_folder_swapped_for_a_symlink_after_the_check_is_not_followed(tmp_path: Path, where: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "D"
    held = write_footage(root, "cam-1", 3, meta=False)       # held footage of cam-1
    doomed = sorted(write_footage(root, "cam-2", 3, meta=False, seed=1))
    # the same names under cam-1 as under cam-2, so a followed link would delete cam-1's files
    for rel in doomed:
        twin = root / rel.replace("cam-2", "cam-1")
        twin.parent.mkdir(parents=True, exist_ok=True)
        twin.write_bytes(b"held")
    before = files(root, "video/cam-1")
    real_check = local_mod.check_deletable

    def check_then_swap(vol: Any, relpaths: Iterable[str]) -> list[str]:
        out = real_check(vol, relpaths)                     # the paths are checked here ...
        if where == "camera":                               # ... and an attacker swaps a folder right after
            swap_for_link(root / "video" / "cam-2", root / "video" / "cam-1")
        else:
            hour = (root / doomed[0]).parent
            swap_for_link(hour, root / Path(doomed[0].replace("cam-2", "cam-1")).parent)
        return out

    monkeypatch.setattr(local_mod, "check_deletable", check_then_swap)
    with volume(root) as vol:
        result = vol.delete_files(doomed)
    assert files(root, "video/cam-1") == before and set(held) <= before
    assert result.failed and all("symbolic link" in why or "ELOOP" in why or "Too many" in why
                                 for why in result.failed.values())


def test_pruning_never_removes_a_folder_through_a_symlink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "D"
    doomed = sorted(write_footage(root, "cam-2", 1, meta=False))
    outside = tmp_path / "outside"
    day = Path(doomed[0]).parts[3]                           # video/cam-2/0/<day>/<hour>/<file>
    (outside / day / "10").mkdir(parents=True)              # an empty folder tree elsewhere, same names
    real = local_mod.prune_candidates

    def swap_then_prune(gone: Iterable[str]) -> list[list[str]]:
        swap_for_link(root / "video" / "cam-2" / "0", outside)
        return real(gone)

    monkeypatch.setattr(local_mod, "prune_candidates", swap_then_prune)
    with volume(root) as vol:
        result = vol.delete_files(doomed)
    assert result.deleted == 1 and result.pruned_dirs == 0
    assert (outside / day / "10").is_dir()


def test_the_walk_never_enters_a_symlinked_folder(tmp_path: Path) -> None:
    root = tmp_path / "D"
    cam1 = write_footage(root, "cam-1", 4)
    (root / "video" / "cam-2").symlink_to(root / "video" / "cam-1", target_is_directory=True)
    (root / "meta" / "cam-2").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "secret").write_bytes(b"not footage")     # a file symlink named like a segment is not a file
    hour = (root / sorted(cam1)[0]).parent
    (hour / "20260301T235900Z.mkv").symlink_to(tmp_path / "secret")
    with volume(root) as vol:
        assert {e.relpath for e in vol.walk()} == set(cam1)
        assert list(vol.walk("video/cam-2")) == [] and list(vol.walk("video/cam-2/0")) == []
        assert {d for d, _ in vol.list_files_by_dir()} >= {"video/cam-1/0/2026-03-01/10"}
        assert not [d for d, _ in vol.list_files_by_dir() if "cam-2" in d]
        result = vol.delete_files([p.replace("cam-1", "cam-2") for p in cam1 if p.startswith("video/")])
    (hour / "20260301T235900Z.mkv").unlink()
    assert not result.deleted and set(cam1) == files(root, "video") | files(root, "meta")


def test_folder_names_lists_one_folder_and_never_through_a_link(tmp_path: Path) -> None:
    root = tmp_path / "D"
    held = sorted(write_footage(root, "cam-1", 4, meta=False))
    hour = Path(held[0]).parent.as_posix()
    (root / hour / "sub").mkdir()
    (root / hour / "link.mkv").symlink_to(root / held[0])
    relative_link(root / "video" / "cam-2", root / "video" / "cam-1")
    (root / "video" / "cam-3").symlink_to(root / "video" / "cam-1", target_is_directory=True)   # absolute
    with volume(root) as vol:
        assert vol.folder_names(hour.replace("cam-1", "cam-3")) == []
        assert sorted(vol.folder_names(hour)) == sorted(Path(p).name for p in held if Path(p).parent.as_posix() == hour)
        assert vol.folder_names(hour.replace("cam-1", "cam-2")) == []          # the alias is not followed
        assert vol.folder_names("video/cam-9/0/2026-01-01/00") == []            # missing: none


def test_probe_overwrites_in_place_and_never_writes_through_a_link(tmp_path: Path) -> None:
    from farmkeeper.errors import StorageError

    root, outside = tmp_path / "D", tmp_path / "outside.txt"
    root.mkdir()
    outside.write_bytes(b"not yours")
    with volume(root) as vol:
        space = vol.probe(".farmkeeper-probe", b"a longer first probe\n")
        assert (root / ".farmkeeper-probe").read_bytes() == b"a longer first probe\n"
        assert space.total > 0 and 0 <= space.free <= space.total
        vol.probe(".farmkeeper-probe", b"short\n")
        assert (root / ".farmkeeper-probe").read_bytes() == b"short\n"      # no tail of the longer one
        (root / ".farmkeeper-probe").unlink()
        (root / ".farmkeeper-probe").symlink_to(outside)
        with pytest.raises(StorageError, match="cannot write"):
            vol.probe(".farmkeeper-probe", b"probe\n")
    assert outside.read_bytes() == b"not yours"

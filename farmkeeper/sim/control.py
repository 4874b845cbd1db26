"""Simulator controls: stall a camera, fail a volume (``<state dir>/control.json``, read by every server process).

``farmkeeper sim FARMFILE --stall CAM`` / ``--resume CAM`` / ``--fail-volume SERVER:DRIVE`` /
``--restore-volume SERVER:DRIVE`` update the file and return. At its next poll (~1 s) a server process
stops writing segments of a stalled camera (it still answers its probe: the recorder hung), and moves
the share root of a failed volume aside (``<root>.failed``), so every access to it fails like a volume
that is gone; restoring moves it back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from farmkeeper.errors import SpecError
from farmkeeper.layout import CAMERA_ID_RE

CONTROL_FILE = "control.json"
FAILED_SUFFIX = ".failed"


@dataclass(frozen=True)
class SimControl:
    stalled: frozenset[str] = frozenset()
    failed_volumes: frozenset[str] = frozenset()      # "server:D"


def read_control(state_dir: str | os.PathLike[str]) -> SimControl:
    try:
        data = json.loads((Path(state_dir) / CONTROL_FILE).read_text())
    except (OSError, ValueError):
        return SimControl()
    if not isinstance(data, dict):
        return SimControl()
    return SimControl(frozenset(map(str, data.get("stalled", []))), frozenset(map(str, data.get("failed_volumes", []))))


def volume_key(text: str) -> str:
    """``rec1:d`` → ``rec1:D`` (or ``SpecError``)."""
    server, _, drive = text.rpartition(":")
    if not server or len(drive) != 1 or not drive.isalpha():
        raise SpecError(f"not SERVER:DRIVE: {text!r} (e.g. rec1:D)")
    return f"{server}:{drive.upper()}"


def update_control(state_dir: str | os.PathLike[str], *, stall: tuple[str, ...] = (), resume: tuple[str, ...] = (),
                   fail_volume: tuple[str, ...] = (), restore_volume: tuple[str, ...] = ()) -> SimControl:
    """Apply the changes to the control file (written atomically) and return the new controls."""
    for cam in (*stall, *resume):
        if not CAMERA_ID_RE.match(cam):
            raise SpecError(f"not a camera id: {cam!r}")
    current = read_control(state_dir)
    stalled = (current.stalled | set(stall)) - set(resume)
    failed = (current.failed_volumes | {volume_key(v) for v in fail_volume}) - {volume_key(v) for v in restore_volume}
    path = Path(state_dir) / CONTROL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name("." + path.name)
    temp.write_text(json.dumps({"stalled": sorted(stalled), "failed_volumes": sorted(failed)}))
    temp.replace(path)
    return SimControl(frozenset(stalled), frozenset(failed))


def set_volume_failed(root: Path, failed: bool) -> bool:
    """Move a share root aside (failed) or back; True when something changed."""
    aside = root.with_name(root.name + FAILED_SUFFIX)
    if failed and root.is_dir() and not aside.exists():
        root.rename(aside)
        return True
    if not failed and aside.is_dir() and not root.exists():
        aside.rename(root)
        return True
    return False

"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from typer.testing import CliRunner

from farmkeeper.layout import meta_path, video_path

T = TypeVar("T")
START = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)


def wait_for(what: str, check: Callable[[], T | None], timeout: float, every: float = 0.3) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` and the last value after ``timeout``.

    Exceptions count as "not yet" (a busy database, a server still starting) and are shown if time runs out.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # noqa: BLE001 - keep polling through transient errors
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r})")


def write_footage(root: Path, cam: str, count: int, *, size: int = 64 << 10, start: datetime = START,
                  step_s: int = 60, meta: bool = True, seed: int = 0) -> dict[str, str]:
    """``count`` video segments (stream 0 and 1) plus metadata of ``cam`` under a share root; relpath → sha256."""
    out: dict[str, str] = {}
    for i in range(count):
        t = start + timedelta(seconds=i * step_s)
        rels = [video_path(cam, i % 2, t).relpath]
        if meta:
            rels.append(meta_path(cam, t).relpath)
        for j, rel in enumerate(rels):
            n = size + i * 1013 if j == 0 else 200 + i
            data = hashlib.shake_256(f"{cam}/{rel}/{seed}".encode()).digest(n)
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.utime(path, (t.timestamp() + 60, t.timestamp() + 60))
            out[rel] = hashlib.sha256(data).hexdigest()
    return out


def tree_hashes(root: Path, cam: str) -> dict[str, str]:
    """relpath → sha256 of every file under the camera's folders (dot files included)."""
    out = {}
    for top in ("video", "meta"):
        base = root / top / cam
        if not base.exists():
            continue
        for path in base.rglob("*"):
            if path.is_file():
                out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    """Run the farmkeeper CLI in process: (exit code, output); unexpected exceptions propagate."""
    from farmkeeper.cli import app

    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def parse_json(out: str) -> dict[str, Any]:
    """The JSON document the CLI printed (log lines around it are ignored)."""
    start = re.search(r'^\{\n  "', out, re.MULTILINE)
    assert start is not None, out
    value, _end = json.JSONDecoder().raw_decode(out[start.start():])
    assert isinstance(value, dict)
    return value


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


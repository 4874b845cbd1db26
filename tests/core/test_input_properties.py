"""Property tests of hostile input (hypothesis): farm files mutated every way a person or an attacker could
(deleted, duplicated, retyped, nested, huge and tiny values, unicode and control characters) either apply or
are refused with only ``file:line: field: message`` lines, exit 1, and an unchanged inventory; the CLI's own
arguments get a clear error and exit 2. Never a traceback. In process (typer's CliRunner) on SQLite."""

from __future__ import annotations

import copy
import re
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from farmkeeper.cli import app

runner = CliRunner()
FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


def base_farm(root: Path) -> dict[str, Any]:
    return {
        "farm": {"name": "fuzz", "down_after": "30s", "health_interval": "10s", "stall_after": "2m",
                 "notify": ["json://127.0.0.1:9/", {"env": "OPS_URL"}]},
        "storage": {"min_free": "1GB", "min_free_percent": 5, "limit_storage_days": True,
                    "default_max_storage_days": 30, "default_path": "D:\\Data"},
        "servers": [
            {"name": "rec1", "host": "127.0.0.2", "role": "primary", "master": True,
             "health": "tcp://127.0.0.2:50001", "smb": {"port": 445, "username": "farm", "password_env": "FARM_PW"},
             "max_cameras": 10, "failover_to": ["spare1"],
             "volumes": [{"drive": "D", "path": str(root / "rec1"), "capacity": "2TiB"}]},
            {"name": "spare1", "host": "127.0.0.3", "role": "redundant", "health": "smb",
             "volumes": [{"drive": "D", "path": str(root / "spare1")}]},
        ],
        "cameras": [
            {"id": "cam-1", "name": "Lobby", "home": "rec1", "streams": 2, "max_storage_days": "3;20", "priority": 4},
            {"id": "cam-2", "home": "rec1", "movable": False, "storage_path": "D:\\Data"},
        ],
    }


def paths(data: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from paths(value, (*prefix, i))


def get(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


ODD = ["99999999999999PiB", "2000000000d", "1025PiB", ".inf", "-.inf", ".nan", "1e400", "-1", "0", "0.0001s",
       "9" * 40, "9" * 5000, "5s", "1 EiB", "*D:\\Data", "D:\\..\\x", "E:\\Data;*E:\\Data", "json://", "\x00",
       "a\u202eb", "\u2028", "tab\there", "\x1b[2J", "ünïcødé", "🎥", "", " ", "~", "null", "yes", "3;0", "3;20;4"]
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), st.sampled_from(ODD),
    st.lists(st.integers(min_value=-5, max_value=5), max_size=3),
    st.dictionaries(st.text(max_size=6), st.integers(min_value=0, max_value=9), max_size=2),
)


@st.composite
def mutated_farm_text(draw: st.DrawFn, root: Path) -> str:
    data = base_farm(root)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        where = draw(st.sampled_from(list(paths(data))[1:]))
        parent, last = get(data, where[:-1]), where[-1]
        op = draw(st.sampled_from(["delete", "duplicate", "retype", "nest", "rename"]))
        if op == "delete":
            del parent[last]
        elif op == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = parent.pop(last)
        elif op == "nest":
            value = parent[last]
            for _ in range(draw(st.integers(min_value=1, max_value=150))):
                value = [value] if draw(st.booleans()) else {"x": value}
            parent[last] = value
        else:
            parent[last] = draw(VALUES)
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=10_000)
    if draw(st.booleans()):     # and at the text level: a stray character or a line given twice
        lines = text.splitlines(keepends=True)
        at = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        if draw(st.booleans()):
            lines.insert(at, lines[at])
        else:
            col = draw(st.integers(min_value=0, max_value=len(lines[at])))
            char = draw(st.characters(blacklist_categories=("Cs",)) | st.sampled_from(list("&*![]{}:-|>'\"#%@`\t")))
            lines[at] = lines[at][:col] + char + lines[at][col:]
        text = "".join(lines)
    return text


def dump(url: str) -> str:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return "\n".join(conn.iterdump())


@pytest.fixture
def farm_root(tmp_path: Path, inventory_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FARMKEEPER_STORAGE__PREFER", "local")
    root = tmp_path / "vol"
    for name in ("rec1", "spare1"):
        (root / name).mkdir(parents=True)
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(base_farm(root), sort_keys=False))
    assert runner.invoke(app, ["apply", str(path)]).exit_code == 0
    return root


@FAST
@given(data=st.data())
def test_any_farm_file_applies_or_is_refused_cleanly(data: st.DataObject, farm_root: Path, inventory_url: str,
                                                     tmp_path: Path) -> None:
    text = data.draw(mutated_farm_text(farm_root))
    path = tmp_path / "farm.yaml"
    path.write_bytes(text.encode("utf-8"))
    before = dump(inventory_url)
    result = runner.invoke(app, ["apply", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), (text, result.output)
    assert "Traceback" not in result.output
    event(f"exit {result.exit_code}")
    if result.exit_code == 0:
        return
    assert result.exit_code == 1, result.output
    allowed = re.compile(rf"^({re.escape(str(path))}:\d+: \S.*"
                         rf"|error: \d+ problems? in {re.escape(str(path))}; nothing changed"
                         rf"|error: {re.escape(str(path))}: .*; nothing changed)$")
    lines = result.output.splitlines()
    assert lines and all(allowed.match(line) for line in lines), (text, result.output)
    assert dump(inventory_url) == before


# --- the CLI's own arguments ------------------------------------------------------------------------

NOT_A_DURATION = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Nd", "Cs")), min_size=1, max_size=12),
    st.integers(min_value=8, max_value=40).map(lambda n: "9" * n + "d"),
    st.sampled_from(["nan", "inf", "-5s", "1e400", "5x", "1h-1m", "8d", "0.5.5s", "9" * 5000]),
)
BAD_FLOAT = st.one_of(st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0, -1.0, 1e7, 1e308]),
                      st.floats(max_value=0, allow_nan=False))
MOMENT = st.one_of(st.text(max_size=30), st.datetimes().map(datetime.isoformat),
                   st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-13-01",
                                    "2026-11-25T10:00:00Z", "2026-11-25", "yesterday", ""]))
NAME = st.one_of(st.text(max_size=70), st.sampled_from(["cam-001", "rec1", "spare1", "-x", "--help", "a" * 65]))
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SERVER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def when_ok(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.strip())
        from datetime import UTC
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
    assert "Traceback" not in result.output, args
    return result.exit_code, result.output


@pytest.fixture
def example(inventory_url: str) -> None:
    assert runner.invoke(app, ["apply", str(Path(__file__).parents[2] / "examples" / "farm.yaml")]).exit_code == 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(camera=NAME, start=MOMENT, end=MOMENT)
def test_hold_arguments(example: None, camera: str, start: str, end: str) -> None:
    code, out = cli("hold", "add", f"--from={start}", f"--to={end}", "--reason=case 7", "--", camera)
    begin, until = when_ok(start), when_ok(end)
    valid = bool(ID_RE.match(camera)) and begin is not None and until is not None and until > begin
    if not valid:
        assert code == 2 and ("error" in out or "Usage" in out), (camera, start, end, out)
    else:
        assert code in (0, 1) and (code == 0) == (camera in {"cam-001", "cam-002", "cam-003", "cam-004"}), out


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(camera=NAME, server=NAME, mode=st.one_of(st.sampled_from(["on", "off"]), st.text(max_size=5)))
def test_name_arguments(example: None, camera: str, server: str, mode: str) -> None:
    code, _ = cli("camera", "pin", "--", camera, server)
    assert code == 2 if not (ID_RE.match(camera) and SERVER_RE.match(server)) else code in (0, 1)
    code, _ = cli("server", "maintenance", "--", server, mode)
    assert code == 2 if not (SERVER_RE.match(server) and mode in ("on", "off")) else code in (0, 1)
    assume(not SERVER_RE.match(server) or not ID_RE.match(camera))   # a valid move would run the flow
    code, _ = cli("move", f"--to={server}", "--footage=move", "--", camera)
    assert code == 2


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(watch=NOT_A_DURATION, mbps=BAD_FLOAT, connections=st.integers().filter(lambda n: not 1 <= n <= 64),
       wait=BAD_FLOAT.filter(lambda x: not 0 <= x <= 86400))
def test_duration_and_number_arguments(example: None, watch: str, mbps: float, connections: int,
                                       wait: float) -> None:
    assert cli("run", "health-check", f"--watch={watch}")[0] == 2
    assert cli("swap-back", "--camera", "cam-001", "--max-mbps", str(mbps))[0] == 2
    assert cli("swap-back", "--camera", "cam-001", "--connections", str(connections))[0] == 2
    assert cli("move", "cam-001", "--to", "spare1", "--footage", "move", "--wait-closed", str(wait))[0] == 2

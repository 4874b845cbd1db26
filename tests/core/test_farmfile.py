"""The farm file: every kind of bad input names file:line:field and changes nothing; apply is idempotent;
export applies back to the same inventory. Inventory tests run on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlmodel import Session, select

from farmkeeper.db import dispose_engines, make_engine, migrate, session_scope
from farmkeeper.errors import FarmFileError, InventoryError
from farmkeeper.farmfile import apply_farm_file, dump_farm_yaml, export_farm, parse_farm_file
from farmkeeper.models import Camera, Role, Server, ServerState, Volume

EXAMPLE = Path(__file__).parents[2] / "examples" / "farm.yaml"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> Any:
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    migrate(url)
    yield url
    dispose_engines()


def snapshot(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    with Session(engine) as session:
        data = {
            "servers": [s.model_dump() for s in session.exec(select(Server).order_by(Server.name))],
            "volumes": [v.model_dump(exclude={"id"}) for v in session.exec(
                select(Volume).order_by(Volume.server_name, Volume.drive))],
            "cameras": [c.model_dump() for c in session.exec(select(Camera).order_by(Camera.id))],
            "export": export_farm(session),
        }
    engine.dispose()
    return data


def apply_text(url: str, text: str, filename: str = "farm.yaml") -> Any:
    spec = parse_farm_file(text, filename)
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            return apply_farm_file(session, spec)
    finally:
        engine.dispose()


def test_example_applies_idempotently(db_url: str) -> None:
    text = EXAMPLE.read_text()
    first = apply_text(db_url, text)
    assert first.changed and "camera cam-001" in first.created
    before = snapshot(db_url)
    second = apply_text(db_url, text)
    assert not second.changed, (second.created, second.updated, second.removed)
    assert snapshot(db_url) == before


def test_runtime_state_survives_apply(db_url: str) -> None:
    text = EXAMPLE.read_text()
    apply_text(db_url, text)
    engine = make_engine(db_url)
    with session_scope(engine) as session:
        cam = session.get(Camera, "cam-001")
        assert cam is not None
        cam.current, cam.home = "spare1", "spare1"   # a failover, then an ownership recompute
        rec1 = session.get(Server, "rec1")
        assert rec1 is not None
        rec1.state, rec1.role = ServerState.down, Role.redundant
    engine.dispose()
    assert not apply_text(db_url, text).changed
    after = snapshot(db_url)
    cam1 = next(c for c in after["cameras"] if c["id"] == "cam-001")
    rec1_after = next(s for s in after["servers"] if s["name"] == "rec1")
    assert (cam1["current"], cam1["home"]) == ("spare1", "spare1")
    assert (rec1_after["state"], rec1_after["role"]) == (ServerState.down, Role.redundant)


def test_changed_declared_home_wins(db_url: str) -> None:
    text = EXAMPLE.read_text()
    apply_text(db_url, text)
    result = apply_text(db_url, text.replace("{id: cam-002, name: Parking, home: rec1",
                                             "{id: cam-002, name: Parking, home: rec2"))
    assert any(u.startswith("camera cam-002") for u in result.updated)
    cam2 = next(c for c in snapshot(db_url)["cameras"] if c["id"] == "cam-002")
    assert cam2["home"] == "rec2"


def test_export_round_trips(db_url: str, sqlite_url: str, tmp_path: Path) -> None:
    apply_text(db_url, EXAMPLE.read_text())
    exported = dump_farm_yaml(snapshot(db_url)["export"])
    assert not apply_text(db_url, exported, "export.yaml").changed
    other = f"sqlite:///{tmp_path / 'other.db'}"
    migrate(other)
    apply_text(other, exported, "export.yaml")
    a, b = snapshot(db_url), snapshot(other)
    assert a["export"] == b["export"]
    assert a["cameras"] == b["cameras"] and a["volumes"] == b["volumes"]
    assert [{k: v for k, v in s.items() if k not in ("state", "last_seen")} for s in a["servers"]] == \
        [{k: v for k, v in s.items() if k not in ("state", "last_seen")} for s in b["servers"]]


def _mutate(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def _line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


BASE = EXAMPLE.read_text()
BAD_CASES = [
    # (mutation old, new, line needle in the mutated text, expected field+message regex)
    ("max_storage_days: '3;20'", "max_storage_days: '3;20;4'", "3;20;4",
     r"cameras\[0\]\.max_storage_days: 3 values for 2 streams"),
    ("home: rec2, movable", "home: rec9, movable", "home: rec9", r"cameras\[3\]\.home: unknown server 'rec9'"),
    ("{id: cam-002,", "{id: cam-001,", "{id: cam-001, name: Parking", r"cameras\[1\]\.id: duplicate camera id"),
    ("  - name: rec2\n", "  - name: rec1\n", "name: rec1\n    host: 127.0.0.3",
     r"servers\[1\]\.name: duplicate server"),
    ("    role: primary\n    health: tcp://127.0.0.3", "    role: primary\n    master: true\n    health: tcp://127.0.0.3",
     "master: true\n    health: tcp://127.0.0.3", r"servers\[1\]\.master: two masters: rec1 and rec2"),
    ("storage_path: 'D:\\Data'}", "storage_path: 'E:\\Data'}", "E:\\Data",
     r"cameras\[3\]\.storage_path: path E:\\Data is on drive E: which server rec2 does not have"),
    ("- {drive: D, path: /srv/rec2/D}", "- {drive: D, path: /srv/rec2/D}\n      - {drive: d}", "{drive: d}",
     r"servers\[1\]\.volumes\[1\]\.drive: drive D: given twice"),
    ("- {drive: D, path: /srv/rec1/D}", "- {drive: DD, path: /srv/rec1/D}", "drive: DD",
     r"servers\[0\]\.volumes\[0\]\.drive: String should match pattern"),
    ("down_after: 30s", "down_after: thirty", "thirty", r"farm\.down_after: not a duration"),
    ("min_free: 50GB", "min_free: 50 gigs", "50 gigs", r"storage\.min_free: not a size"),
    ("availability: failover", "availability: mirror", "mirror", r"storage\.availability: Input should be"),
    ("health: tcp://127.0.0.2:50001", "health: ping://x", "ping://x", r"servers\[0\]\.health: not a health probe"),
    ("    role: redundant", "    role: spare", "role: spare", r"servers\[2\]\.role: Input should be"),
    ("streams: 1}\n  - {id: cam-003", "streams: 0}\n  - {id: cam-003", "streams: 0",
     r"cameras\[1\]\.streams: 0 is out of range 1 \.\. 16"),
    ("{id: cam-004,", "{id: 'cam 4',", "cam 4", r"cameras\[3\]\.id: 'cam 4' is not a camera id"),
    ("password_env: FARM_SMB_PASSWORD}\n    volumes:\n      - {drive: D, path: /srv/rec1/D}",
     "password: hunter2}\n    volumes:\n      - {drive: D, path: /srv/rec1/D}", "password: hunter2",
     r"servers\[0\]\.smb\.password: passwords do not belong in the farm file"),
    ("    san_failover_mode: true\n    smb: {port: 445, username: farm, password_env: FARM_SMB_PASSWORD}\n"
     "    volumes:\n      - {drive: D, path: /srv/rec1/D}",
     "    san_failover_mode: true\n    sann_failover: true\n    smb: {port: 445, username: farm, "
     "password_env: FARM_SMB_PASSWORD}\n    volumes:\n      - {drive: D, path: /srv/rec1/D}", "sann_failover",
     r"servers\[0\]\.sann_failover: unknown field"),
    ("storage_path: 'D:\\Data'}", "storage_path: 'D:\\Video'}", "D:\\Video",
     r"cameras\[3\]\.storage_path: D:\\Video is not a shared Data folder"),
    ("storage_path: 'D:\\Data'}", "storage_path: '*D:\\Data;*D:\\Data'}", "*D:\\Data;*D:",
     r"cameras\[3\]\.storage_path: at most one path"),
]


@pytest.mark.parametrize(("old", "new", "needle", "expected"), BAD_CASES, ids=[c[3][:40] for c in BAD_CASES])
def test_bad_farm_file_names_line_and_field(old: str, new: str, needle: str, expected: str) -> None:
    text = _mutate(BASE, old, new)
    with pytest.raises(FarmFileError) as info:
        parse_farm_file(text, "farm.yaml")
    line = _line_of(text, needle)
    assert any(re.match(rf"farm\.yaml:{line}: {expected}", p) for p in info.value.problems), info.value.problems


def test_invalid_yaml_names_line() -> None:
    with pytest.raises(FarmFileError, match=r"farm\.yaml:3: not valid YAML"):
        parse_farm_file("farm:\n  name: x\n  bad: [1, 2\n", "farm.yaml")


def test_key_given_twice() -> None:
    with pytest.raises(FarmFileError, match=r"farm\.yaml:3: farm\.name: key given twice"):
        parse_farm_file("farm:\n  name: a\n  name: b\nservers: []\n", "farm.yaml")


def test_every_problem_is_reported_at_once() -> None:
    text = _mutate(_mutate(BASE, "home: rec2, movable", "home: nope, movable"), "'3;20'", "'1;2;3'")
    with pytest.raises(FarmFileError) as info:
        parse_farm_file(text, "farm.yaml")
    assert len(info.value.problems) == 2


def test_bad_file_changes_nothing(db_url: str) -> None:
    apply_text(db_url, BASE)
    before = snapshot(db_url)
    for old, new, _, _ in BAD_CASES:
        with pytest.raises(FarmFileError):
            apply_text(db_url, _mutate(BASE, old, new))
    assert snapshot(db_url) == before


def test_removing_a_server_with_cameras_is_refused_and_rolls_back(db_url: str) -> None:
    apply_text(db_url, BASE)
    before = snapshot(db_url)
    data = yaml.safe_load(BASE)
    data["servers"] = [s for s in data["servers"] if s["name"] != "rec2"]
    data["cameras"] = [dict(c, home="rec1") for c in data["cameras"]]
    data["cameras"][0]["name"] = "renamed"   # would change too, but the transaction rolls back
    with pytest.raises(InventoryError, match="rec2 still has cameras"):
        apply_text(db_url, yaml.safe_dump(data).replace("home: rec1", "home: rec1"))
    # rec2 records cam-004 at runtime (current), so removal is refused even though no home points at it
    assert snapshot(db_url) == before

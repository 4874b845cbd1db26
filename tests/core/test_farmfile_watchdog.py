"""Farm-file keys of the watchdog and the planner: stall_after, failover_stalled, priority, failover_to."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from farmkeeper.db import make_engine, migrate, session_scope
from farmkeeper.errors import FarmFileError
from farmkeeper.farmfile import apply_farm_file, export_farm, parse_farm_file
from farmkeeper.models import Camera, FarmSettings, Server

FARM = """\
farm:
  name: t
  stall_after: 3m
  failover_stalled: true
servers:
  - name: rec1
    host: 127.0.0.2
    failover_to: [spare2, spare1]
    volumes: [{drive: D}]
  - name: spare1
    host: 127.0.0.3
    role: redundant
    volumes: [{drive: D}]
  - name: spare2
    host: 127.0.0.4
    role: redundant
    volumes: [{drive: D}]
cameras:
  - {id: cam-1, home: rec1, priority: 5, stall_after: 90s, failover_stalled: false}
  - {id: cam-2, home: rec1}
"""


def test_keys_apply_and_export_back(sqlite_url: str) -> None:
    migrate(sqlite_url)
    engine = make_engine(sqlite_url)
    with session_scope(engine) as session:
        apply_farm_file(session, parse_farm_file(FARM))
    with Session(engine) as session:
        farm = session.get(FarmSettings, 1)
        assert farm is not None and (farm.stall_after_s, farm.failover_stalled) == (180.0, True)
        rec1 = session.get(Server, "rec1")
        assert rec1 is not None and rec1.failover_to == ["spare2", "spare1"]
        cam1, cam2 = session.get(Camera, "cam-1"), session.get(Camera, "cam-2")
        assert cam1 is not None and (cam1.priority, cam1.stall_after_s, cam1.failover_stalled) == (5, 90.0, False)
        assert cam2 is not None and (cam2.priority, cam2.stall_after_s, cam2.failover_stalled) == (3, None, None)
        exported = export_farm(session)
    assert exported["farm"]["stall_after"] == "3m" and exported["farm"]["failover_stalled"] is True
    assert exported["servers"][0]["failover_to"] == ["spare2", "spare1"]
    assert exported["cameras"][0]["priority"] == 5 and exported["cameras"][0]["stall_after"] == "90s"
    assert "priority" not in exported["cameras"][1]
    engine.dispose()


@pytest.mark.parametrize(("old", "new", "where"), [
    ("failover_to: [spare2, spare1]", "failover_to: [spare2, nowhere]",
     "farm.yaml:8: servers[0].failover_to[1]: unknown server 'nowhere'"),
    ("failover_to: [spare2, spare1]", "failover_to: [rec1]",
     "farm.yaml:8: servers[0].failover_to[0]: rec1 cannot fail over to itself"),
    ("priority: 5", "priority: 6", "farm.yaml:19: cameras[0].priority: 6 is out of range 1 .. 5"),
    ("stall_after: 3m", "stall_after: soon", "farm.yaml:3: farm.stall_after:"),
])
def test_bad_values_name_file_line_field(old: str, new: str, where: str) -> None:
    with pytest.raises(FarmFileError) as err:
        parse_farm_file(FARM.replace(old, new))
    assert any(p.startswith(where) for p in err.value.problems), err.value.problems

"""Free-space floors between the scheduled sweeps: the health check's floor step sweeps a volume below its floor."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from farmkeeper.db import get_engine, session_scope
from farmkeeper.layout import parse_footage
from farmkeeper.models import DeletionAudit
from flows.health_check import HealthCheckParams, health_check
from flows.retention_sweep import join_floor_sweeps, sweep_floors
from tests.helpers import cli, parse_json
from tests.retention.conftest import RetentionFarm
from tests.retention.helpers import days_back, files_under, write

pytestmark = pytest.mark.usefixtures("prefect_api")
FLOOR = 6 * 2**20


def free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(root: Path) -> list[str]:
    t = datetime.now(UTC).replace(second=0, microsecond=0)
    return (write(root, days_back("cam-002", 0, 6, step=timedelta(hours=1), now=t), size=40 * 1024)
            + write(root, days_back("cam-003", 0, 6, step=timedelta(hours=1), now=t), size=40 * 1024))


def rules() -> set[str]:
    with session_scope(get_engine()) as session:
        return {r.rule for r in session.exec(select(DeletionAudit))}


def test_volume_below_its_floor_is_swept_by_the_floor_step(retention_farm: RetentionFarm,
                                                           tmpfs_volume: Path) -> None:
    retention_farm.apply(storage={"min_free": "6MiB", "limit_storage_days": False},
                         volumes={"rec1": ["D", "E"]}, paths={("rec1", "D"): tmpfs_volume},
                         cameras=[{"id": "cam-002", "home": "rec1"}, {"id": "cam-003", "home": "rec1"}])
    paths = fill(tmpfs_volume)
    assert free(tmpfs_volume) < FLOOR
    result = health_check(HealthCheckParams())                # one sweep: probes, then the floor step
    found = result["last"]["floors"]
    assert found["below"] == ["\\\\rec1\\DATAD"] and found["started"] == ["rec1:D"]
    join_floor_sweeps(120)
    assert free(tmpfs_volume) >= FLOOR
    gone = set(paths) - files_under(tmpfs_volume)
    assert gone and rules() == {"min_free"}
    assert sweep_floors()["below"] == []

    # the seed's Storage Summary per volume: total, free, floors, oldest footage, days held vs configured
    code, out = cli("status", "--storage", "--json")
    assert code == 0, out
    summary = {(r["server"], r["drive"]): r for r in parse_json(out)["storage_summary"]}
    d = summary[("rec1", "D")]
    assert d["total_bytes"] == 16 * 2**20 and d["free_bytes"] >= FLOOR and d["floor_bytes"] == FLOOR
    assert d["min_free_bytes"] == FLOOR and not d["below_floor"] and d["days_configured"] is None
    oldest = min(parse_footage(p).timestamp for p in set(paths) - gone)
    assert d["oldest_footage"] == datetime.fromtimestamp(oldest, UTC).isoformat()
    assert 0 < d["days_held"] <= 6 and d["swept_at"] is not None
    assert summary[("rec1", "E")]["swept_at"] is None                 # never swept: nothing made up
    code, out = cli("status", "--storage")
    assert code == 0 and "Storage Summary" in out


def test_the_floor_step_takes_the_free_space_the_volume_probes_just_read(
        retention_farm: RetentionFarm, tmpfs_volume: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One reading of a volume's free space per sweep: the watchdog's volume probe reads it (with its probe write);
    the floor step right after uses that reading instead of opening the volume again."""
    import socket

    from farmkeeper import floors

    listener = socket.create_server(("127.0.0.1", 0))      # rec1 answers its health probe: up, so probed
    port = listener.getsockname()[1]
    retention_farm.apply(storage={"min_free": "6MiB", "limit_storage_days": False},
                         servers=[{"name": "rec1", "host": "127.0.0.1", "role": "primary", "master": True,
                                   "health": f"tcp://127.0.0.1:{port}",
                                   "volumes": [{"drive": "D", "path": str(tmpfs_volume)}]}],
                         cameras=[{"id": "cam-002", "home": "rec1"}, {"id": "cam-003", "home": "rec1"}])
    fill(tmpfs_volume)
    read: list[tuple[str, str]] = []
    real = floors._read

    def spy(volume: Any, prefer: Any) -> Any:
        read.append((volume.server, volume.drive))
        return real(volume, prefer)

    monkeypatch.setattr(floors, "_read", spy)
    try:
        result = health_check(HealthCheckParams())            # one sweep: volume probes, then the floor step
        found = result["last"]["floors"]
        assert found["below"] == ["\\\\rec1\\DATAD"] and found["started"] == ["rec1:D"]
        assert result["last"]["down"] == [] and result["last"]["errors"] == {}
        assert read == []                                     # the probe's reading, not a second one
    finally:
        join_floor_sweeps(120)
        listener.close()
    sweep_floors()                                            # a floor check alone reads the volume itself
    assert read == [("rec1", "D")]


def test_a_blocked_floor_alerts_at_once_and_is_not_swept_again_and_again(
        retention_farm: RetentionFarm, tmpfs_volume: Path, http_receiver: Any) -> None:
    retention_farm.apply(notify=[http_receiver.url], purge_guard_percent=5,
                         storage={"min_free": "6MiB", "limit_storage_days": False},
                         volumes={"rec1": ["D"]}, paths={("rec1", "D"): tmpfs_volume},
                         cameras=[{"id": "cam-002", "home": "rec1"}, {"id": "cam-003", "home": "rec1"}])
    paths = fill(tmpfs_volume)
    assert sweep_floors()["started"] == ["rec1:D"]
    join_floor_sweeps(120)
    assert files_under(tmpfs_volume) == set(paths)          # the percentage guard still blocks the floor
    msg = http_receiver.wait_for(lambda m: "alert" in m.get("title", ""))
    assert "stays below its floor" in msg["message"]
    again = sweep_floors()
    assert again["below"] == ["\\\\rec1\\DATAD"] and again["sweep"] == [] and again["started"] == []

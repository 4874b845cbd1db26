"""Simulator controls: a stalled camera is not recorded, a failed volume is gone until restored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from farmkeeper.errors import SpecError
from farmkeeper.sim import ServerSim, SimOptions
from farmkeeper.sim.control import read_control, update_control
from tests.failover.conftest import Farm


def test_controls_stall_a_camera_and_fail_a_volume(make_farm: Callable[..., Farm], inventory_url: str,
                                                   tmp_path: Path) -> None:
    farm = make_farm([("p1", "primary")], [{"id": "cam-a", "home": "p1"}, {"id": "cam-b", "home": "p1"}])
    state = tmp_path / "sim"
    sim = ServerSim("p1", farm.health("p1"), SimOptions(database_url=inventory_url, state_dir=state))
    sim.refresh()
    assert sorted(sim.assignment.cameras) == ["cam-a", "cam-b"]

    control = update_control(state, stall=("cam-a",), fail_volume=("p1:d",))
    assert control == read_control(state) and control.failed_volumes == {"p1:D"}
    sim.refresh()
    root = farm.volumes["p1"]
    assert sorted(sim.assignment.cameras) == ["cam-b"]
    assert not root.exists() and root.with_name("D.failed").is_dir()

    update_control(state, resume=("cam-a",), restore_volume=("p1:D",))
    sim.refresh()
    assert sorted(sim.assignment.cameras) == ["cam-a", "cam-b"] and root.is_dir()
    with pytest.raises(SpecError):
        update_control(state, fail_volume=("p1",))

"""``move --footage keep`` copies nothing, so it needs no SAN failover mode; ``--footage move`` still does."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.models import Camera
from tests.move.conftest import MVFarm, camera, cli, flat, parse_json, tree_hashes, write_footage

pytestmark = [pytest.mark.samba]


def test_keep_moves_cameras_with_san_failover_mode_off(prefect_api: None, make_farm: Callable[..., MVFarm]) -> None:
    farm = make_farm([camera("cam-a")], drives="D", san_failover_mode=False)
    on_rec1 = write_footage(farm.share("rec1", "D"), "cam-a", 4)

    code, out = cli("move", "cam-a", "--to", "rec2", "--footage", "move")
    assert code == 1 and "SAN failover mode is off" in flat(out), out

    code, out = cli("move", "cam-a", "--to", "rec2", "--footage", "keep", "--json")
    assert code == 0, out
    result = parse_json(out)
    assert result["state"] == "done" and result["moved"] == ["cam-a"] and result["copied"] == 0
    assert "nothing is copied or deleted" in result["why"] and "stays where it was recorded" in result["why"]
    assert result["footage_stays"] == {"cam-a": ["\\\\rec1\\DATAD"]}
    assert tree_hashes(farm.share("rec1", "D"), "cam-a") == on_rec1
    assert tree_hashes(farm.share("rec2", "D"), "cam-a") == {}
    with session_scope(ensure_schema(get_engine())) as session:
        row = session.get(Camera, "cam-a")
        assert row is not None and (row.current, row.home) == ("rec2", "rec2")

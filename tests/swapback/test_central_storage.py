"""Central storage (a NAS share several servers list, ``unc``) is one storage: swap-back, retention, ownership.

The NAS is a Samba share ``\\\\127.0.0.62\\CCTV``; every server lists it as its N: volume next to its own D:.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlmodel import select

from farmkeeper import inventory
from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.models import CopyItem, DeletionAudit
from tests.swapback.conftest import NAMES, SBFarm, camera, cli, fail_over, parse_json, tree_hashes, write_footage

pytestmark = [pytest.mark.samba]


def central_farm(make_farm: Callable[..., SBFarm]) -> SBFarm:
    farm = make_farm([camera("cam-d")], drives="D")
    for entry in farm.data["servers"]:
        entry["volumes"].append({"drive": "N", "unc": farm.nas_unc.lower()})
    farm.data["cameras"].insert(0, camera("cam-n", storage_path="N:\\Data"))
    farm.apply()
    return farm


def test_central_storage_is_one_storage(prefect_api: None, make_farm: Callable[..., SBFarm]) -> None:
    farm = central_farm(make_farm)
    with session_scope(ensure_schema(get_engine())) as session:
        assert {(v.server_name, v.unc) for v in inventory.list_volumes(session) if v.drive == "N"} == \
            {(name, farm.nas_unc.lower()) for name in NAMES}
    code, out = cli("export")
    assert code == 0 and "unc:" in out

    # validation: every server listing the NAS reads and writes it with its own account
    code, out = cli("validate", "--json")
    report = parse_json(out)
    shares = {(f["server"], f["message"].split(" ")[0]): f["status"] for f in report["findings"]
              if f["requirement"].startswith("share:")}
    for name in NAMES:
        assert shares[(name, farm.nas_unc.lower())] == "ok", report

    # footage recorded during a failover: cam-n on the NAS (spare1 records there), cam-d on spare1's D:
    on_nas = write_footage(farm.nas, "cam-n", 6)
    on_spare = write_footage(farm.share("spare1", "D"), "cam-d", 3, seed=1)
    fail_over("cam-n")
    fail_over("cam-d")

    code, out = cli("swap-back", "rec1", "--json")
    assert code == 0, out
    result = parse_json(out)
    assert result["state"] == "done" and sorted(result["cameras"]) == ["cam-d"]
    assert result["central"] == {"cam-n": farm.nas_unc.lower()}
    assert "central storage" in result["central_why"] and "nothing to copy" in result["central_why"]
    assert result["copied"] == result["removed"] == len(on_spare)
    assert tree_hashes(farm.nas, "cam-n") == on_nas                       # the NAS footage untouched
    assert tree_hashes(farm.share("rec1", "D"), "cam-d") == on_spare
    with session_scope(ensure_schema(get_engine())) as session:
        assert {c.id: c.current for c in inventory.list_cameras(session)} == {"cam-n": "rec1", "cam-d": "rec1"}
        assert {i.camera_id for i in session.exec(select(CopyItem))} == {"cam-d"}
        assert {a.camera_id for a in session.exec(select(DeletionAudit))} == {"cam-d"}

    # a swap-back of only central-storage cameras copies and deletes nothing, and says so
    fail_over("cam-n")
    code, out = cli("swap-back", "--camera", "cam-n", "--json")
    assert code == 0, out
    only = parse_json(out)
    assert only["job_id"] is None and only["copied"] == 0 and only["footage"] == "on central storage"
    assert "nothing to copy" in only["why"]

    # retention sweeps the NAS once, not once per server
    code, out = cli("run", "retention-sweep", "--dry-run", "--json")
    assert code == 0, out
    sweeps = parse_json(out)["volumes"]
    nas = [v for v in sweeps if v["drive"] == "N"]
    assert len(nas) == 3 and sum(not v.get("skipped") for v in nas) == 1
    assert all("swept once" in v["skipped"] for v in nas if v.get("skipped"))
    assert sum(v.get("footage_files", 0) for v in nas) == len(on_nas)

    # ownership: files on central storage move no home (every server sees them)
    write_footage(farm.nas, "cam-n", 30, seed=2, start=farm_start_later())
    code, out = cli("run", "recompute-ownership", "--json")
    assert code == 0, out
    with session_scope(ensure_schema(get_engine())) as session:
        assert inventory.get_camera(session, "cam-n").home == "rec1"


def farm_start_later():  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from tests.helpers import START

    return START + timedelta(days=1)

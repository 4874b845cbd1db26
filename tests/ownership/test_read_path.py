"""Ownership counts a camera's read path only (``D:\\Data;*E:\\Data``): copies on other write paths do not count."""

from __future__ import annotations

import pandas as pd
import yaml

from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.farmfile import apply_farm_file, parse_farm_file
from farmkeeper.ownership import COLUMNS, CountResult, apply_ownership

FARM = {
    "storage": {"availability": "redundant"},
    "servers": [{"name": n, "host": f"127.0.0.{30 + i}", "role": r, "volumes": [{"drive": "D"}, {"drive": "E"}]}
                for i, (n, r) in enumerate((("rec1", "primary"), ("spare1", "redundant")))],
    "cameras": [{"id": "cam-r", "home": "rec1", "storage_path": "D:\\Data;*E:\\Data"},
                {"id": "cam-1", "home": "rec1"}],
}


def test_only_the_read_path_is_counted(inventory_url: str) -> None:
    with session_scope(ensure_schema(get_engine())) as session:
        apply_farm_file(session, parse_farm_file(yaml.safe_dump(FARM), "farm.yaml"))
    rows = [("rec1", "D", "cam-r", "0", "2026-01-01", 30), ("rec1", "E", "cam-r", "0", "2026-01-01", 10),
            ("spare1", "E", "cam-r", "0", "2026-01-02", 14),
            ("rec1", "D", "cam-1", "0", "2026-01-01", 10), ("spare1", "E", "cam-1", "0", "2026-01-02", 14)]
    result = CountResult(frame=pd.DataFrame(rows, columns=COLUMNS), servers=["rec1", "spare1"])
    with session_scope(ensure_schema(get_engine())) as session:
        outcome = apply_ownership(session, result, dry_run=True)
    by_cam = {d.camera: d for d in outcome.decisions}
    # read path E: 10 on rec1 against 14 on spare1 (the 30 copies on rec1's D: do not count)
    assert by_cam["cam-r"].counts == {"rec1": 10, "spare1": 14} and by_cam["cam-r"].new_home == "spare1"
    # a camera with one path: every file counts, wherever it is
    assert by_cam["cam-1"].counts == {"rec1": 10, "spare1": 14} and by_cam["cam-1"].new_home == "spare1"

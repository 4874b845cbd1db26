"""Storage settings that parse but have no effect (or a surprising one) are warned about with their line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from farmkeeper.farmfile import load_farm_file, parse_farm_file
from tests.helpers import cli

EXAMPLE = Path(__file__).parents[2] / "examples" / "farm.yaml"


def farm(storage: dict[str, object], cameras: list[dict[str, object]] | None = None) -> str:
    data = {"storage": storage,
            "servers": [{"name": "rec1", "host": "127.0.0.2", "volumes": [{"drive": "D"}]}],
            "cameras": cameras if cameras is not None else [{"id": "cam-1", "home": "rec1", "streams": 2,
                                                             "max_storage_days": "5;20"}]}
    return yaml.safe_dump(data, sort_keys=False)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(("storage", "key", "says"), [
    ({"limit_storage_days": True, "keep_metadata_longer": True, "default_metadata_days": 10},
     "default_metadata_days", "metadata is kept 10 days, fewer than the video days of cam-1 (20)"),
    ({"limit_storage_days": False, "default_max_storage_days": 30}, "default_max_storage_days",
     "has no effect: storage.limit_storage_days is false"),
    ({"limit_storage_days": True, "keep_metadata_longer": False, "default_metadata_days": 90},
     "default_metadata_days", "has no effect: storage.keep_metadata_longer is false"),
])
def test_warned_with_file_line_and_field(storage: dict[str, object], key: str, says: str) -> None:
    text = farm(storage)
    spec = parse_farm_file(text, "farm.yaml")
    wanted = f"farm.yaml:{line_of(text, key + ':')}: storage.{key}: "
    assert any(w.startswith(wanted) and says in w for w in spec.warnings), spec.warnings


def test_per_camera_days_without_limit_warned_at_the_camera() -> None:
    text = farm({"limit_storage_days": False})
    (warning,) = parse_farm_file(text, "farm.yaml").warnings
    assert warning.startswith(f"farm.yaml:{line_of(text, 'max_storage_days')}: cameras[0].max_storage_days: has no "
                              "effect")


def test_settings_that_act_are_not_warned() -> None:
    text = farm({"limit_storage_days": True, "keep_metadata_longer": True, "default_metadata_days": 90})
    assert parse_farm_file(text, "farm.yaml").warnings == []
    assert load_farm_file(EXAMPLE).warnings == []


def test_apply_prints_the_warning_and_applies(inventory_url: str, tmp_path: Path) -> None:
    path = tmp_path / "farm.yaml"
    path.write_text(farm({"limit_storage_days": True, "keep_metadata_longer": True, "default_metadata_days": 10}))
    code, out = cli("apply", str(path))
    assert code == 0, out
    assert "warning: " in out and "deleted before their video" in " ".join(out.split())
    assert "created: camera cam-1" in out

"""The one settings object (environment prefix ``FARMKEEPER_``, nested with ``__``)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StorageAccessSettings(BaseModel):
    prefer: Literal["auto", "local", "smb"] = Field(
        "auto", description="How flows reach volumes: local mount when set (auto), or always SMB")
    connections: int = Field(4, ge=1, le=64, description="Parallel SMB connections per copy or walk")
    require_signing: bool = Field(True, description="SMB signing; turn off only on a trusted SAN network")
    timeout: float = Field(30.0, gt=0, le=3600, description="Seconds any SMB wait may take (connect, negotiate, "
                           "session setup, tree connect, each reply); a stalled connection is closed")
    max_dir_entries: int = Field(200_000, ge=10_000, description="Entries one SMB folder listing may return before "
                                 "it fails (the seed keeps folders under 5000 files)")
    max_dir_requests: int = Field(4096, ge=16, description="QUERY_DIRECTORY requests one SMB folder listing may take "
                                  "before it fails (a server that never says 'no more files')")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FARMKEEPER_", env_nested_delimiter="__", extra="ignore")

    database_url: str = Field("sqlite:///farmkeeper.db", description="SQLAlchemy URL of the inventory")
    home: Path = Field(Path(".farmkeeper"), description="State folder for the embedded Prefect server, logs")
    storage: StorageAccessSettings = Field(default_factory=StorageAccessSettings)
    sqlite_busy_timeout_ms: int = 30_000
    farm_status_every_s: float = Field(30.0, ge=0, description="The watcher republishes the farm-status artifact "
                                                               "at most this often (seconds), when the farm changed")


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment now (never at import time).

    Building them reads and validates the environment (~0.6 ms); every inventory session asks for them, a
    watching sweep a dozen times. So the last build is reused while the ``FARMKEEPER_`` variables are the
    same (compared on each call: a changed variable is seen at once), as a copy the caller may change."""
    if overrides:
        return Settings(**overrides)  # type: ignore[arg-type]
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k[:11].upper() == "FARMKEEPER_"))
    with _LAST_LOCK:
        last = _LAST.get(key)
    if last is None:
        last = Settings()
        with _LAST_LOCK:
            _LAST.clear()
            _LAST[key] = last
    return last.model_copy(deep=True)


_LAST: dict[tuple[tuple[str, str], ...], Settings] = {}
_LAST_LOCK = threading.Lock()

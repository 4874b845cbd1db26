"""The one settings object (environment prefix ``FARMKEEPER_``, nested with ``__``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StorageAccessSettings(BaseModel):
    prefer: Literal["auto", "local", "smb"] = Field(
        "auto", description="How flows reach volumes: local mount when set (auto), or always SMB")
    connections: int = Field(4, ge=1, le=64, description="Parallel SMB connections per copy or walk")
    require_signing: bool = Field(True, description="SMB signing; turn off only on a trusted SAN network")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FARMKEEPER_", env_nested_delimiter="__", extra="ignore")

    database_url: str = Field("sqlite:///farmkeeper.db", description="SQLAlchemy URL of the inventory")
    home: Path = Field(Path(".farmkeeper"), description="State folder for the embedded Prefect server, logs")
    storage: StorageAccessSettings = Field(default_factory=StorageAccessSettings)
    sqlite_busy_timeout_ms: int = 30_000


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment now (never at import time)."""
    return Settings(**overrides)  # type: ignore[arg-type]

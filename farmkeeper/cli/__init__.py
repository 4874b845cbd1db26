"""The ``farmkeeper`` command line (typer). Commands live in one module per area."""

from __future__ import annotations

from farmkeeper.cli.app import app
from farmkeeper.cli import inventory as _inventory  # noqa: F401  (registers commands)
from farmkeeper.cli import operations as _operations  # noqa: F401

__all__ = ["app"]

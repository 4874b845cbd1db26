"""The ``farmkeeper`` command line (typer). Commands live in one module per area."""

from __future__ import annotations

from farmkeeper.cli import deploy as _deploy  # noqa: F401  (each module registers its commands)
from farmkeeper.cli import failover as _failover  # noqa: F401
from farmkeeper.cli import inventory as _inventory  # noqa: F401
from farmkeeper.cli import move as _move  # noqa: F401
from farmkeeper.cli import ownership as _ownership  # noqa: F401
from farmkeeper.cli import retention as _retention  # noqa: F401
from farmkeeper.cli import swapback as _swapback  # noqa: F401
from farmkeeper.cli.app import app

__all__ = ["app"]

"""The ``farmkeeper`` command line (typer). Commands live in one module per area.

The outermost layer: it sits in the ``farmkeeper`` package for the console script, but it is the one part of
it that imports ``flows`` and ``tasks`` (it runs them in process), and no other module imports it
(``tests/core/test_layers.py``).
"""

from __future__ import annotations

from farmkeeper.cli import deploy as _deploy  # noqa: F401  (each module registers its commands)
from farmkeeper.cli import failover as _failover  # noqa: F401
from farmkeeper.cli import inventory as _inventory  # noqa: F401
from farmkeeper.cli import move as _move  # noqa: F401
from farmkeeper.cli import observe as _observe  # noqa: F401
from farmkeeper.cli import ownership as _ownership  # noqa: F401
from farmkeeper.cli import report as _report  # noqa: F401
from farmkeeper.cli import retention as _retention  # noqa: F401
from farmkeeper.cli import swapback as _swapback  # noqa: F401
from farmkeeper.cli.app import app

__all__ = ["app"]

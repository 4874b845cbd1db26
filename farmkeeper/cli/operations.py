"""Commands that run flows: run, validate, swap-back, move, serve, sim, demo.

Flows import Prefect; they are imported inside each command so the core stays Prefect-free.
"""

from __future__ import annotations

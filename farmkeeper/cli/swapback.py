"""CLI commands of the swapback area."""

from __future__ import annotations

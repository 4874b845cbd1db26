"""CLI commands of the retention area."""

from __future__ import annotations

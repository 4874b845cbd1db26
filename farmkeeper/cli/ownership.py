"""CLI commands of the ownership area."""

from __future__ import annotations

"""CLI commands of the deploy area."""

from __future__ import annotations

"""CLI commands of the failover area."""

from __future__ import annotations

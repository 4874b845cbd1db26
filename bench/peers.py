"""Peers the benchmarks measure against, configured the same way everywhere."""

from __future__ import annotations

import os
import subprocess

from farmkeeper.sim.samba import SambaServer


def rclone_env(remotes: dict[str, SambaServer]) -> dict[str, str]:
    """The environment with one rclone SMB remote per ``NAME: server`` (``NAME:`` in rclone paths)."""
    env = dict(os.environ)
    for name, server in remotes.items():
        obscured = subprocess.run(["rclone", "obscure", server.password], capture_output=True, text=True,
                                  check=True).stdout.strip()
        prefix = f"RCLONE_CONFIG_{name.upper()}"
        env |= {f"{prefix}_TYPE": "smb", f"{prefix}_HOST": server.host, f"{prefix}_USER": server.username,
                f"{prefix}_PASS": obscured, f"{prefix}_PORT": str(server.port)}
    return env

"""The deployment set: one spec per flow of DESIGN.md, used by ``farmkeeper serve`` and mirrored in prefect.yaml.

A spec names the flow module (``flows/<module>.py``), the Prefect flow name, its schedule and defaults.
Schedules come from the farm settings' defaults; manual flows have none.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DeploymentSpec:
    flow_name: str
    module: str
    deployment: str
    description: str
    interval_s: float | None = None
    cron: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    concurrency_limit: int | None = 1
    tags: tuple[str, ...] = ("farmkeeper",)

    @property
    def entrypoint(self) -> str:
        return f"flows/{self.module}.py:{self.function_name}"

    @property
    def function_name(self) -> str:
        return self.flow_name.replace("-", "_")

    def load_flow(self) -> Any:
        """The Prefect flow object of this spec (the module's flow whose name is ``flow_name``)."""
        from prefect import Flow

        module = importlib.import_module(f"flows.{self.module}")
        for value in vars(module).values():
            if isinstance(value, Flow) and value.name == self.flow_name:
                return value
        raise LookupError(f"flows/{self.module}.py has no flow named {self.flow_name!r}")


# Health checking runs as a watch: a run starts every HEALTH_EVERY_S and sweeps every health_interval for
# 2 x HEALTH_EVERY_S + HEALTH_OVERLAP_S, so at any moment two runs are alive (on workers: usually two workers).
# Only the holder of the watch lease (farmkeeper.watch) sweeps; the other stands by and takes over within the
# lease when the holder's process or worker dies, and marks the dead run Crashed so it frees its slot.
# At most three runs at once (two alive plus the one starting); more are cancelled.
# ``farmkeeper serve`` does not schedule it: its supervisor keeps one watching process alive instead.
HEALTH_EVERY_S = 300.0
HEALTH_OVERLAP_S = 30.0


def health_parameters(every_s: float = HEALTH_EVERY_S, overlap_s: float = HEALTH_OVERLAP_S) -> dict[str, Any]:
    return {"params": {"watch_for": 2 * every_s + overlap_s}}


DEPLOYMENTS: tuple[DeploymentSpec, ...] = (
    DeploymentSpec("health-check", "health_check", "health-check",
                   "Probe every server; mark down after down_after; start failover; mark recovered servers up.",
                   interval_s=HEALTH_EVERY_S, parameters=health_parameters(), concurrency_limit=3),
    DeploymentSpec("failover", "failover", "failover",
                   "Move the movable cameras of a down server to live redundant servers (manual: give the server).",
                   concurrency_limit=None),
    DeploymentSpec("swap-back", "swap_back", "swap-back",
                   "Move cameras home and copy the footage recorded elsewhere back over SMB, verified, resumable.",
                   concurrency_limit=2),
    DeploymentSpec("recompute-ownership", "recompute_ownership", "recompute-ownership",
                   "Count video files per camera on every server; home = the server with the most files.",
                   cron="30 3 * * *"),
    DeploymentSpec("retention-sweep", "retention_sweep", "retention-sweep",
                   "Age rules, then free-space floors, oldest first; every deletion audited.",
                   interval_s=900.0),
    DeploymentSpec("move-cameras", "move_cameras", "move-cameras",
                   "Move cameras to another (new) server with their footage (move) or without (keep).",
                   concurrency_limit=None),
    DeploymentSpec("validate-farm", "validate_farm", "validate-farm",
                   "Check the SAN failover requirements: LUNs, drive letters, SAN failover mode, DATAX shares r/w.",
                   cron="0 3 * * *"),
    DeploymentSpec("continuity-report", "continuity_report", "continuity-report",
                   "Yesterday's footage gaps and availability per camera, as table artifacts (manual: any day).",
                   cron="20 0 * * *"),
)


def available() -> list[DeploymentSpec]:
    """The specs whose flow module exists in this checkout."""
    out = []
    for spec in DEPLOYMENTS:
        try:
            spec.load_flow()
        except (ImportError, LookupError):
            continue
        out.append(spec)
    return out

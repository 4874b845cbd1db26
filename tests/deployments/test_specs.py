"""Deployment specs: prefect.yaml is their rendering, every entrypoint loads its flow, every flow parameter
has a description (the Prefect UI shows a form)."""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from deployments import DEPLOYMENTS
from deployments.render import HEADER, render

REPO = Path(__file__).resolve().parents[2]
DESIGN_FLOWS = {"health-check", "failover", "swap-back", "recompute-ownership", "retention-sweep", "move-cameras",
                "validate-farm", "continuity-report"}


def test_every_design_flow_has_a_deployment() -> None:
    assert {d.flow_name for d in DEPLOYMENTS} == DESIGN_FLOWS


def test_prefect_yaml_is_the_rendering() -> None:
    out = subprocess.run([sys.executable, "-m", "deployments.render"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith(HEADER)
    assert (REPO / "prefect.yaml").read_text() == out, "run `python -m deployments.render > prefect.yaml`"
    assert [d["name"] for d in render()["deployments"]] == [d.deployment for d in DEPLOYMENTS]


@pytest.mark.parametrize("spec", DEPLOYMENTS, ids=[d.flow_name for d in DEPLOYMENTS])
def test_entrypoint_loads_the_flow_with_a_described_parameter_model(spec: object) -> None:
    from prefect.flows import load_flow_from_entrypoint

    flow = load_flow_from_entrypoint(str(REPO / spec.entrypoint))  # type: ignore[attr-defined]
    assert flow.name == spec.flow_name  # type: ignore[attr-defined]
    assert "params" in inspect.signature(flow.fn).parameters
    model = typing.get_type_hints(flow.fn)["params"]
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        model = next(a for a in getattr(model, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel))
    undocumented = [name for name, field in model.model_fields.items() if not field.description]
    assert not undocumented, f"{spec.flow_name}: parameters without a description: {undocumented}"  # type: ignore[attr-defined]
    schema = flow.parameters.model_dump()
    assert "params" in schema["properties"], schema

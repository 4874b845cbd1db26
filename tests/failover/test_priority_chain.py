"""Failover priority (who takes the last free place) and ``failover_to`` chains in the planner."""

from __future__ import annotations

from farmkeeper.failover import CameraView, ServerView, plan_failover
from farmkeeper.models import Role, ServerState

D = frozenset({"D"})


def server(name: str, role: Role = Role.redundant, *, state: ServerState = ServerState.up,
           max_cameras: int | None = None, failover_to: tuple[str, ...] = ()) -> ServerView:
    return ServerView(name, state, role, D, max_cameras, failover_to=failover_to)


def test_priority_decides_the_last_place() -> None:
    servers = [server("rec1", Role.primary, state=ServerState.down), server("spare1", max_cameras=2)]
    cameras = [CameraView("a-low", "rec1", True, D, priority=1), CameraView("b-default", "rec1", True, D),
               CameraView("c-high", "rec1", True, D, priority=5), CameraView("d-low", "rec1", True, D, priority=1)]
    plan = plan_failover("rec1", servers, cameras)
    assert [m.camera for m in plan.moves] == ["c-high", "b-default"]
    assert plan.stranded == ["a-low", "d-low"]


def test_without_priorities_the_order_is_by_id() -> None:
    servers = [server("rec1", Role.primary, state=ServerState.down), server("spare1", max_cameras=1)]
    cameras = [CameraView("b", "rec1", True, D), CameraView("a", "rec1", True, D)]
    plan = plan_failover("rec1", servers, cameras)
    assert [m.camera for m in plan.moves] == ["a"] and plan.stranded == ["b"]


def test_failover_to_chain_is_honoured_in_order_then_any_redundant() -> None:
    # spare3 is the least loaded, but rec1 prefers spare2 then spare1; spare2 is full after one camera,
    # spare1 is down, so the rest go to any redundant server (spare3)
    servers = [server("rec1", Role.primary, state=ServerState.down, failover_to=("spare2", "spare1")),
               server("spare1", state=ServerState.down), server("spare2", max_cameras=2), server("spare3")]
    cameras = [CameraView("c1", "rec1", True, D), CameraView("c2", "rec1", True, D),
               CameraView("c3", "rec1", True, D), CameraView("x", "spare2", True, D)]
    plan = plan_failover("rec1", servers, cameras)
    assert [(m.camera, m.to_server) for m in plan.moves] == [("c1", "spare2"), ("c2", "spare3"), ("c3", "spare3")]


def test_failover_to_first_choice_takes_everything_it_can() -> None:
    servers = [server("rec1", Role.primary, state=ServerState.down, failover_to=("spare2", "spare1")),
               server("spare1"), server("spare2", max_cameras=2), server("spare3")]
    cameras = [CameraView(f"c{i}", "rec1", True, D) for i in range(4)]
    plan = plan_failover("rec1", servers, cameras)
    assert [m.to_server for m in plan.moves] == ["spare2", "spare2", "spare1", "spare1"]


def test_failover_to_skips_a_primary_and_a_server_without_the_drives() -> None:
    servers = [server("rec1", Role.primary, state=ServerState.down, failover_to=("rec2", "spare-e")),
               server("rec2", Role.primary), ServerView("spare-e", ServerState.up, Role.redundant, frozenset({"E"})),
               server("spare1")]
    plan = plan_failover("rec1", servers, [CameraView("c1", "rec1", True, D)])
    assert [m.to_server for m in plan.moves] == ["spare1"]


def test_only_plans_the_named_cameras() -> None:
    servers = [server("rec1", Role.primary), server("spare1")]
    cameras = [CameraView("c1", "rec1", True, D), CameraView("c2", "rec1", True, D)]
    plan = plan_failover("rec1", servers, cameras, only={"c2"})
    assert [(m.camera, m.to_server) for m in plan.moves] == [("c2", "spare1")] and not plan.stranded

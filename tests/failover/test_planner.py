"""The failover planner: properties (hypothesis) and examples."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from farmkeeper.failover import CameraView, Move, ServerView, plan_failover
from farmkeeper.models import Role, ServerState

DRIVES = ["D", "E", "F"]


@st.composite
def farms(draw: st.DrawFn) -> tuple[list[ServerView], list[CameraView], str]:
    n = draw(st.integers(2, 7))
    servers = []
    for i in range(n):
        drives = frozenset(draw(st.sets(st.sampled_from(DRIVES), min_size=1, max_size=3)))
        servers.append(ServerView(
            name=f"s{i}",
            state=draw(st.sampled_from([ServerState.up, ServerState.up, ServerState.down, ServerState.unknown])),
            role=draw(st.sampled_from([Role.primary, Role.redundant])),
            drives=drives,
            max_cameras=draw(st.one_of(st.none(), st.integers(0, 6))),
            maintenance=draw(st.booleans()),
            san_failover_mode=draw(st.booleans()),
        ))
    cameras = []
    for j in range(draw(st.integers(0, 25))):
        current = draw(st.sampled_from(servers))
        own = sorted(current.drives)
        drives = frozenset(draw(st.sets(st.sampled_from(own), min_size=1, max_size=len(own))))
        cameras.append(CameraView(f"c{j}", current.name, draw(st.booleans()), drives))
    down = draw(st.sampled_from(servers)).name
    return servers, cameras, down


def apply_moves(cameras: list[CameraView], moves: list[Move]) -> list[CameraView]:
    where = {m.camera: m.to_server for m in moves}
    return [CameraView(c.id, where.get(c.id, c.current), c.movable, c.drives) for c in cameras]


@settings(max_examples=300, deadline=None)
@given(farms())
def test_plan_properties(farm: tuple[list[ServerView], list[CameraView], str]) -> None:
    servers, cameras, down = farm
    by_name = {s.name: s for s in servers}
    source = by_name[down]
    plan = plan_failover(down, servers, cameras)
    cams = {c.id: c for c in cameras}
    on_down = {c.id for c in cameras if c.current == down}

    # every camera of the down server is in exactly one bucket; nothing else is touched
    moved = [m.camera for m in plan.moves]
    assert sorted(moved + plan.stranded + plan.offline) == sorted(on_down)
    # never moves a non-movable camera; non-movable ones are offline
    assert all(cams[c].movable for c in moved + plan.stranded)
    assert set(plan.offline) == {c for c in on_down if not cams[c].movable}
    # targets: live, redundant, not in maintenance, have the drives; SAN mode: the same drive letters
    for m in plan.moves:
        t = by_name[m.to_server]
        assert m.from_server == down and t.name != down
        assert t.state == ServerState.up and t.role == Role.redundant and not t.maintenance
        assert cams[m.camera].drives <= t.drives
        if source.san_failover_mode:
            assert t.drives == source.drives
    # never exceeds capacity (a server already over it receives nothing)
    before = Counter(c.current for c in cameras)
    after = Counter(c.current for c in apply_moves(cameras, plan.moves))
    for name, count in Counter(m.to_server for m in plan.moves).items():
        cap = by_name[name].max_cameras
        assert cap is None or after[name] <= max(cap, before[name])
        assert cap is None or count <= max(0, cap - before[name])
    # stranded only when no eligible target had room
    if plan.stranded:
        for s in servers:
            if (s.name != down and s.state == ServerState.up and s.role == Role.redundant and not s.maintenance
                    and (not source.san_failover_mode or s.drives == source.drives)
                    and any(cams[c].drives <= s.drives for c in plan.stranded)):
                assert s.max_cameras is not None and after[s.name] >= s.max_cameras
    # idempotent: planning again after applying moves nothing
    again = plan_failover(down, servers, apply_moves(cameras, plan.moves))
    assert again.moves == []
    assert sorted(again.stranded) == sorted(plan.stranded)


def sv(name: str, role: Role = Role.redundant, state: ServerState = ServerState.up, drives: str = "D",
       cap: int | None = None, san: bool = False, maintenance: bool = False) -> ServerView:
    return ServerView(name, state, role, frozenset(drives), cap, maintenance, san)


def cv(cid: str, current: str, movable: bool = True, drives: str = "D") -> CameraView:
    return CameraView(cid, current, movable, frozenset(drives))


def test_spreads_load_least_loaded_first() -> None:
    servers = [sv("p", Role.primary, ServerState.down), sv("r1"), sv("r2"), sv("r3", cap=1)]
    cameras = [cv(f"c{i}", "p") for i in range(5)] + [cv("x", "r1")]
    plan = plan_failover("p", servers, cameras)
    assert Counter(m.to_server for m in plan.moves) == {"r2": 2, "r3": 1, "r1": 2}
    assert plan.stranded == [] and plan.offline == []


def test_capacity_strands_and_reports_why() -> None:
    servers = [sv("p", Role.primary, ServerState.down), sv("r", cap=1)]
    plan = plan_failover("p", servers, [cv("a", "p"), cv("b", "p"), cv("u", "p", movable=False)])
    assert plan.moves == [Move("a", "p", "r")]
    assert plan.stranded == ["b"] and "max_cameras" in plan.reasons["b"]
    assert plan.offline == ["u"]


def test_san_mode_needs_same_drive_letters() -> None:
    servers = [sv("p", Role.primary, ServerState.down, drives="DE", san=True), sv("r1", drives="D"),
               sv("r2", drives="DEF"), sv("r3", drives="DE")]
    plan = plan_failover("p", servers, [cv("a", "p")])
    assert plan.moves == [Move("a", "p", "r3")]
    no_match = plan_failover("p", servers[:3], [cv("a", "p")])
    assert no_match.stranded == ["a"] and "SAN failover mode" in no_match.reasons["a"]


def test_no_live_redundant_server() -> None:
    servers = [sv("p", Role.primary, ServerState.down), sv("r", state=ServerState.down),
               sv("m", maintenance=True), sv("q", Role.primary)]
    plan = plan_failover("p", servers, [cv("a", "p")])
    assert plan.stranded == ["a"] and plan.reasons["a"] == "no live redundant server"

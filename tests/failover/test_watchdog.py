"""The recording watchdog and volume failure in the core, on a simulated clock over real footage folders."""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farmkeeper import inventory, watchdog
from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.layout import video_path
from farmkeeper.models import CameraState, ServerState
from farmkeeper.storage import VolumeAccess
from farmkeeper.storage.local import LocalVolume
from tests.failover.conftest import Farm

T0 = datetime(2026, 11, 26, 10, 50, tzinfo=UTC)      # the timeline crosses an hour folder


def db() -> Any:
    return session_scope(ensure_schema(get_engine()))


def servers_up(*names: str, since: datetime) -> None:
    with db() as s:
        for name in names:
            server = inventory.get_server(s, name)
            server.state, server.state_changed_at = ServerState.up, since
            s.add(server)


def opener(farm: Farm) -> Callable[[str, str], LocalVolume]:
    return lambda server, drive: LocalVolume(VolumeAccess(server=server, drive=drive,
                                                          local_path=str(farm.volumes[server])))


def write_segment(root: Path, camera: str, start: datetime, *, closed: bool = True) -> None:
    path = root / video_path(camera, 0, start).relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    (path if closed else path.with_name("." + path.name)).write_bytes(b"x")


MEMORY: list[watchdog.WatchMemory | None] = [None]


@pytest.fixture(autouse=True, params=["one-off sweeps", "a watching run's memory"])
def memory(request: pytest.FixtureRequest) -> Iterator[watchdog.WatchMemory | None]:
    """Every scenario runs twice: as one-off sweeps (the inventory alone) and as one watching run's sweeps
    (``WatchMemory``: cameras kept between sweeps, segments found by name, watch rows checkpointed)."""
    MEMORY[0] = watchdog.WatchMemory() if request.param != "one-off sweeps" else None
    yield MEMORY[0]
    MEMORY[0] = None


def sweep(farm: Farm, now: datetime) -> watchdog.WatchUpdate:
    if MEMORY[0] is not None:
        return watchdog.watch_sweep(MEMORY[0], db, opener(farm), now)
    with db() as s:
        checks = watchdog.plan_checks(s, now)
    sightings = watchdog.look(checks, opener(farm))
    with db() as s:
        return watchdog.record_sightings(s, sightings, now, checks=checks)


def watching(farm: Farm, memory: watchdog.WatchMemory
             ) -> tuple[Callable[[datetime], watchdog.WatchUpdate], list[str], list[str]]:
    """One watching run's sweeps over volumes that count what they do: ``run(now)``, the folders listed, the
    names looked for (``has_file``)."""
    listed: list[str] = []
    stats: list[str] = []

    class Counting(LocalVolume):
        def folder_names(self, relpath: str) -> list[str]:
            listed.append(relpath)
            return super().folder_names(relpath)

        def has_file(self, relpath: str) -> bool:
            stats.append(relpath)
            return super().has_file(relpath)

    def run(now: datetime) -> watchdog.WatchUpdate:
        return watchdog.watch_sweep(memory, db, lambda server, drive: Counting(VolumeAccess(
            server=server, drive=drive, local_path=str(farm.volumes[server]))), now)

    return run, listed, stats


def state(camera: str) -> tuple[str | None, CameraState]:
    with db() as s:
        cam = inventory.get_camera(s, camera)
        return cam.current, cam.state


@pytest.fixture
def farm(make_farm: Callable[..., Farm]) -> Farm:
    farm = make_farm([("p1", "primary"), ("r1", "redundant")],
                     [{"id": "cam-a", "home": "p1"}, {"id": "cam-b", "home": "p1", "stall_after": "5m"}])
    farm.data["farm"]["stall_after"] = "2m"
    with db() as s:
        inventory.farm_settings(s).stall_after_s = 120.0
    servers_up("p1", "r1", since=T0 - timedelta(hours=1))
    return farm


def test_stalled_once_and_resumed_once_under_jitter(farm: Farm) -> None:
    """1-minute segments closing 0..50 s late; a 9-minute outage; sweeps every 10 s for 30 minutes."""
    rng = random.Random(7)
    root = farm.volumes["p1"]
    outage = (T0 + timedelta(minutes=12), T0 + timedelta(minutes=21))
    segments = [T0 - timedelta(minutes=5) + timedelta(minutes=i) for i in range(40)]
    closes = {s: s + timedelta(seconds=60 + rng.uniform(0, 50)) for s in segments
              if not outage[0] <= s < outage[1]}
    stalls: list[tuple[datetime, watchdog.Stall]] = []
    resumes: list[tuple[datetime, watchdog.Resume]] = []
    looked = 0
    now = T0
    pending = sorted(closes.items(), key=lambda item: item[1])
    while now < T0 + timedelta(minutes=30):
        while pending and pending[0][1] <= now:
            start, _ = pending.pop(0)
            write_segment(root, "cam-a", start)
            write_segment(root, "cam-b", start)
        update = sweep(farm, now)
        looked += update.checked
        stalls += [(now, s) for s in update.stalled]
        resumes += [(now, r) for r in update.resumed]
        now += timedelta(seconds=10)
    # cam-a: one stall, stall_after (2 min) after its last segment ended, naming the last segment's time
    assert sorted((s.camera, s.server) for _, s in stalls) == [("cam-a", "p1"), ("cam-b", "p1")]
    at, stall = next((at, s) for at, s in stalls if s.camera == "cam-a")
    last = outage[0] - timedelta(minutes=1)
    assert stall.last_segment_at == last
    assert last + timedelta(minutes=3) <= at <= last + timedelta(minutes=3, seconds=60)
    # one resume, once the first segment after the outage is closed
    assert sorted((r.camera, r.last_segment_at) for _, r in resumes) == [("cam-a", outage[1]), ("cam-b", outage[1])]
    assert all(at >= closes[outage[1]] for at, _ in resumes)
    assert state("cam-a") == ("p1", CameraState.recording)
    # cam-b has stall_after 5m: stalled 3 minutes later than cam-a
    b_at = next(at for at, s in stalls if s.camera == "cam-b")
    assert b_at - at >= timedelta(minutes=3) - timedelta(seconds=60)
    # only cameras due a look were listed: far fewer looks than cameras x sweeps
    assert looked < 2 * 180 / 2


def test_a_stall_after_of_one_segment_never_flaps_on_the_segment_closing_at_the_deadline(farm: Farm) -> None:
    """``stall_after`` equal to the segment length (1 minute): each segment closes 1 s after its end, and a sweep
    lands on every deadline (sweeps every 10 s, segments on whole minutes). The segment ending at the deadline is
    given its close lag (``CLOSE_LAG_S``): never stalled, so never resumed."""
    import sqlalchemy as sa

    from farmkeeper.models import Camera

    with db() as s:
        table = Camera.__table__  # type: ignore[attr-defined]
        s.execute(sa.update(table).where(table.c.id == "cam-a").values(stall_after_s=60.0,
                                                                        version=table.c.version + 1))
    root = farm.volumes["p1"]
    written: set[datetime] = set()
    stalls, resumes = [], []
    now = T0
    while now < T0 + timedelta(minutes=15):
        for minute in range(-3, 16):
            start = T0 + timedelta(minutes=minute)
            if start not in written and start + timedelta(seconds=61) <= now:   # closed 1 s after its end
                write_segment(root, "cam-a", start)
                written.add(start)
        update = sweep(farm, now)
        stalls += [s.camera for s in update.stalled]
        resumes += [r.camera for r in update.resumed]
        now += timedelta(seconds=10)
    assert "cam-a" not in stalls and "cam-a" not in resumes
    assert state("cam-a")[1] == CameraState.recording


def test_short_gaps_below_stall_after_never_stall(farm: Farm) -> None:
    root = farm.volumes["p1"]
    seen = []
    for minute in range(20):
        now = T0 + timedelta(minutes=minute)
        if minute % 3 != 2:                       # every third segment missing: a 2-minute hole, no stall
            write_segment(root, "cam-a", now - timedelta(minutes=1))
        write_segment(root, "cam-a", now, closed=False)
        seen += sweep(farm, now).stalled + sweep(farm, now + timedelta(seconds=30)).stalled
    assert [s.camera for s in seen if s.camera == "cam-a"] == []
    assert state("cam-a")[1] == CameraState.recording


def test_never_recorded_camera_stalls_after_stall_after_from_first_look(farm: Farm) -> None:
    assert sweep(farm, T0).stalled == []
    assert sweep(farm, T0 + timedelta(minutes=2)).stalled == []          # a segment closing now gets its close lag
    grace = timedelta(seconds=watchdog.CLOSE_LAG_S)
    assert [s.camera for s in sweep(farm, T0 + timedelta(minutes=2) + grace).stalled] == ["cam-a"]
    stalled = sweep(farm, T0 + timedelta(minutes=5) + grace).stalled
    assert [(s.camera, s.last_segment_at) for s in stalled] == [("cam-b", None)]


def test_failover_stalled_moves_the_camera_alone_like_a_failover(farm: Farm) -> None:
    from sqlmodel import select

    from farmkeeper.failover import apply_camera_failover, open_failover_events
    from farmkeeper.models import Camera, FailoverEvent

    with db() as s:
        cam = s.get(Camera, "cam-a")
        assert cam is not None
        cam.failover_stalled = True
        s.add(cam)
    sweep(farm, T0)
    update = sweep(farm, T0 + timedelta(minutes=3))
    assert update.fail_over == {"p1": ["cam-a"]}          # cam-b (5m) is not stalled, cam-a only
    with db() as s:
        result = apply_camera_failover(s, "p1", update.fail_over["p1"], reason="camera stalled",
                                       mark_left=False)
    assert [(m.camera, m.to_server) for m in result.moved] == [("cam-a", "r1")]
    assert state("cam-a") == ("r1", CameraState.recording) and state("cam-b") == ("p1", CameraState.recording)
    with db() as s:
        events = open_failover_events(s, camera="cam-a")
        assert [(e.from_server, e.to_server, e.reason) for e in events] == [("p1", "r1", "camera stalled")]
        assert len(s.exec(select(FailoverEvent)).all()) == 1
    # on r1 the clock starts again: no stall before stall_after there
    assert sweep(farm, T0 + timedelta(minutes=4)).stalled == []


@pytest.fixture
def read_only_volume(farm: Farm) -> Iterator[Path]:
    path = farm.volumes["p1"]
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {path} (needs root / CAP_SYS_ADMIN): {mounted.stderr}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def probe(farm: Farm, now: datetime) -> watchdog.VolumeUpdate:
    with db() as s:
        checks = watchdog.plan_volume_checks(s)
    probes = watchdog.probe_volumes(checks, opener(farm), now)
    with db() as s:
        return watchdog.record_volume_probes(s, probes, now)


def test_read_only_volume_fails_its_cameras_over_after_down_after_and_recovers(
        farm: Farm, read_only_volume: Path) -> None:
    from farmkeeper.failover import apply_camera_failover, apply_recovery

    assert probe(farm, T0).transitions == []
    subprocess.run(["mount", "-o", "remount,ro", str(read_only_volume)], check=True)
    assert probe(farm, T0 + timedelta(seconds=1)).transitions == []          # not yet: down_after is 5 s
    assert probe(farm, T0 + timedelta(seconds=4)).transitions == []
    update = probe(farm, T0 + timedelta(seconds=7))
    assert [(t.server, t.drive, t.failed) for t in update.transitions] == [("p1", "D", True)]
    assert "cannot write" in (update.transitions[0].error or "")
    assert update.fail_over == {"p1": ["cam-a", "cam-b"]}
    with db() as s:
        assert watchdog.plan_checks(s, T0 + timedelta(hours=1)) == []       # stall checks leave them alone
        moved = apply_camera_failover(s, "p1", update.fail_over["p1"], reason="storage failed")
    assert sorted(m.camera for m in moved.moved) == ["cam-a", "cam-b"]
    assert probe(farm, T0 + timedelta(seconds=9)).transitions == []          # reported once
    subprocess.run(["mount", "-o", "remount,rw", str(read_only_volume)], check=True)
    back = probe(farm, T0 + timedelta(seconds=11))
    assert [(t.server, t.failed) for t in back.transitions] == [("p1", False)] and back.fail_over == {}
    with db() as s:
        assert apply_recovery(s, "p1").became_redundant                    # camera-less: redundant, like a server


def test_local_servers_share_one_lane_and_a_hung_one_makes_only_that_lane_late() -> None:
    """Servers on local paths run one after another in one thread; SMB servers each in their own. A hung
    local mount makes the local lane late (all of it), never the SMB servers' results or the caller."""
    import threading

    from farmkeeper.watchdog import _per_server

    release = threading.Event()
    smb_together = threading.Barrier(2, timeout=5)   # passes only if both SMB servers are in flight at once
    local_in_flight: list[int] = [0]
    local_max: list[int] = [0]
    lock = threading.Lock()

    def work(items: list[str]) -> list[str]:
        name = items[0]
        if name == "hung":
            release.wait(10)
        elif name in ("s1", "s2"):
            smb_together.wait()
        elif name.startswith("l"):
            with lock:
                local_in_flight[0] += 1
                local_max[0] = max(local_max[0], local_in_flight[0])
            release.wait(0.1)
            with lock:
                local_in_flight[0] -= 1
        return [f"ok {name}"]

    groups = {name: [name] for name in ("l1", "l2", "l3", "s1", "s2")}
    out = _per_server(groups, work, lambda items: [f"late {items[0]}"], 5, "test-lanes", local={"l1", "l2", "l3"})
    assert out == ["ok l1", "ok l2", "ok l3", "ok s1", "ok s2"]
    assert local_max[0] == 1, "the local servers ran one after another"
    groups = {name: [name] for name in ("hung", "l2", "s3")}
    try:
        out = _per_server(groups, work, lambda items: [f"late {items[0]}"], 0.5, "test-lanes", local={"hung", "l2"})
    finally:
        release.set()
    assert out == ["late hung", "late l2", "ok s3"]


def test_a_camera_moved_or_removed_between_plan_and_record_is_left_alone(farm: Farm) -> None:
    """Recording uses what the plan read; every write is a compare-and-set, so a camera moved (or removed)
    while its folders were listed is neither marked stalled nor given a watch row where it no longer is."""
    from farmkeeper.models import Camera, CameraWatch

    sweep(farm, T0)                                   # first look: both cameras watched from T0, no footage
    later = T0 + timedelta(minutes=6)                 # both past their stall_after: due, and would stall
    with db() as s:
        checks = watchdog.plan_checks(s, later)
        s.add(Camera(id="cam-new", declared_home="p1", home="p1", current="p1"))  # no watch row yet
    assert sorted(c.camera for c in checks) == ["cam-a", "cam-b"]
    with db() as s:
        checks += watchdog.plan_checks(s, later, everyone=True)[-1:]  # cam-new, planned
        assert checks[-1].camera == "cam-new"
    sightings = watchdog.look(checks, opener(farm))
    with db() as s:                                   # meanwhile: cam-a moved to r1, cam-new removed
        cam = inventory.get_camera(s, "cam-a")
        cam.current = "r1"
        s.add(cam)
        new = s.get(Camera, "cam-new")
        assert new is not None
        s.delete(new)
    with db() as s:
        update = watchdog.record_sightings(s, sightings, later, checks=checks)
    assert [x.camera for x in update.stalled] == ["cam-b"]            # cam-b only: it is still on p1
    assert state("cam-a") == ("r1", CameraState.recording)
    with db() as s:
        assert s.get(CameraWatch, "cam-new") is None


def test_the_previous_hour_is_listed_only_while_the_segment_length_is_unknown(farm: Farm) -> None:
    """The first minute of an hour holds one closed segment: a camera looked at for the first time has the
    previous hour listed too (to learn the usual length); one whose watch row has it, the newest hour alone."""
    root = farm.volumes["p1"]
    hour = T0.replace(minute=0) + timedelta(hours=1)           # 11:00
    for camera in ("cam-a", "cam-b"):
        for minutes in range(50, 59):
            write_segment(root, camera, hour - timedelta(minutes=60 - minutes))

    listed: dict[str, list[str]] = {}

    def spying(server: str, drive: str) -> LocalVolume:
        volume = opener(farm)(server, drive)
        original = volume.folder_names

        def folder_names(rel: str) -> list[str]:
            listed.setdefault(rel.split("/")[1], []).append(rel.rsplit("/", 1)[-1])
            return original(rel)

        volume.folder_names = folder_names  # type: ignore[method-assign]
        return volume

    def look_at(now: datetime, *cameras: str) -> list[watchdog.Sighting]:
        with db() as s:
            checks = [c for c in watchdog.plan_checks(s, now, everyone=True) if c.camera in cameras]
        listed.clear()
        sightings = watchdog.look(checks, spying)
        with db() as s:
            watchdog.record_sightings(s, sightings, now, checks=checks)
        return sightings

    look_at(hour - timedelta(seconds=30), "cam-a")             # cam-a's usual length is learnt: 60 s
    for camera in ("cam-a", "cam-b"):
        write_segment(root, camera, hour - timedelta(minutes=1))
        write_segment(root, camera, hour)
    sightings = look_at(hour + timedelta(seconds=90), "cam-a", "cam-b")
    assert {s.camera: s.newest for s in sightings} == {"cam-a": hour, "cam-b": hour}
    assert listed == {"cam-a": ["11"], "cam-b": ["11", "10"]}
    with db() as s:
        assert s.get(watchdog.CameraWatch, "cam-a").segment_s == 60.0  # type: ignore[union-attr]
        assert s.get(watchdog.CameraWatch, "cam-b").segment_s == 60.0  # type: ignore[union-attr]


def test_a_watching_run_finds_segments_by_name_sees_other_writers_and_saves_at_its_checkpoint(farm: Farm) -> None:
    """One watching run's memory: after the first listing the next segments are found by name (no listing);
    a camera moved by another writer is seen in the next sweep; rows that only saw newer segments reach the
    inventory at the checkpoint; a stall is still decided on a listing."""
    import sqlalchemy as sa

    from farmkeeper.models import Camera, CameraWatch

    memory = watchdog.WatchMemory()
    root = farm.volumes["p1"]
    run, listed, _ = watching(farm, memory)

    def stored(camera: str) -> tuple[str, datetime | None]:
        with db() as s:
            row = s.get(CameraWatch, camera)
            assert row is not None
            return row.server, row.last_segment_at

    for minute in range(-5, 0):
        write_segment(root, "cam-a", T0 + timedelta(minutes=minute))
    run(T0)                                             # first look: listed, rows inserted now
    assert stored("cam-a") == ("p1", T0 - timedelta(minutes=1))
    listed.clear()
    now = T0
    for _ in range(24):                  # 4 minutes of 1-minute segments, sweeps every 10 s (checkpoint: 5 min)
        now += timedelta(seconds=10)
        if now.second == 0:
            write_segment(root, "cam-a", now - timedelta(minutes=1))
        assert [s.camera for s in run(now).stalled if s.camera == "cam-a"] == []
    assert [p for p in listed if "/cam-a/" in p] == []  # found by name, never listed
    kept = memory.cameras["cam-a"].watch
    assert kept is not None and kept.last_segment_at is not None
    assert kept.last_segment_at >= T0 + timedelta(minutes=1)          # it looked again when due, by name
    assert stored("cam-a") == ("p1", T0 - timedelta(minutes=1))     # not written yet: kept for the checkpoint
    with db() as s:
        assert memory.checkpoint(s, now, force=True) >= 1
    assert stored("cam-a") == ("p1", kept.last_segment_at)
    # another writer moves cam-a to r1 (as a failover does: version bumped): the next sweep looks there
    with db() as s:
        table = Camera.__table__  # type: ignore[attr-defined]
        s.execute(sa.update(table).where(table.c.id == "cam-a").values(current="r1", version=table.c.version + 1))
    reloads = memory.reloads
    with db() as s:
        plan = memory.plan(s, now + timedelta(seconds=10))
    assert memory.reloads == reloads + 1
    assert [(c.camera, c.server) for c in plan.checks if c.camera == "cam-a"] == [("cam-a", "r1")]
    assert [q for q in plan.quick if q.camera == "cam-a"] == []
    # back on p1, then silence: the stall is decided on a listing of the camera's folders
    with db() as s:
        s.execute(sa.update(table).where(table.c.id == "cam-a").values(current="p1", version=table.c.version + 1))
    listed.clear()
    stalls = []
    while now < T0 + timedelta(minutes=12):
        now += timedelta(seconds=10)
        stalls += run(now).stalled
    assert [s.camera for s in stalls if s.camera == "cam-a"] == ["cam-a"]
    assert any("/cam-a/" in p for p in listed)


def test_a_watching_runs_kept_volume_accesses_are_read_again_once_opening_one_failed(farm: Farm) -> None:
    """Kept accesses (``tasks.watchdog.FarmAccesses``) never keep failing a volume: a volume that cannot be opened
    (here its folder is gone) or is not known drops them, so the next sweep resolves them again."""
    from farmkeeper.errors import FarmkeeperError
    from tasks import watchdog as watchdog_tasks

    kept = watchdog_tasks.FarmAccesses()
    with watchdog_tasks.opener(["p1"], kept) as (open_one, local):
        assert "p1" in local and open_one("p1", "D").has_file("nothing-here") is False
        with pytest.raises(LookupError):
            open_one("p1", "Q")                       # not a volume of p1
    assert kept.held_since() is None
    root = farm.volumes["r1"]
    away = root.with_name(root.name + "-away")
    root.rename(away)
    try:
        with watchdog_tasks.opener(["r1"], kept) as (open_one, _):
            assert kept.held_since() is not None
            with pytest.raises(FarmkeeperError):
                open_one("r1", "D")
        assert kept.held_since() is None
    finally:
        away.rename(root)


@settings(max_examples=300, deadline=None)
@given(start=st.integers(min_value=0, max_value=4_102_444_800), ext=st.sampled_from(["mkv", "mp4", "ts"]))
def test_a_watching_runs_segment_names_are_the_layouts_names(start: int, ext: str) -> None:
    """The names a watching run looks for (formatted by hand, per hour) are exactly the footage layout's."""
    moment = datetime.fromtimestamp(start, UTC)
    assert watchdog._SegmentNames().video0("cam-a", ext, start) == video_path("cam-a", 0, moment, ext).relpath


def test_a_watching_run_lists_when_a_found_name_is_too_old_and_never_writes_over_another_writers_row(
        farm: Farm) -> None:
    """After a pause of the watch (segments written meanwhile) the next names are there but too old to keep the
    camera alive: it is listed, its newest segment found, no stall. A watch row changed by another writer while
    the memory held an unsaved one is not written over at the checkpoint."""
    import sqlalchemy as sa

    from farmkeeper.models import Camera, CameraWatch

    memory = watchdog.WatchMemory()
    root = farm.volumes["p1"]
    run, listed, _ = watching(farm, memory)

    for minute in range(-3, 0):
        write_segment(root, "cam-a", T0 + timedelta(minutes=minute))
    run(T0 + timedelta(seconds=5))                       # first look: listed, the newest is T0 - 1 min
    assert memory.cameras["cam-a"].watch.last_segment_at == T0 - timedelta(minutes=1)  # type: ignore[union-attr]
    for minute in range(0, 12):                          # the watch pauses 12 minutes; the camera records on
        write_segment(root, "cam-a", T0 + timedelta(minutes=minute))
    listed.clear()
    update = run(T0 + timedelta(minutes=12, seconds=30))  # the next 4 names are there: T0 + 3 min is too old
    assert "cam-a" not in [s.camera for s in update.stalled]
    assert any("/cam-a/" in p for p in listed)           # too old to decide alone: listed
    assert memory.cameras["cam-a"].watch.last_segment_at == T0 + timedelta(minutes=11)  # type: ignore[union-attr]
    with db() as s:
        assert memory.checkpoint(s, T0 + timedelta(minutes=13), force=True) >= 0
    # the watch saw a newer segment (unsaved); meanwhile another writer gives cam-a a new watch row
    write_segment(root, "cam-a", T0 + timedelta(minutes=12))
    write_segment(root, "cam-a", T0 + timedelta(minutes=13))
    now = T0 + timedelta(minutes=14, seconds=10)
    run(now)
    while "cam-a" not in memory.unsaved:
        now += timedelta(seconds=10)
        write_segment(root, "cam-a", now.replace(second=0) - timedelta(minutes=1))
        run(now)
    other_since = T0 + timedelta(minutes=14)
    with db() as s:
        watch_table, cam_table = CameraWatch.__table__, Camera.__table__  # type: ignore[attr-defined]
        s.execute(sa.update(watch_table).where(watch_table.c.camera_id == "cam-a")
                  .values(since=other_since, last_segment_at=None))
        s.execute(sa.update(cam_table).where(cam_table.c.id == "cam-a").values(version=cam_table.c.version + 1))
    run(now + timedelta(seconds=10))                     # reloads: the other writer's row wins
    with db() as s:
        memory.checkpoint(s, now + timedelta(seconds=20), force=True)
        row = s.get(CameraWatch, "cam-a")
        assert row is not None and row.since == other_since


def test_a_farm_file_change_of_a_cameras_watch_settings_reaches_a_watching_run_at_its_next_sweep(
        farm: Farm) -> None:
    """Applying the farm file with a camera's ``stall_after`` changed bumps the camera's version, so a watching
    run reloads its memory at the next sweep (not ``RELOAD_S`` later) and plans with the new value."""
    import yaml

    from tests.failover.conftest import apply

    memory = watchdog.WatchMemory()
    with db() as s:
        memory.plan(s, T0)
    assert memory.cameras["cam-a"].cam[3] is None           # the farm's stall_after
    farm.data["cameras"] = [dict(c, stall_after="10m") if c["id"] == "cam-a" else c for c in farm.data["cameras"]]
    farm.path.write_text(yaml.safe_dump(farm.data, sort_keys=False))
    apply(farm)
    reloads = memory.reloads
    with db() as s:
        memory.plan(s, T0 + timedelta(seconds=10))
    assert memory.reloads == reloads + 1
    assert memory.cameras["cam-a"].cam[3] == 600.0


def test_a_watching_run_looks_for_the_newest_name_first_and_a_gap_before_it_changes_nothing(farm: Farm) -> None:
    """Names are looked for newest first: the segment ending at the deadline alone answers (one ``stat``); a missing
    segment before it (a gap) neither lists the folders nor changes what is decided."""
    memory = watchdog.WatchMemory()
    root = farm.volumes["p1"]
    run, listed, stats = watching(farm, memory)

    for minute in range(-3, 0):
        write_segment(root, "cam-a", T0 + timedelta(minutes=minute))
    run(T0 + timedelta(seconds=5))                       # first look lists: the newest is T0 - 1 min
    write_segment(root, "cam-a", T0 + timedelta(minutes=1))   # T0 itself is missing: a gap
    listed.clear()
    stats.clear()
    due = T0 + timedelta(minutes=2, seconds=5 + watchdog.CLOSE_LAG_S + 1)   # expected since the first look
    update = run(due)
    assert "cam-a" not in [s.camera for s in update.stalled]
    assert [p for p in listed if "/cam-a/" in p] == []
    assert [p for p in stats if "/cam-a/" in p] == [video_path("cam-a", 0, T0 + timedelta(minutes=1)).relpath]
    assert memory.cameras["cam-a"].watch.last_segment_at == T0 + timedelta(minutes=1)  # type: ignore[union-attr]

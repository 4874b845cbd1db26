"""Swap-back end to end on real Samba: CLI → flow → copy jobs, verified byte for byte."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select

from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.models import Camera, CopyItem, CopyItemState, CopyJob, CopyJobState, DeletionAudit, FailoverEvent
from tests.fixtures.receivers import HttpReceiver
from tests.swapback.conftest import SBFarm, camera, cli, fail_over, parse_json, tree_hashes, write_footage

pytestmark = [pytest.mark.samba, pytest.mark.slow]


def _db() -> object:
    return session_scope(ensure_schema(get_engine()))


def _camera(cam: str) -> Camera:
    with session_scope(ensure_schema(get_engine())) as session:
        row = session.get(Camera, cam)
        assert row is not None
        return row


def _jobs() -> list[CopyJob]:
    with session_scope(ensure_schema(get_engine())) as session:
        return list(session.exec(select(CopyJob).order_by(CopyJob.id)))  # type: ignore[arg-type]


def _items(job_id: int) -> list[CopyItem]:
    with session_scope(ensure_schema(get_engine())) as session:
        return list(session.exec(select(CopyItem).where(CopyItem.job_id == job_id)))


def _events(cam: str) -> list[FailoverEvent]:
    with session_scope(ensure_schema(get_engine())) as session:
        return list(session.exec(select(FailoverEvent).where(FailoverEvent.camera_id == cam)))


def test_swap_back_brings_footage_home(prefect_api: None, make_farm: Callable[..., SBFarm],
                                       http_receiver: HttpReceiver) -> None:
    farm = make_farm([camera("cam-a"), camera("cam-b", storage_path="D:\\Data;*E:\\Data"), camera("cam-c")],
                     notify=[http_receiver.url])
    want_a = write_footage(farm.share("spare1", "D"), "cam-a", 12, size=300 << 10)
    want_b = write_footage(farm.share("spare1", "D"), "cam-b", 5, seed=1)
    want_b_e = write_footage(farm.share("spare1", "E"), "cam-b", 4, seed=2)
    home_before = write_footage(farm.share("rec1", "D"), "cam-a", 3, start=datetime(2026, 2, 1, tzinfo=UTC))
    fail_over("cam-a")
    fail_over("cam-b")
    code, out = cli("swap-back", "rec1", "--json")
    assert code == 0, out
    result = parse_json(out)
    assert result["state"] == "done" and sorted(result["cameras"]) == ["cam-a", "cam-b"]
    n = len(want_a) + len(want_b) + len(want_b_e)
    assert result["copied"] == n and result["removed"] == n and result["remaining"] == 0
    # byte-identical at home, same drive letter, same relative path; home's own footage untouched
    assert tree_hashes(farm.share("rec1", "D"), "cam-a") == want_a | home_before
    assert tree_hashes(farm.share("rec1", "D"), "cam-b") == want_b
    assert tree_hashes(farm.share("rec1", "E"), "cam-b") == want_b_e
    # sources removed (and their empty folders pruned)
    for drive in "DE":
        for cam in ("cam-a", "cam-b"):
            assert tree_hashes(farm.share("spare1", drive), cam) == {}
    assert _camera("cam-a").current == "rec1" and _camera("cam-b").current == "rec1"
    assert all(e.ended_at is not None for cam in ("cam-a", "cam-b") for e in _events(cam))
    (job,) = _jobs()
    assert job.state == CopyJobState.done and job.files_done == job.files_total == n
    assert {i.state for i in _items(job.id or 0)} == {CopyItemState.removed}
    with session_scope(ensure_schema(get_engine())) as session:
        audits = list(session.exec(select(DeletionAudit).where(DeletionAudit.rule == "source_copied")))
    assert len(audits) == n and {a.server for a in audits} == {"spare1"}
    started = http_receiver.wait_for(lambda m: "started" in m.get("title", ""))
    assert "cam-a" in started["message"]
    finished = http_receiver.wait_for(lambda m: "finished" in m.get("title", ""))
    assert f"{n} copied" in finished["message"]
    # a second run has nothing to do
    code, out = cli("swap-back", "rec1", "--json")
    assert code == 0 and parse_json(out)["state"] == "nothing to do"


def _snapshot(farm: SBFarm) -> dict[str, dict[str, str]]:
    return {f"{srv}/{d}": tree_hashes(farm.share(srv, d), cam) for srv in ("rec1", "spare1") for d in "DE"
            for cam in ("cam-a",)}


def test_dry_run_touches_nothing(prefect_api: None, make_farm: Callable[..., SBFarm]) -> None:
    farm = make_farm([camera("cam-a")])
    want = write_footage(farm.share("spare1", "D"), "cam-a", 6)
    fail_over("cam-a")
    before = _snapshot(farm)
    code, out = cli("swap-back", "--camera", "cam-a", "--dry-run", "--json")
    assert code == 0, out
    result = parse_json(out)
    assert result["state"] == "dry run" and result["files"] == len(want)
    assert _snapshot(farm) == before
    assert _camera("cam-a").current == "spare1" and _jobs() == []
    assert all(e.ended_at is None for e in _events("cam-a"))


def test_collision_keeps_both_and_identical_is_skipped(prefect_api: None, make_farm: Callable[..., SBFarm]) -> None:
    farm = make_farm([camera("cam-a")])
    src = write_footage(farm.share("spare1", "D"), "cam-a", 4)
    same, differ = sorted(p for p in src if p.startswith("video/"))[:2]
    for rel, seed in ((same, None), (differ, 9)):
        dst = farm.share("rec1", "D") / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        source = farm.share("spare1", "D") / rel
        dst.write_bytes(source.read_bytes() if seed is None else b"other content of the same name")
        st = source.stat()
        __import__("os").utime(dst, (st.st_atime, st.st_mtime))
    fail_over("cam-a")
    code, out = cli("swap-back", "--camera", "cam-a", "--json")
    assert code == 0, out
    result = parse_json(out)
    items = [(i.relpath, i.state, i.dst_relpath, i.error) for i in _items(result["job_id"])]
    assert (result["skipped"], result["conflicts"], result["remaining"]) == (1, 1, 0), items
    home = tree_hashes(farm.share("rec1", "D"), "cam-a")
    kept = differ.replace(".mkv", "~spare1.mkv")
    assert home[kept] == src[differ]                          # the copy, under its conflict name
    assert home[differ] != src[differ]                        # home's own file untouched
    assert {k: v for k, v in home.items() if k != kept and k != differ} == {k: v for k, v in src.items()
                                                                          if k != differ}
    assert tree_hashes(farm.share("spare1", "D"), "cam-a") == {}


def test_camera_in_a_live_job_is_refused(prefect_api: None, make_farm: Callable[..., SBFarm]) -> None:
    from farmkeeper.models import utcnow

    make_farm([camera("cam-a"), camera("cam-c")])
    fail_over("cam-a")
    with session_scope(ensure_schema(get_engine())) as session:
        now = utcnow()
        session.add(CopyJob(kind="move", state=CopyJobState.running, created_at=now, updated_at=now,
                            cameras=["cam-a", "cam-c"], target="rec2",
                            params={"owner": {"host": "another-worker", "pid": 1}}))
    code, out = cli("swap-back", "--camera", "cam-a")
    assert code == 1
    assert "cam-a already being moved by job #1" in " ".join(out.split())
    assert _camera("cam-a").current == "spare1"               # nothing moved


def _run_cli_thread(*args: str) -> tuple[__import__("threading").Thread, dict[str, object]]:
    import threading

    box: dict[str, object] = {}

    def target() -> None:
        box["code"], box["out"] = cli(*args)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _wait_job(pred: Callable[[CopyJob], bool], timeout: float = 60.0) -> CopyJob:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = _jobs()
        if jobs and pred(jobs[-1]):
            return jobs[-1]
        time.sleep(0.1)
    raise AssertionError(f"copy job never reached the condition: {_jobs()}")


@pytest.mark.parametrize("side", ["source", "destination"])
def test_smbd_killed_mid_copy_then_rerun_completes(prefect_api: None, make_farm: Callable[..., SBFarm],
                                                   side: str) -> None:
    farm = make_farm([camera("cam-a")])
    want = write_footage(farm.share("spare1", "D"), "cam-a", 24, size=1 << 20, meta=False)
    fail_over("cam-a")
    thread, box = _run_cli_thread("swap-back", "--camera", "cam-a", "--max-mbps", "40", "--json")
    _wait_job(lambda j: j.bytes_done > 2 << 20)
    victim = farm.server("spare1" if side == "source" else "rec1")
    victim.kill()
    __import__("time").sleep(1.0)
    victim.start()
    thread.join(300)
    assert not thread.is_alive()
    if box["code"] != 0:                       # the run gave up: a re-run resumes the same job
        code, out = cli("swap-back", "--camera", "cam-a", "--json")
        assert code == 0, out
    (job,) = _jobs()
    assert job.state == CopyJobState.done
    home = tree_hashes(farm.share("rec1", "D"), "cam-a")
    assert home == want                       # byte-identical, nothing lost, no duplicate or temp file left
    assert tree_hashes(farm.share("spare1", "D"), "cam-a") == {}


def test_destination_full_fails_cleanly(prefect_api: None, make_farm: Callable[..., SBFarm],
                                        http_receiver: HttpReceiver) -> None:
    farm = make_farm([camera("cam-a", storage_path="G:\\Data")], drives="G", notify=[http_receiver.url],
                     servers=("rec1", "spare1"))
    want = write_footage(farm.share("spare1", "G"), "cam-a", 12, size=1 << 20, meta=False)   # 12 MiB > 8 MiB
    fail_over("cam-a")
    code, out = cli("swap-back", "--camera", "cam-a")
    assert code == 1
    text = " ".join(out.split())
    assert "no space" in text and "remain" in text and "Resume with: farmkeeper swap-back --camera cam-a" in text
    assert tree_hashes(farm.share("spare1", "G"), "cam-a") == want     # no source file deleted
    (job,) = _jobs()
    assert job.state == CopyJobState.failed and job.files_done < job.files_total
    failed = http_receiver.wait_for(lambda m: "FAILED" in m.get("title", ""))
    assert "farmkeeper swap-back --camera cam-a" in failed["message"]
    # nothing half-written is left under a footage name at home
    home = tree_hashes(farm.share("rec1", "G"), "cam-a")
    assert all(want[k] == v for k, v in home.items() if not k.rsplit("/", 1)[1].startswith("."))


def test_worker_killed_mid_copy_resumes(prefect_api: None, make_farm: Callable[..., SBFarm], tmp_path: Path,
                                        inventory_url: str) -> None:
    """kill -9 of the process running the flow; the next run resumes the same job and copies no file twice."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from prefect.settings import PREFECT_API_URL

    farm = make_farm([camera("cam-a")])
    want = write_footage(farm.share("spare1", "D"), "cam-a", 30, size=1 << 20, meta=False)
    fail_over("cam-a")
    env = dict(os.environ, PREFECT_API_URL=str(PREFECT_API_URL.value()), FARMKEEPER_DATABASE_URL=inventory_url)
    with open(tmp_path / "worker.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "farmkeeper.cli", "swap-back", "--camera", "cam-a",
                                 "--max-mbps", "24"], env=env, stdout=subprocess.DEVNULL, stderr=log,
                                start_new_session=True)
    try:
        before = _wait_job(lambda j: j.files_done >= 5, timeout=120)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    time.sleep(1.5)                      # let the last in-flight write settle
    (job,) = _jobs()
    assert job.state == CopyJobState.running and job.files_done >= before.files_done
    done_before = {i.relpath for i in _items(job.id or 0) if i.state in (CopyItemState.copied, CopyItemState.removed)}
    assert done_before and len(done_before) < len(want)
    code, out = cli("swap-back", "--camera", "cam-a", "--json")
    assert code == 0, out
    result = parse_json(out)
    assert result["job_id"] == job.id    # the same job, resumed
    (job,) = _jobs()
    assert job.state == CopyJobState.done and job.files_done == job.files_total == len(want)
    # files recorded as copied before the kill were not transferred again
    left_bytes = sum((farm.share("rec1", "D") / r).stat().st_size for r in want if r not in done_before)
    assert result["bytes_transferred"] <= left_bytes
    assert tree_hashes(farm.share("rec1", "D"), "cam-a") == want
    assert tree_hashes(farm.share("spare1", "D"), "cam-a") == {}


def test_with_simulator_failover_then_swap_back(prefect_api: None, make_farm: Callable[..., SBFarm], tmp_path: Path,
                                                inventory_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recorders (the farm simulator) on the Samba shares: failover → footage on spare1 → swap-back → home."""
    import time

    from farmkeeper.failover import apply_failover
    from farmkeeper.models import Server, ServerState
    from farmkeeper.sim import SimOptions, start_farm

    monkeypatch.setenv("FARMKEEPER_STORAGE__PREFER", "smb")      # volumes have a local path: force SMB
    farm = make_farm([camera("cam-a")], drives="D", local=True, servers=("rec1", "spare1"))
    with session_scope(ensure_schema(get_engine())) as session:
        for srv in session.exec(select(Server)):
            srv.state = ServerState.up
            session.add(srv)
    procs = start_farm(farm.path, SimOptions(database_url=inventory_url, state_dir=tmp_path / "sim", segment_s=1.0,
                                             bitrates=(800_000, 200_000)))
    try:
        time.sleep(3)
        with session_scope(ensure_schema(get_engine())) as session:
            session.get(Server, "rec1").state = ServerState.down  # type: ignore[union-attr]
            result = apply_failover(session, "rec1", force=True)
        assert [m.to_server for m in result.moved] == ["spare1"]
        time.sleep(4)                                            # spare1 records cam-a meanwhile
        with session_scope(ensure_schema(get_engine())) as session:
            session.get(Server, "rec1").state = ServerState.up  # type: ignore[union-attr]
        assert any(p.name.endswith(".mkv") for p in (farm.share("spare1") / "video" / "cam-a").rglob("*"))
        code, out = cli("swap-back", "rec1", "--json")
        assert code == 0, out
        res = parse_json(out)
        assert res["state"] == "done" and res["copied"] > 0 and res["failover_ended"] == ["cam-a"]
        swapped_at = time.time()
        for item in _items(res["job_id"]):   # a segment rec1 began in the same second is kept: a conflict copy
            assert (farm.share("rec1") / (item.dst_relpath or item.relpath)).stat().st_size == item.size
        assert not [p for p in (farm.share("spare1") / "video").rglob("*") if p.is_file()]
        time.sleep(3)                                            # recording goes on at home
        fresh = [p for p in (farm.share("rec1") / "video" / "cam-a").rglob("*.mkv")
                 if p.stat().st_mtime > swapped_at]
        assert fresh
        assert _camera("cam-a").current == "rec1"
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(10)

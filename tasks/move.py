"""Move-cameras tasks: select, plan (scan + target space), assign; the copying reuses ``tasks.copyjobs``."""

from __future__ import annotations

from typing import Literal, cast

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from farmkeeper import copyjobs, move, swapback
from farmkeeper.errors import FarmkeeperError
from farmkeeper.inventory import storage_settings
from farmkeeper.storage import Space, Volume, open_volume
from farmkeeper.volumes import ServerVolume, not_on_storage_of
from tasks.common import Tag, farm_volumes, inventory_session, retry_transient, storage_prefer


def _open(sv: ServerVolume) -> Volume:
    return open_volume(sv.access, prefer=cast(Literal["auto", "local", "smb"], storage_prefer()))


@task(name="select-move-cameras", retries=2, retry_delay_seconds=[1, 3], tags=[Tag.uses_db], cache_policy=NO_CACHE,
      retry_condition_fn=retry_transient)
def select_move(cameras: list[str], target: str) -> move.MoveSelection:
    """The cameras and the target, checked (unknown, down, maintenance, capacity, not movable: refused)."""
    with inventory_session() as session:
        return move.select_move(session, cameras, target)


@task(name="plan-move", retries=2, retry_delay_seconds=[2, 5], tags=[Tag.uses_smb, Tag.uses_db],
      cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def plan_move(selection: move.MoveSelection, footage: move.Footage) -> move.MovePlan:
    """Files and bytes per source volume, what is already on the target, and the target's space (read only)."""
    logger = get_run_logger()
    with inventory_session() as session:
        storage = storage_settings(session)
    target_vols = farm_volumes([selection.target])
    opened: list[tuple[copyjobs.SourceVolume, Volume]] = []
    on_target: dict[tuple[str, str], int] = {}
    spaces: dict[str, Space | str] = {}
    try:
        for sv in not_on_storage_of(farm_volumes([s for s in selection.sources if s != selection.target]),
                                    target_vols)[0]:
            opened.append((copyjobs.SourceVolume(sv.server, sv.drive, sv.label), _open(sv)))
        files, scan = copyjobs.scan_sources(opened, selection.cameras, selection.target,
                                            [sv.drive for sv in target_vols])
        for sv in target_vols:
            drive = sv.drive.upper()
            try:
                vol = _open(sv)
            except (FarmkeeperError, OSError) as exc:      # reported by the plan and the validation gate
                spaces[drive] = f"cannot open {sv.label}: {exc}"
                continue
            with vol:
                try:
                    spaces[drive] = vol.space()
                except (FarmkeeperError, OSError) as exc:
                    spaces[drive] = str(exc)
                for cam in selection.cameras:
                    for relpath, size, _mtime in copyjobs.camera_files(vol, cam):
                        on_target[(drive, relpath)] = size
    finally:
        for _src, vol in opened:
            vol.close()
    plan = move.build_plan(selection, footage, files, scan, on_target, spaces, storage)
    for line in plan.lines():
        logger.info("%s", line)
    return plan


@task(name="assign-moved-cameras", retries=3, retry_delay_seconds=[1, 2, 5], tags=[Tag.uses_db],
      cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def assign_cameras(cameras: list[str], target: str, footage: move.Footage,
                   run_id: str | None = None) -> list[move.Assigned]:
    """``current = home = target`` (pinned until the counts agree); recorded as ownership changes and an event."""
    with inventory_session() as session:
        done = move.assign_cameras(session, cameras, target, footage=footage, run_id=run_id)
    for a in done:
        get_run_logger().info("%s: recording %s -> %s, home %s -> %s", a.camera, a.from_current, a.to_server,
                              a.from_home, a.to_server)
    return done


@task(name="end-moved-failovers", retries=3, retry_delay_seconds=[1, 2, 5], tags=[Tag.uses_db],
      cache_policy=NO_CACHE, retry_condition_fn=retry_transient)
def end_failovers(cameras: list[str]) -> list[str]:
    """Open failover events of moved cameras end: their home and recording are now the target."""
    with inventory_session() as session:
        ended = swapback.end_failovers(session, cameras)
    return sorted({e.camera_id for e in ended})

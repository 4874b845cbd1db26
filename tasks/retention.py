"""Retention tasks: list the volumes to sweep, and sweep one volume (plan, audit, delete in batches)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from farmkeeper import floors, inventory
from farmkeeper import retention as core
from farmkeeper.errors import FarmkeeperError, NotFoundError
from farmkeeper.models import ServerState
from farmkeeper.settings import load_settings
from farmkeeper.storage import open_volume
from farmkeeper.volumes import ServerVolume, server_volumes
from tasks.common import Tag, farm_volumes, inventory_session, retry_transient, server_password, storage_prefer

BATCH_SIZE = 2000
LEASE_S = 900.0


@task(name="check-volume-floors", retries=0, cache_policy=NO_CACHE, tags=[Tag.uses_db])
def check_volume_floors(deadline_s: float = 5.0, known: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    """Free space of every volume of the live servers against its floor; which ones a sweep should start on.

    ``known``: free space read moments ago in the same sweep (``"SERVER:DRIVE" → (total, free)``, the
    watchdog's volume probes), used instead of reading those volumes again.

    Returns ``{"below": [labels], "sweep": ["SERVER:DRIVE"], "unknown": [texts]}``. A server whose password
    cannot be read is reported unknown, never probed with an empty password.
    """
    with inventory_session() as session:
        storage = inventory.storage_settings(session)
        if not storage.min_free_bytes and not storage.min_free_percent:
            return {"below": [], "sweep": [], "unknown": []}
        live = [s for s in inventory.list_servers(session) if s.state != ServerState.down]
        vols: list[ServerVolume] = []
        unknown: list[str] = []
        for server in live:
            try:
                password = server_password(server)
            except FarmkeeperError as exc:
                unknown.append(f"{server.name}: {exc}")
                continue
            vols += server_volumes(session, lambda _s, pw=password: pw, servers=[server.name],
                                   require_signing=load_settings().storage.require_signing)
    once = core.once_per_storage([(v.server, v.drive, v.unc) for v in vols], ())
    vols = [v for v in vols if (v.server, v.drive) not in once]
    checks = floors.check_floors(vols, storage, prefer=storage_prefer(), deadline_s=deadline_s,  # type: ignore[arg-type]
                                 known=known)
    with inventory_session() as session:
        due = floors.to_sweep(session, checks)
    for c in checks:
        if c.below:
            get_run_logger().warning("%s", c.text())
    return {"below": [c.label for c in checks if c.below], "sweep": [f"{c.server}:{c.drive}" for c in due],
            "unknown": unknown + [c.text() for c in checks if c.error],
            "below_volumes": [{"server": c.server, "drive": c.drive, "floor": c.floor,
                               "free": c.space.free if c.space else None, "total": c.space.total if c.space else None}
                              for c in checks if c.below]}


@task(name="list-retention-volumes", retries=3, retry_delay_seconds=[1, 2, 5], tags=[Tag.uses_db],
      retry_condition_fn=retry_transient)
def list_retention_volumes(servers: list[str] | None = None,
                           volumes: list[str] | None = None) -> list[dict[str, Any]]:
    """Every volume of the named servers (all when ``None``), or only ``volumes`` (``SERVER:DRIVE``);
    volumes of down servers are marked skipped."""
    with inventory_session() as session:
        known = {s.name: s for s in inventory.list_servers(session)}
        unknown = sorted(set(servers or ()) - set(known))
        if unknown:
            raise NotFoundError(f"unknown server(s): {', '.join(unknown)}")
        out = []
        chosen = [v for v in inventory.list_volumes(session)
                  if (servers is None or v.server_name in servers)
                  and (volumes is None or f"{v.server_name}:{v.drive}" in volumes)]
        down = {name for name, s in known.items() if s.state == ServerState.down}
        once = core.once_per_storage([(v.server_name, v.drive, v.unc) for v in chosen], down)
        for volume in chosen:
            skip = "server is down" if volume.server_name in down else once.get((volume.server_name, volume.drive))
            label = f"{volume.unc} ({volume.drive}: of {volume.server_name})" if volume.unc \
                else f"\\\\{volume.server_name}\\{volume.share}"
            out.append({"server": volume.server_name, "drive": volume.drive, "volume": label, "skipped": skip})
        return out


@task(name="sweep-volume", retries=3, retry_delay_seconds=[2, 5, 15], retry_condition_fn=retry_transient,
      cache_policy=NO_CACHE, tags=[Tag.uses_smb, Tag.uses_db, Tag.deletes])
def sweep_volume(server: str, drive: str, *, run_id: str, dry_run: bool = False, force: bool = False,
                 batch_size: int = BATCH_SIZE) -> dict[str, Any]:
    """Plan one volume and (unless ``dry_run``) carry the plan out; safe to re-run."""
    logger = get_run_logger()
    started = time.monotonic()
    with inventory_session() as session:
        policy = core.build_policy(inventory.storage_settings(session), inventory.farm_settings(session),
                                   inventory.list_cameras(session))
        holds = core.hold_ranges(inventory.list_holds(session))
        protected = core.in_flight_paths(session, server, drive)
        write_drives = core.redundant_write_drives(inventory.storage_settings(session), inventory.list_cameras(session))
        if not dry_run:
            busy = core.claim_volume(session, server, drive, run_id, LEASE_S)
            if busy:
                return {"server": server, "drive": drive, "volume": f"\\\\{server}\\DATA{drive}",
                        "skipped": f"another retention sweep (run {busy}) is working on this volume"}
    with _volume_leased(server, drive, run_id, held=not dry_run):
        access = next((v.access for v in farm_volumes([server]) if v.drive == drive), None)
        if access is None:
            raise NotFoundError(f"server {server} has no volume {drive}")
        with open_volume(access, prefer=storage_prefer()) as volume:  # type: ignore[arg-type]
            space = volume.space()
            listing = core.read_listing(volume.walk())
            listed_s = time.monotonic() - started
            if not dry_run:
                with inventory_session() as session:
                    settled = core.reconcile_pending(session, server, drive, listing, owner=run_id)
                if settled:
                    logger.info("%s: settled %d audit rows left pending by an interrupted sweep",
                                f"\\\\{server}\\DATA{drive}", settled)
            plan = core.plan_volume(listing, policy, space=space, now=time.time(), holds=holds,
                                    protected=protected, force=force, server=server, drive=drive)
            report = plan.summary() | {"dry_run": dry_run, "listed_s": round(listed_s, 3)}
            for text in report["alerts"]:
                logger.warning("%s", text)
            if dry_run:
                report["free_after"] = plan.expected_free
                report["planned_s"] = round(time.monotonic() - started, 3)
                if not plan.blocked:
                    floored = plan.deletions[plan.deletions["rule"].isin(core.FLOOR_RULES)]
                    planned: dict[str, list[str]] = {}
                    for cam, rel in zip(floored["camera"], floored["relpath"], strict=True):
                        planned.setdefault(str(cam), []).append(str(rel))
                    report |= _in_step_sources(planned, write_drives)
                return report
            done, after = _carry_out(volume, plan, run_id=run_id, batch_size=batch_size)
    report = _record(plan, done, after, report, started, failed_what="files") | _in_step_sources(
        done.floor_deleted, write_drives)
    logger.info("%s: deleted %d files (%d bytes), %d already gone, %d failed; free %d -> %d", plan.label,
                done.files, done.bytes, done.missing, len(done.failed), space.free, after.free)
    return report


@contextmanager
def _volume_leased(server: str, drive: str, run_id: str, *, held: bool) -> Iterator[None]:
    """The volume's sweep lease (taken with ``claim_volume`` when ``held``) is released however the sweep
    ends: done, failed, or with nothing to do (no such volume)."""
    try:
        yield
    finally:
        if held:
            with inventory_session() as session:
                core.release_volume(session, server, drive, run_id)


def _carry_out(volume: Any, plan: core.VolumePlan, *, run_id: str, batch_size: int) -> tuple[core.Execution, Any]:
    """Carry a plan out (the volume's sweep lease renewed after each batch); the free space after it."""
    def renew(_: core.Execution) -> None:
        with inventory_session() as s:
            core.claim_volume(s, plan.server, plan.drive, run_id, LEASE_S)

    done = core.execute_plan(volume, plan, sessions=inventory_session, run_id=run_id, batch_size=batch_size,
                             on_batch=renew)
    return done, volume.space()


def _record(plan: core.VolumePlan, done: core.Execution, after: Any, report: dict[str, Any], started: float, *,
            failed_what: str, keep_alerts: bool = False) -> dict[str, Any]:
    """Record the sweep of one volume (state, shortfalls, alerts) and add what was done to its report."""
    with inventory_session() as session:
        changes = core.record_sweep(session, plan, after, keep_alerts=keep_alerts)
    if done.failed:
        first = next(iter(done.failed.values()))
        text = f"{plan.label}: {len(done.failed)} {failed_what} could not be deleted (e.g. {first})"
        report["alerts"].append(text)
        changes.new_alerts.append(text)
    return report | {
        "deleted": done.deleted, "deleted_files": done.files, "deleted_bytes": done.bytes,
        "missing": done.missing, "failed": len(done.failed), "pruned_dirs": done.pruned_dirs,
        "kept_claimed": done.claimed, "claimed_by": sorted(done.claimed_by), "free_after": after.free,
        "shortfalls": changes.shortfalls, "new_shortfalls": changes.new_shortfalls,
        "resolved_shortfalls": changes.resolved, "new_alerts": changes.new_alerts,
        "elapsed_s": round(time.monotonic() - started, 3),
    }


def _in_step_sources(floor_deleted: dict[str, list[str]], write_drives: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """The report's ``floor_paths`` (camera → relpaths the floors deleted, for cameras written to several
    drives) and their ``write_drives``: the flow's in-step step deletes their copies on the other drives."""
    paths = {cam: rels for cam, rels in floor_deleted.items() if cam in write_drives and rels}
    if not paths:
        return {}
    return {"floor_paths": paths, "write_drives": {cam: list(write_drives[cam]) for cam in paths}}


@task(name="sweep-in-step", retries=3, retry_delay_seconds=[2, 5, 15], retry_condition_fn=retry_transient,
      cache_policy=NO_CACHE, tags=[Tag.uses_smb, Tag.uses_db, Tag.deletes])
def sweep_in_step(server: str, drive: str, sources: dict[str, dict[str, list[str]]], *, run_id: str,
                  dry_run: bool = False, batch_size: int = BATCH_SIZE) -> dict[str, Any]:
    """Delete on ``server``'s volume ``drive`` the copies of the recordings the floors deleted from the
    cameras' other write paths on that server (``sources``: drive → camera → relpaths), rule ``in_step``.

    The cameras' write drives are read again here (only a redundant camera writing to ``drive`` counts);
    held copies and copies a copy job uses stay. Safe to re-run (a copy already gone is not listed).
    """
    logger = get_run_logger()
    started = time.monotonic()
    label = f"\\\\{server}\\DATA{drive}"
    base: dict[str, Any] = {"server": server, "drive": drive, "volume": label, "in_step_only": True}
    with inventory_session() as session:
        cameras = inventory.list_cameras(session)
        policy = core.build_policy(inventory.storage_settings(session), inventory.farm_settings(session), cameras)
        write_drives = core.redundant_write_drives(inventory.storage_settings(session), cameras)
        wanted = core.in_step_targets(sources, write_drives, [drive]).get(drive.upper(), {})
        if not wanted:
            return base | {"skipped": "no copies to delete in step"}
        holds = core.hold_ranges(inventory.list_holds(session))
        protected = core.in_flight_paths(session, server, drive)
        if not dry_run:
            busy = core.claim_volume(session, server, drive, run_id, LEASE_S)
            if busy:
                text = (f"{label}: the copies of {sum(len(p) for p in wanted.values())} recordings a floor deleted "
                        f"from {', '.join(sorted(sources))}: were not deleted in step: another retention sweep "
                        f"(run {busy}) is working on this volume")
                logger.warning("%s", text)
                return base | {"skipped": text, "alerts": [text], "new_alerts": [text]}
    with _volume_leased(server, drive, run_id, held=not dry_run):
        access = next((v.access for v in farm_volumes([server]) if v.drive == drive), None)
        if access is None:
            return base | {"skipped": f"server {server} has no volume {drive}: nothing to keep in step there"}
        with open_volume(access, prefer=storage_prefer()) as volume:  # type: ignore[arg-type]
            space = volume.space()
            listing = core.read_listing(volume.walk())
            if not dry_run:
                with inventory_session() as session:
                    core.reconcile_pending(session, server, drive, listing, owner=run_id)
            plan = core.plan_in_step(listing, wanted, policy, space=space, now=time.time(), holds=holds,
                                     protected=protected, server=server, drive=drive, sources=sorted(sources))
            info = {"from": sorted(sources), "planned_files": len(plan.deletions), "kept": plan.kept}
            report = base | plan.summary() | {"dry_run": dry_run, "in_step": info}
            if dry_run:
                report["free_after"] = plan.expected_free
                return report
            done, after = _carry_out(volume, plan, run_id=run_id, batch_size=batch_size)
    report = _record(plan, done, after, report, started, failed_what="in-step copies", keep_alerts=True)
    logger.info("%s: deleted %d copies in step with %s (%d bytes), %d held, %d of a copy job kept", plan.label,
                done.files, ", ".join(sorted(sources)), done.bytes, plan.kept["held"]["files"],
                plan.kept["in_flight"]["files"] + done.claimed)
    return report

"""Flow ``retention-sweep``: age rules, then free-space floors (oldest first) on every volume; audit every deletion.

Scheduled every 15 minutes by ``farmkeeper serve``; by hand: ``farmkeeper run retention-sweep [--dry-run]
[--force] [--server X]`` or ``python -m flows.retention_sweep [--dry-run] [--force] [SERVER...]``.
Needs ``FARMKEEPER_DATABASE_URL`` (the inventory) and the servers' SMB credentials (env vars or Prefect
Secret blocks named in the farm file) unless every volume has a local ``path``. One task per volume.
Publishes a table artifact (per volume: files and bytes deleted by rule, free space before/after) and
notifies new retention shortfalls and alerts (purge guard, holds blocking the floors) through apprise.

With ``availability: redundant``, a last step (``keep_in_step``, one ``sweep-in-step`` task per volume)
deletes the copies of the recordings a floor deleted from the cameras' other write paths of the same
server (rule ``in_step``), so a camera's write paths stay in step (docs/retention.md, rule 4).

Between the scheduled runs the health check reads every volume's free space in every sweep
(``sweep_floors``, a health-check sweep step) and starts this flow for the volumes below a floor
(``volumes``), in a background thread, so probing never waits for the deletions.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from farmkeeper.retention import IN_STEP, RULES
from farmkeeper.specs import human_size
from tasks.common import send_notification
from tasks.events import floor_events, retention_events
from tasks.retention import check_volume_floors, list_retention_volumes, sweep_in_step, sweep_volume


class RetentionSweepParams(BaseModel):
    dry_run: bool = Field(False, description="Only plan: report what would be deleted per volume and rule; "
                                             "touch nothing and write no audit rows")
    force: bool = Field(False, description="Delete even when the implausible-purge guard trips (more than the "
                                           "farm's purge guard share of a volume, or all of a camera's footage)")
    servers: list[str] | None = Field(None, description="Sweep only these servers' volumes (default: all)")
    volumes: list[str] | None = Field(None, description="Or only these volumes, as SERVER:DRIVE (the health "
                                                       "check's free-space floor sweeps)")
    notify: bool = Field(True, description="Send new shortfalls and alerts to the farm's notify URLs")


def _cell(files: int, nbytes: int) -> str:
    return f"{files} / {human_size(nbytes)}" if files else "-"


def artifact_rows(volumes: list[dict[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for v in volumes:
        status = ("skipped: " + v["skipped"] if v.get("skipped") else "error: " + v["error"] if v.get("error")
                  else "guard: nothing deleted" if v.get("blocked") else "dry run" if v.get("dry_run")
                  else "in step" if v.get("in_step_only") else "ok")
        counts = v.get("rules", {}) if v.get("dry_run") or v.get("blocked") else v.get("deleted", {})
        row = {"volume": v["volume"], "status": status}
        for rule in RULES:
            c = counts.get(rule, {"files": 0, "bytes": 0})
            row[rule] = _cell(c["files"], c["bytes"])
        free_before, free_after = v.get("free_before"), v.get("free_after")
        row["free before"] = human_size(free_before) if free_before is not None else "-"
        row["free after"] = human_size(free_after) if free_after is not None else "-"
        row["alerts"] = "; ".join(v.get("alerts", []))
        rows.append(row)
    return rows


@flow(name="retention-sweep", log_prints=False)
def retention_sweep(params: RetentionSweepParams = RetentionSweepParams()) -> dict[str, Any]:  # noqa: B008
    """Sweep every volume (or those of ``params.servers``): one task per volume, in parallel."""
    logger = get_run_logger()
    run_id = str(flow_run.get_id() or "local")
    targets = list_retention_volumes(params.servers, params.volumes)
    futures = {}
    volumes: list[dict[str, Any]] = []
    for t in targets:
        if t["skipped"]:
            volumes.append(t)
            continue
        futures[t["volume"]] = (t, sweep_volume.submit(t["server"], t["drive"], run_id=run_id,
                                                      dry_run=params.dry_run, force=params.force))
    for label, (t, future) in futures.items():
        try:
            volumes.append(future.result())
        except Exception as exc:  # one volume's failure never stops the others
            logger.error("%s: sweep failed: %s", label, exc)
            volumes.append(t | {"error": str(exc)})
    volumes = keep_in_step(volumes, run_id=run_id, dry_run=params.dry_run)
    volumes.sort(key=lambda v: v["volume"])
    if not params.dry_run:
        retention_events(volumes)

    shortfalls = [s for v in volumes for s in v.get("shortfalls", v.get("shortfall_candidates", []))]
    new_shortfalls = [s for v in volumes for s in v.get("new_shortfalls", [])]
    alerts = [a for v in volumes for a in v.get("alerts", [])]
    new_alerts = [a for v in volumes for a in v.get("new_alerts", [])]
    errors = [f"{v['volume']}: {v['error']}" for v in volumes if v.get("error")]

    title = "retention sweep" + (" (dry run)" if params.dry_run else "")
    lines = [f"- {s}" for s in shortfalls] or ["- none"]
    create_table_artifact(artifact_rows(volumes), key="retention-sweep",
                          description=f"{title}: files / bytes by rule per volume")
    create_markdown_artifact("\n".join([f"## Retention shortfall ({title})", *lines,
                                        "", "## Alerts", *([f"- {a}" for a in alerts + errors] or ["- none"])]),
                             key="retention-shortfall")
    if params.notify and not params.dry_run:
        if new_shortfalls:
            send_notification(f"retention shortfall: {len(new_shortfalls)} camera(s) hold fewer days than "
                              "their rule", "\n".join(f"- {s}" for s in new_shortfalls), "warning")
        if new_alerts or errors:
            send_notification("retention sweep alert", "\n".join(f"- {a}" for a in new_alerts + errors),
                              "failure")
    return {"run_id": run_id, "dry_run": params.dry_run, "force": params.force, "volumes": volumes,
            "shortfalls": shortfalls, "new_shortfalls": new_shortfalls, "alerts": alerts, "errors": errors}


def in_step_work(volumes: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, dict[str, list[str]]]]:
    """(server, sibling drive) → source drive → camera → relpaths: the copies the in-step step deletes, from
    the volumes' ``floor_paths`` (recordings of redundant cameras a floor deleted) and ``write_drives``."""
    work: dict[tuple[str, str], dict[str, dict[str, list[str]]]] = {}
    for v in volumes:
        floor_paths = v.pop("floor_paths", None) or {}
        drives = v.pop("write_drives", None) or {}
        for cam, paths in floor_paths.items():
            for other in drives.get(cam, ()):
                if other != v["drive"]:
                    work.setdefault((v["server"], other), {}).setdefault(v["drive"], {})[cam] = paths
    return work


def keep_in_step(volumes: list[dict[str, Any]], *, run_id: str, dry_run: bool) -> list[dict[str, Any]]:
    """The in-step step, after every volume's own sweep: the copies of the recordings the floors deleted
    are deleted from the cameras' other write paths of the same server (one task per sibling volume, also
    a volume this run did not sweep). Its report joins the volume's own (``in_step``, ``deleted.in_step``)."""
    logger = get_run_logger()
    work = in_step_work(volumes)
    if not work:
        return volumes
    futures = {key: sweep_in_step.submit(key[0], key[1], sources, run_id=run_id, dry_run=dry_run)
               for key, sources in sorted(work.items())}
    by_key = {(v.get("server"), v.get("drive")): v for v in volumes}
    for (server, drive), future in futures.items():
        try:
            step = future.result()
        except Exception as exc:  # one volume's failure never stops the others
            text = f"\\\\{server}\\DATA{drive}: in-step deletions failed: {exc}"
            logger.error("%s", text)
            step = {"server": server, "drive": drive, "volume": f"\\\\{server}\\DATA{drive}",
                    "error": text, "in_step_only": True}
        own = by_key.get((server, drive))
        if own is None and step.get("skipped") and not step.get("alerts"):
            continue                                    # nothing to keep in step there after all
        if own is None or own.get("skipped"):          # not swept in this run (or swept through another server)
            if own is not None:
                volumes.remove(own)
            volumes.append(step)
        elif own.get("error"):                          # its own sweep failed: both rows stay
            volumes.append(step | {"volume": f"{step['volume']} (in step)"})
        else:
            _merge_in_step(own, step)
    return volumes


def _merge_in_step(own: dict[str, Any], step: dict[str, Any]) -> None:
    """Fold a sibling volume's in-step report into the report of its own sweep in the same run."""
    if step.get("error"):
        own.setdefault("alerts", []).append(step["error"])
        own.setdefault("new_alerts", []).append(step["error"])
        return
    for key in ("alerts", "new_alerts"):
        own.setdefault(key, []).extend(a for a in step.get(key, []) if a not in own.get(key, []))
    if step.get("skipped"):
        return
    own["in_step"] = step["in_step"]
    counts = step.get("deleted") if not step.get("dry_run") else step.get("rules")
    target = own.get("rules" if own.get("dry_run") else "deleted")
    if counts and target is not None:
        target[IN_STEP] = counts[IN_STEP]
    if not step.get("dry_run"):
        for key in ("deleted_files", "deleted_bytes", "missing", "failed", "kept_claimed"):
            own[key] = own.get(key, 0) + step.get(key, 0)
        own["claimed_by"] = sorted(set(own.get("claimed_by", [])) | set(step.get("claimed_by", [])))
        own["new_shortfalls"] = own.get("new_shortfalls", []) + [
            s for s in step.get("new_shortfalls", []) if s not in own.get("new_shortfalls", [])]
        for key in ("shortfalls", "resolved_shortfalls"):
            own[key] = step.get(key, own.get(key, []))
    own["free_after"] = step.get("free_after", own.get("free_after"))


_floor_sweeps: dict[str, threading.Thread] = {}
_floor_lock = threading.Lock()


def sweep_floors(ctx: Any = None) -> dict[str, Any]:
    """Health-check sweep step: volumes below a floor get a retention sweep now (background thread).

    One floor sweep per volume at a time in this process (the sweep's lease covers other processes);
    ``join_floor_sweeps`` waits for them (tests, shutdown).
    """
    update = getattr(ctx, "update", ctx)       # a health-check SweepContext, or its HealthUpdate
    interval = getattr(update, "health_interval_s", None) or 10.0
    try:
        found = check_volume_floors(deadline_s=max(0.5, min(5.0, float(interval) / 2)),
                                    known=getattr(ctx, "spaces", None))   # this sweep's volume probes
    except Exception as exc:  # noqa: BLE001 - a floor check never stops the health sweep
        logging.getLogger(__name__).warning("floor check failed: %s: %s", type(exc).__name__, exc)
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    floor_events(found.pop("below_volumes", []))
    with _floor_lock:
        start = [v for v in found["sweep"] if not (v in _floor_sweeps and _floor_sweeps[v].is_alive())]
        if start:
            thread = threading.Thread(target=_run_floor_sweep, args=(start,), name="fk-floor-sweep", daemon=False)
            for v in start:
                _floor_sweeps[v] = thread
            thread.start()
    return found | {"started": start}


def _run_floor_sweep(volumes: list[str]) -> None:
    try:
        retention_sweep(RetentionSweepParams(volumes=volumes))
    except Exception as exc:  # noqa: BLE001 - the next health sweep tries again
        logging.getLogger(__name__).warning("floor sweep of %s failed: %s", ", ".join(volumes), exc)


def join_floor_sweeps(timeout: float | None = None) -> None:
    """Wait for the floor sweeps this process started."""
    with _floor_lock:
        threads = set(_floor_sweeps.values())
    for thread in threads:
        thread.join(timeout)


if __name__ == "__main__":
    args = sys.argv[1:]
    names = [a for a in args if not a.startswith("--")]
    retention_sweep(RetentionSweepParams(dry_run="--dry-run" in args, force="--force" in args,
                                         servers=names or None))

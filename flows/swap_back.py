"""Flow ``swap-back``: move cameras home and bring the footage recorded elsewhere back, verified, resumable.

Run from the Prefect UI (a form), ``farmkeeper swap-back SERVER | --camera ID ...`` or
``python -m flows.swap_back SERVER``. Needs ``FARMKEEPER_DATABASE_URL`` (the inventory) and the SMB
credentials the inventory references (``smb.password_env`` variables or Prefect Secret blocks).

With SAN failover mode off on the home server the cameras still go home, but nothing is copied or
deleted: the result says the footage stays where it was recorded, and why.

Order: validation gate (the seed's SAN failover requirements for the home and source servers; refused
with the report when it fails) → ``current = home`` → wait until the source servers closed the cameras'
last segments → plan every footage file on the other servers' volumes (same drive letter at home, same
path) → copy per volume pair (several connections, optional cap) → verify → audit + delete the sources
→ ``FailoverEvent.ended_at``. Everything is recorded in ``CopyJob``/``CopyItem``: a crash, a worker
restart or a re-run continues where it stopped. At most ``farmkeeper-copy-jobs`` (a Prefect global
concurrency limit, created with 2 slots if missing) copy flows run at once.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, Field, model_validator

from farmkeeper import swapback
from farmkeeper.copyjobs import (
    CameraBusyError,
    JobOptions,
    PlanReport,
    RunWording,
    blocked_cameras,
    job_report,
)
from farmkeeper.errors import FarmkeeperError
from farmkeeper.settings import load_settings
from farmkeeper.specs import human_size
from tasks.common import send_notification
from tasks.copyjobs import (
    check_cameras_free,
    end_failover_events,
    move_cameras_home,
    plan_copy_job,
    publish_job_report,
    refuse_busy,
    run_copy_flow,
    run_copy_job,
    scan_copy_sources,
    select_swap_back,
    wait_segments_closed,
)


class SwapBackParams(BaseModel):
    server: str | None = Field(None, description="Home server: swap back every camera whose home it is and that "
                                                 "records elsewhere (or whose footage is not home yet)")
    cameras: list[str] = Field(default_factory=list, description="Or these camera ids (same home server)")
    delete_source: bool = Field(True, description="Delete the footage on the other servers once verified at home")
    max_mbps: float | None = Field(None, gt=0, description="Bandwidth cap of the copy in megabits per second "
                                                           "(empty = no cap)")
    verify: Literal["size", "hash"] = Field("hash", description="hash (default): the copy is read back and its "
                                                                "BLAKE2b compared with the source's, hashed while "
                                                                "it was read; size: size and modification time "
                                                                "only (opt-out for trusted storage)")
    dry_run: bool = Field(False, description="Only report what would move and be copied; change nothing")
    connections: int | None = Field(None, ge=1, le=64, description="Parallel SMB connections per copy "
                                                                   "(default: FARMKEEPER_STORAGE__CONNECTIONS)")
    wait_closed_s: float = Field(120.0, ge=0, description="How long to wait for the other servers to close the "
                                                          "cameras' last segments")
    notify: bool = Field(True, description="Notify the farm's notify URLs (started, finished, failed)")
    auto: bool = Field(False, description="Started by the auto swap-back automation: go on only if the server "
                                          "is still due (up and out of maintenance for auto_swap_back_after, "
                                          "cameras failed over away from it, not started yet since it recovered)")

    @model_validator(mode="before")
    @classmethod
    def _server_name(cls, value: Any) -> Any:
        """``swap_back("rec1")``: a bare server name is the ``server`` parameter."""
        return {"server": value} if isinstance(value, str) else value


class SwapBackError(FarmkeeperError):
    """The swap-back was refused or did not finish; the message says what remains and how to resume."""


def _key(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60] or "x"


@flow(name="swap-back", log_prints=False)
def swap_back(params: SwapBackParams) -> dict[str, Any]:
    """Bring the cameras home with their footage (see the module docstring)."""
    logger = get_run_logger()
    started = time.monotonic()
    if params.auto and not _auto_swap_back_due(params.server):
        return {"home": params.server, "cameras": [], "state": "not due"}
    sel = select_swap_back(params.server, params.cameras)
    what = params.server or ", ".join(sel.cameras)
    resume = swapback.resume_command(params.server, sel.cameras, delete_source=params.delete_source,
                                     max_mbps=params.max_mbps, verify=params.verify)
    if not sel.cameras:
        logger.info("%s: no camera to swap back (all record at home and their footage is home)", what)
        return {"home": sel.home, "cameras": [], "state": "nothing to do"}
    logger.info("swap-back to %s: cameras %s; footage sources %s", sel.home, ", ".join(sel.cameras),
                ", ".join(sel.sources) or "-")
    if sel.unreachable:
        logger.warning("servers down, their volumes not read (footage there, if any, comes home with a later "
                       "run): %s", ", ".join(sel.unreachable))
    if sel.no_copy or set(sel.cameras) <= set(sel.central):
        return _without_copy(params, sel, started)
    central: dict[str, Any] = {}
    if sel.central:          # these are home already (central storage); the others go through the copy job
        central = _without_copy(params, sel, started, sorted(sel.central))
        sel.cameras = [c for c in sel.cameras if c not in sel.central]
    if params.dry_run:
        return _dry_run(params, sel) | _central_part(central)
    options = JobOptions(delete_source=params.delete_source, verify=params.verify, max_mbps=params.max_mbps,
                         connections=params.connections or load_settings().storage.connections)
    try:
        check_cameras_free(swapback.KIND, sel.cameras, sel.home)
    except CameraBusyError as exc:
        raise _busy(params, sel, exc) from None
    _gate(params, sel, resume)
    wording = RunWording(f"swap-back to {sel.home}", "at home", resume, rerun="re-run",
                         still_open="copy them with a later run")
    return run_copy_flow(wording, lambda: _run(params, sel, options, wording, started) | _central_part(central),
                         notify=params.notify, error=SwapBackError)


def _busy(params: SwapBackParams, sel: swapback.Selection, exc: CameraBusyError) -> Exception:
    return refuse_busy(f"swap-back to {sel.home}", exc, notify=params.notify, error=SwapBackError)


def _without_copy(params: SwapBackParams, sel: swapback.Selection, started: float,
                  cameras: list[str] | None = None) -> dict[str, Any]:
    """``cameras`` (default: all) go home; no footage is copied or deleted. Why: SAN failover mode is off on the
    home (``sel.no_copy``: the footage stays where it was recorded), or the footage is on central storage
    that the home reaches (``sel.central``: it is home already)."""
    logger = get_run_logger()
    cams = list(cameras if cameras is not None else sel.cameras)
    if sel.no_copy:
        why, footage = sel.no_copy, "stays where it was recorded"
        where = "; ".join(f"{c}: {', '.join(sel.stays[c])}" for c in cams if c in sel.stays) or "none elsewhere"
        detail = f"Footage recorded elsewhere: {where} (retention, ownership and status keep finding it there)."
    else:
        uncs = sorted({sel.central[c] for c in cams})
        why = (f"their footage is on central storage {', '.join(uncs)}, which {sel.home} and the servers that "
               "recorded them all reach: there is nothing to copy")
        footage, detail = "on central storage", "Nothing to bring home: every server records to the same storage."
    result: dict[str, Any] = {
        "home": sel.home, "cameras": cams, "job_id": None, "copied": 0, "skipped": 0, "conflicts": 0,
        "removed": 0, "remaining": 0, "bytes_transferred": 0, "footage": footage, "why": why,
        "footage_stays": {c: sel.stays[c] for c in cams if c in sel.stays},
        "central": {c: sel.central[c] for c in cams if c in sel.central}}
    if params.dry_run:
        logger.info("dry run: %s would record at %s again; nothing would be copied: %s", ", ".join(cams),
                    sel.home, why)
        return result | {"state": "dry run", "files": 0, "bytes": 0, "per_camera": {}, "unmapped": [],
                         "moves": [{"camera": cam, "records now on": sel.currents.get(cam) or "-",
                                    "would record on": sel.home, "files to copy": 0, "bytes to copy": human_size(0)}
                                   for cam in cams]}
    check_cameras_free(swapback.KIND, cams, sel.home)
    moved = move_cameras_home(cams)
    ended = end_failover_events(cams)
    body = f"cameras {', '.join(cams)} record at {sel.home} again; nothing was copied or deleted: {why}. {detail}"
    logger.info("%s", body)
    if cameras is None:
        create_markdown_artifact(f"# Swap-back to {sel.home}: done, footage not copied\n\n{body}",
                                 key=f"swap-back-report-{_key(sel.home)}", description=f"Swap-back to {sel.home}")
        if params.notify:
            send_notification(f"swap-back to {sel.home} done: nothing to copy", body, "success")
    return result | {"state": "done", "moved_home": [m.camera for m in moved], "failover_ended": ended,
                     "seconds": round(time.monotonic() - started, 3), "message": body}


def _auto_swap_back_due(server: str | None) -> bool:
    """The automation's run: still due? Then mark it started (once per recovery) and go on."""
    from farmkeeper.failover import swap_back_due
    from tasks.common import inventory_session
    from tasks.health import mark_swap_back_started

    with inventory_session() as session:
        due = server is not None and server in swap_back_due(session)
    if not due:
        get_run_logger().info("auto swap-back of %s: not due (down again, in maintenance, nothing failed over "
                              "away from it, or already started since it recovered); nothing to do", server)
        return False
    mark_swap_back_started(server, True, "started by the auto swap-back automation")
    return True


def _central_part(central: dict[str, Any]) -> dict[str, Any]:
    """What a mixed swap-back adds to its result for the cameras that were on central storage."""
    if not central:
        return {}
    return {"central": central["central"], "central_why": central["why"]}


def _gate(params: SwapBackParams, sel: swapback.Selection, resume: str) -> None:
    """The validation gate: the seed's SAN failover requirements on the home and source servers."""
    from tasks.validation import validate_servers

    report = validate_servers([sel.home, *sel.sources])
    create_markdown_artifact(report.to_markdown(), key=f"swap-back-validation-{_key(sel.home)}",
                             description=f"Validation gate of the swap-back to {sel.home}")
    if report.ok:
        return
    failures = "\n".join(f"- {f.text()}" for f in report.failures)
    message = (f"swap-back to {sel.home} refused: the SAN failover requirements are not met; nothing was "
               f"moved or copied.\n{failures}\nFix them, then run `{resume}`")
    if params.notify:
        send_notification(f"swap-back to {sel.home} refused", message, "failure")
    raise SwapBackError(message)


def _dry_run(params: SwapBackParams, sel: swapback.Selection) -> dict[str, Any]:
    logger = get_run_logger()
    scan = scan_copy_sources(sel.cameras, sel.home, sel.sources)
    rows = [{"camera": cam, "records now on": sel.currents.get(cam) or "-", "would record on": sel.home,
             "files to copy": scan.per_camera.get(cam, {}).get("files", 0),
             "bytes to copy": human_size(scan.per_camera.get(cam, {}).get("bytes", 0))} for cam in sel.cameras]
    create_table_artifact(rows, key=f"swap-back-dry-run-{_key(sel.home)}",
                          description=f"Dry run of the swap-back to {sel.home}: nothing was changed")
    logger.info("dry run: %d files (%s) would be copied to %s from %s; nothing changed", scan.files,
                human_size(scan.bytes), sel.home, ", ".join(sel.sources) or "-")
    for line in scan.unmapped:
        logger.warning("%s", line)
    return {"home": sel.home, "cameras": sel.cameras, "state": "dry run", "files": scan.files, "bytes": scan.bytes,
            "per_camera": scan.per_camera, "unmapped": scan.unmapped, "moves": rows}


def _run(params: SwapBackParams, sel: swapback.Selection, options: JobOptions, wording: RunWording,
         started: float) -> dict[str, Any]:
    moved = move_cameras_home(sel.cameras)
    still_open = wait_segments_closed(sel.cameras, sel.sources, params.wait_closed_s)
    run_id = str(flow_run.get_id() or "") or None
    plan: PlanReport = plan_copy_job(swapback.KIND, sel.cameras, sel.home, sel.sources, options, run_id)
    assert plan.job_id is not None
    job_id = plan.job_id
    if params.notify:
        send_notification(
            f"swap-back to {sel.home} started: {len(sel.cameras)} camera{'s' if len(sel.cameras) != 1 else ''}",
            f"cameras {', '.join(sel.cameras)} record at {sel.home} again; copying {plan.todo_files} files "
            f"({human_size(plan.todo_bytes)}) from {', '.join(sel.sources) or '-'} (copy job #{job_id})", "info")
    summary, results = run_copy_job(plan, options, progress_key=f"swap-back-progress-{_key(sel.home)}",
                                    progress_description=f"Copy job #{job_id}: footage coming home to {sel.home}")
    blocked = blocked_cameras(sel.cameras, plan.unmapped_cameras, still_open)
    home_now = [c for c, cs in summary.cameras.items() if cs.complete and c not in blocked]
    ended = end_failover_events(home_now) if home_now else []
    report = job_report(summary, results, wording, verify=params.verify, seconds=time.monotonic() - started,
                        unmapped=plan.unmapped, unreachable=sel.unreachable, still_open=still_open,
                        failover_ended=ended)
    rows = summary.rows()
    for row in rows:
        row["failover ended"] = "yes" if row["camera"] in ended else "no"
    result = {"home": sel.home, "cameras": sel.cameras, "job_id": job_id, "state": summary.state.value,
              "moved_home": [m.camera for m in moved], **report.result}
    return publish_job_report(report, table_key=f"swap-back-{_key(sel.home)}",
                              report_key=f"swap-back-report-{_key(sel.home)}", rows=rows, result=result,
                              notify=params.notify, error=SwapBackError)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m flows.swap_back SERVER")
    swap_back(SwapBackParams(server=sys.argv[1]))

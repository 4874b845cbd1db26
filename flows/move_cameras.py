"""Flow ``move-cameras``: move cameras to another (new) server, with their footage or without.

Run from the Prefect UI (a form), ``farmkeeper move CAMERA... --to SERVER --footage move|keep`` or
``python -m flows.move_cameras SERVER CAMERA... [--keep]``. Needs ``FARMKEEPER_DATABASE_URL`` (the
inventory) and the SMB credentials the inventory references (``smb.password_env`` variables or
Prefect Secret blocks).

Order: select (known cameras, movable, target up with volumes and capacity) → plan (files and bytes per
source volume; space needed per target volume against its free space above the storage floors; a move
that does not fit is refused) → dry run stops here → validation gate (the seed's SAN failover
requirements on the target and the servers holding the cameras' footage) → the cameras' current and
home become the target (home pinned until the file counts agree; ``OwnershipChange`` reason ``move``,
``ServerEvent`` ``cameras-moved``) → with ``footage: move``: wait for the old servers to close the last
segments, then a copy job of kind ``move`` (``farmkeeper.copyjobs``, the swap-back machinery: same drive
letter, same path, verified, sources audited and deleted; a re-run resumes it) → notify. With
``footage: keep`` nothing is copied, so there is no validation gate (SAN failover mode may be off): the
old footage stays where it was recorded and is still found by retention, ownership, swap-back and status.
"""

import sys
import time
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, Field, field_validator

from farmkeeper import move
from farmkeeper.copyjobs import CameraBusyError, JobOptions, PlanReport, RunWording, blocked_cameras, job_report
from farmkeeper.errors import FarmkeeperError
from farmkeeper.settings import load_settings
from farmkeeper.specs import human_size
from tasks.common import send_notification
from tasks.copyjobs import (
    check_cameras_free,
    plan_copy_job,
    publish_job_report,
    refuse_busy,
    run_copy_flow,
    run_copy_job,
    wait_segments_closed,
)
from tasks.move import assign_cameras, end_failovers, plan_move, select_move


class MoveCamerasParams(BaseModel):
    cameras: list[str] = Field(..., min_length=1, description="Camera ids to move")
    target: str = Field(..., min_length=1, description="Server that records the cameras from now on (their new "
                                                        "home)")
    footage: Literal["move", "keep"] = Field(..., description="move: copy the cameras' footage from every other "
                                                               "server to the target (same drive letter), verify, "
                                                               "then delete it at the source; keep: leave it where "
                                                               "it is (still found by retention and ownership)")
    dry_run: bool = Field(False, description="Only show the plan (files and bytes per source volume, space needed "
                                             "vs free on the target); change nothing")
    max_mbps: float | None = Field(None, gt=0, description="Bandwidth cap of the copy in megabits per second "
                                                           "(empty = no cap)")
    verify: Literal["size", "hash"] = Field("hash", description="hash (default): the copy is read back and its "
                                                                "BLAKE2b compared with the source's, hashed while "
                                                                "it was read; size: size and modification time "
                                                                "only (opt-out for trusted storage)")
    connections: int | None = Field(None, ge=1, le=64, description="Parallel SMB connections per copy "
                                                                   "(default: FARMKEEPER_STORAGE__CONNECTIONS)")
    wait_closed_s: float = Field(120.0, ge=0, description="How long to wait for the old servers to close the "
                                                          "cameras' last segments")
    notify: bool = Field(True, description="Notify the farm's notify URLs (moved, finished, refused, failed)")

    @field_validator("cameras")
    @classmethod
    def _unique(cls, cameras: list[str]) -> list[str]:
        return list(dict.fromkeys(c.strip() for c in cameras if c.strip()))


KEEP_WHY = ("--footage keep: nothing is copied or deleted (no SAN failover mode needed); the footage stays where it "
            "was recorded")


class MoveError(FarmkeeperError):
    """The move was refused or did not finish; the message says what remains and how to resume."""


def _key(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60] or "x"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


@flow(name="move-cameras", log_prints=False)
def move_cameras(params: MoveCamerasParams) -> dict[str, Any]:
    """Move cameras to ``target`` with (``footage: move``) or without (``keep``) their footage."""
    logger = get_run_logger()
    started = time.monotonic()
    resume = move.resume_command(params.cameras, params.target, footage=params.footage, max_mbps=params.max_mbps,
                                 verify=params.verify)
    sel = select_move(params.cameras, params.target)
    logger.info("move %s to %s (footage: %s); servers read: %s", ", ".join(sel.cameras), sel.target,
                params.footage, ", ".join(sel.sources) or "-")
    if sel.unreachable:
        logger.warning("servers down, their volumes not read (footage there stays; move it with a later run): %s",
                       ", ".join(sel.unreachable))
    plan = plan_move(sel, params.footage)
    create_table_artifact(plan.table() or [{"camera": c, "source": "-", "files": 0} for c in sel.cameras],
                          key=f"move-plan-{_key(sel.target)}",
                          description=("**dry run** — " if params.dry_run else "")
                          + f"Move to {sel.target} (footage: {params.footage}): "
                          + "; ".join(d.describe() for d in plan.drives))
    why_not = move.refusal(plan)
    if params.dry_run:
        return {"state": "dry run", "refused": why_not, "resume": resume, **plan.to_dict()}
    try:
        check_cameras_free(move.KIND, sel.cameras, sel.target)
    except CameraBusyError as exc:
        raise refuse_busy(f"move to {sel.target}", exc, notify=params.notify, error=MoveError) from None
    if params.footage == "keep":       # nothing is copied: the SAN failover requirements do not apply
        return _keep(params, sel, plan, started)
    _gate(params, sel, plan, resume)
    if why_not:
        _refuse(params, sel.target, why_not)
    options = JobOptions(delete_source=True, verify=params.verify, max_mbps=params.max_mbps,
                         connections=params.connections or load_settings().storage.connections)
    wording = RunWording(f"move to {sel.target}", f"on {sel.target}", resume, rerun=f"re-run `{resume}`",
                         still_open="re-run to move them",
                         intro=f"cameras {', '.join(sel.cameras)} record on {sel.target}, their home")
    return run_copy_flow(wording, lambda: _run(params, sel, plan, options, wording, started),
                         notify=params.notify, error=MoveError)


def _refuse(params: MoveCamerasParams, target: str, why: str) -> None:
    message = f"move to {target} refused; nothing was moved or copied: {why}"
    if params.notify:
        send_notification(f"move to {target} refused", message, "failure")
    raise MoveError(message)


def _gate(params: MoveCamerasParams, sel: move.MoveSelection, plan: move.MovePlan, resume: str) -> None:
    """The validation gate: the seed's SAN failover requirements on the target and the servers with footage."""
    from tasks.validation import validate_servers

    group = sorted({sel.target, *plan.holding, *sel.old_currents})
    report = validate_servers(group)
    create_markdown_artifact(report.to_markdown(), key=f"move-validation-{_key(sel.target)}",
                             description=f"Validation gate of the move to {sel.target}")
    if report.ok:
        return
    failures = "\n".join(f"- {f.text()}" for f in report.failures)
    _refuse(params, sel.target, f"the SAN failover requirements are not met:\n{failures}\nFix them, then run "
                                f"`{resume}`")


def _keep(params: MoveCamerasParams, sel: move.MoveSelection, plan: move.MovePlan, started: float) -> dict[str, Any]:
    logger = get_run_logger()
    run_id = str(flow_run.get_id() or "") or None
    assigned = assign_cameras(sel.cameras, sel.target, "keep", run_id)
    ended = end_failovers(sel.cameras)
    staying = "; ".join(f"{r.camera} {r.label}: {r.files} files" for r in plan.rows) or "no footage elsewhere"
    body = (f"{_plural(len(sel.cameras), 'camera')} ({', '.join(sel.cameras)}) now record on {sel.target}, their "
            f"home (pinned until the file counts agree). Footage kept where it is ({plan.files} files, "
            f"{human_size(plan.bytes)}): {staying}. Retention, ownership and swap-back keep finding it there.")
    logger.info("%s", body)
    create_markdown_artifact(f"# Move to {sel.target} (footage: keep): done\n\n{body}",
                             key=f"move-report-{_key(sel.target)}", description=f"Move to {sel.target}")
    if params.notify:
        send_notification(f"cameras moved to {sel.target}", body, "success")
    return {"state": "done", "target": sel.target, "footage": "keep", "cameras": sel.cameras,
            "why": KEEP_WHY, "footage_stays": _stays(plan),
            "moved": [a.camera for a in assigned], "failover_ended": ended, "kept_files": plan.files,
            "kept_bytes": plan.bytes, "seconds": round(time.monotonic() - started, 3), **_zero()}


def _stays(plan: move.MovePlan) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in plan.rows:
        if r.files:
            out.setdefault(r.camera, []).append(r.label)
    return out


def _zero() -> dict[str, Any]:
    return {"job_id": None, "copied": 0, "skipped": 0, "conflicts": 0, "removed": 0, "remaining": 0}


def _run(params: MoveCamerasParams, sel: move.MoveSelection, plan: move.MovePlan, options: JobOptions,
         wording: RunWording, started: float) -> dict[str, Any]:
    run_id = str(flow_run.get_id() or "") or None
    assigned = assign_cameras(sel.cameras, sel.target, "move", run_id)
    still_open = wait_segments_closed(sel.cameras, sel.old_currents, params.wait_closed_s) if sel.old_currents \
        else {}
    job: PlanReport = plan_copy_job(move.KIND, sel.cameras, sel.target, sel.sources, options, run_id)
    assert job.job_id is not None
    job_id = job.job_id
    if params.notify:
        send_notification(
            f"move to {sel.target} started: {_plural(len(sel.cameras), 'camera')}",
            f"cameras {', '.join(sel.cameras)} record on {sel.target} now (their new home); copying "
            f"{job.todo_files} files ({human_size(job.todo_bytes)}) from {', '.join(plan.holding) or '-'} "
            f"(copy job #{job_id})", "info")
    summary, results = run_copy_job(job, options, progress_key=f"move-progress-{_key(sel.target)}",
                                    progress_description=f"Copy job #{job_id}: footage moving to {sel.target}")
    blocked = blocked_cameras(sel.cameras, job.unmapped_cameras, still_open)
    complete = [c for c, cs in summary.cameras.items() if cs.complete and c not in blocked]
    complete += [c for c in sel.cameras if c not in summary.cameras and c not in blocked]
    ended = end_failovers(sorted(complete)) if complete else []
    report = job_report(summary, results, wording, verify=params.verify, seconds=time.monotonic() - started,
                        unmapped=job.unmapped, unreachable=sel.unreachable, still_open=still_open,
                        failover_ended=ended)
    result = {"state": summary.state.value, "target": sel.target, "footage": "move", "cameras": sel.cameras,
              "moved": [a.camera for a in assigned], "job_id": job_id, **report.result}
    return publish_job_report(report, table_key=f"move-{_key(sel.target)}",
                              report_key=f"move-report-{_key(sel.target)}",
                              rows=summary.rows() or [{"camera": c, "files": 0} for c in sel.cameras],
                              result=result, notify=params.notify, error=MoveError)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python -m flows.move_cameras TARGET CAMERA... [--keep] [--dry-run]")
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    move_cameras(MoveCamerasParams(target=args[0], cameras=args[1:],
                                   footage="keep" if "--keep" in sys.argv else "move",
                                   dry_run="--dry-run" in sys.argv))

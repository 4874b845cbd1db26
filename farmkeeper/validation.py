"""The SAN failover requirements of a redundancy group, checked for real (the gate before every swap-back).

The seed's four requirements: (1) the same number of SAN LUNs (volumes) on every server, (2) mapped to
the same drive letters, (3) SAN failover mode on for all servers, (4) every Data folder shared as
``DATAX`` and readable and writable from the others with the farm's account. Plus: the credentials
work, free space is readable, and the servers' clocks agree with ours (age-based retention reads ages
from names and times). (4) is proven over SMB even when a volume has a local path: a probe file
``.farmkeeper-probe-<uuid>`` is created at the share root, read back and deleted (also on failure);
its server-set modification time gives the server's clock.

``validate_farm(session, password_for, servers=None)`` returns a ``ValidationReport`` (one ``Finding``
per server and requirement, each failure with its fix); ``record_findings`` stores the last result per
(server, requirement) and returns the failures that are new.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from sqlmodel import Session

from farmkeeper import inventory
from farmkeeper.errors import (
    FarmkeeperError,
    StorageAuthError,
    StorageError,
    StorageNotFound,
    StoragePermission,
    StorageUnavailable,
)
from farmkeeper.models import Server, ValidationFinding, utcnow
from farmkeeper.specs import human_size
from farmkeeper.storage import Space, Volume, VolumeAccess, open_volume
from farmkeeper.volumes import PasswordFor, volume_access

log = logging.getLogger(__name__)

PROBE_PREFIX = ".farmkeeper-probe-"
Status = Literal["ok", "fail", "skip", "warn"]
FOLDER_LIMIT = 5000          # the seed: "Ideally, no more than 5000 files per folder"
Prefer = Literal["auto", "local", "smb"]


class Requirement(StrEnum):
    lun_count = "lun-count"                    # seed 1
    drive_letters = "drive-letters"            # seed 2
    san_failover_mode = "san-failover-mode"    # seed 3
    share = "share"                            # seed 4, one per share: "share:DATAD"
    credentials = "credentials"
    free_space = "free-space"                  # one per share: "free-space:DATAD"
    clock = "clock"
    folders = "folders"                        # one per share: "folders:DATAD" (entries per footage folder)


def requirement_key(req: Requirement, share: str | None = None) -> str:
    return f"{req.value}:{share}" if share else req.value


@dataclass(frozen=True)
class Finding:
    """The result of one requirement on one server (``share`` for per-share requirements)."""

    server: str
    requirement: Requirement
    status: Status
    message: str
    fix: str = ""
    share: str | None = None
    folders: tuple[tuple[str, int], ...] = ()     # (folder, entries) above FOLDER_LIMIT (requirement folders)

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    @property
    def key(self) -> str:
        return requirement_key(self.requirement, self.share)

    def text(self) -> str:
        head = f"{self.server}: {self.message}"
        return f"{head} — {self.fix}" if self.fix and self.status == "fail" else head


@dataclass
class ValidationReport:
    servers: list[str]
    findings: list[Finding] = field(default_factory=list)
    checked_at: datetime = field(default_factory=utcnow)
    new_failures: list[Finding] = field(default_factory=list)   # set by ``record_findings``
    resolved: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]

    def for_server(self, server: str) -> list[Finding]:
        return [f for f in self.findings if f.server == server]

    def summary(self) -> str:
        if not self.servers:
            return "no servers with volumes to validate"
        group = ", ".join(self.servers)
        if self.ok:
            return f"redundancy group {group}: all SAN failover requirements met"
        bad = sorted({f.server for f in self.failures})
        return f"redundancy group {group}: {len(self.failures)} failure(s) on {', '.join(bad)}"

    def to_markdown(self) -> str:
        mark = {"ok": "✅ ok", "fail": "❌ FAIL", "skip": "⏭ not checked", "warn": "⚠ warning"}
        lines = [f"# Farm validation {self.checked_at:%Y-%m-%d %H:%M:%S}Z", "", f"**{self.summary()}**", ""]
        if self.failures:
            lines += ["## Failures and fixes", ""]
            lines += [f"- **{f.server}** `{f.key}`: {_md(f.message)} — **fix:** {_md(f.fix)}" for f in self.failures]
            lines.append("")
        for server in self.servers:
            lines += [f"## {server}", "", "| requirement | result | detail | fix |", "|---|---|---|---|"]
            for f in self.for_server(server):
                lines.append(f"| {f.key} | {mark[f.status]} | {_md(f.message)} | "
                             f"{_md(f.fix) if f.status == 'fail' else ''} |")
            lines.append("")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "servers": self.servers, "checked_at": self.checked_at.isoformat(),
                "summary": self.summary(),
                "findings": [asdict(f) | {"requirement": f.key, "ok": f.ok} for f in self.findings],
                "large_folders": [{"server": f.server, "share": f.share, "path": path, "entries": n}
                                  for f in self.findings for path, n in f.folders],
                "new_failures": [f"{f.server}/{f.key}" for f in self.new_failures]}


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _drives(drives: Iterable[str]) -> str:
    return ", ".join(f"{d}:" for d in sorted(drives)) or "none"


def _unc(server: str, share: str) -> str:
    return f"\\\\{server}\\{share}"


def _names(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


# --- the configuration requirements (1), (2), (3) ---------------------------------------------------

def check_layout(group: dict[str, set[str]]) -> list[Finding]:
    """Requirements 1 and 2 over ``server → drive letters`` of the redundancy group."""
    out: list[Finding] = []
    n = len(group)
    if not n:
        return out
    sizes = Counter(len(d) for d in group.values())
    ref = max(sizes, key=lambda k: (sizes[k], k))
    presence = Counter(d for drives in group.values() for d in drives)
    expected = {d for d, c in presence.items() if 2 * c >= n}
    for server, drives in sorted(group.items()):
        others = [s for s in group if s != server]
        same = [s for s in others if len(group[s]) == ref]
        if not drives:
            out.append(Finding(server, Requirement.lun_count, "fail", "no SAN LUN (volume) in the inventory",
                               f"map the group's LUNs ({_drives(expected)}) to {server} and list them under its "
                               "volumes in the farm file, then `farmkeeper apply`"))
        elif len(drives) != ref:
            missing, extra = expected - drives, drives - expected
            what = (f"map the missing LUN(s) {_drives(missing)} to {server}" if len(drives) < ref
                    else f"unmap the extra LUN(s) {_drives(extra)} from {server} or map them on every server")
            out.append(Finding(server, Requirement.lun_count, "fail",
                               f"{len(drives)} SAN LUN(s) ({_drives(drives)}) but {_names(same)} "
                               f"{'has' if len(same) == 1 else 'have'} {ref}",
                               f"{what}: every server of the redundancy group needs the same number of LUNs"))
        else:
            out.append(Finding(server, Requirement.lun_count, "ok",
                               f"{len(drives)} SAN LUN(s), like {_names(others) or 'no other server'}"))
        problems: list[str] = []
        fixes: list[str] = []
        lacks = sorted(expected - drives)
        extras = sorted(drives - expected)
        for d in lacks:
            like = [s for s in others if d in group[s]]
            problems.append(f"drive {d}: missing")
            fixes.append(f"map the LUN as {d}: like {_names(like)}")
        for d in extras:
            lacking = [s for s in others if d not in group[s]]
            problems.append(f"drive {d}: is not on {_names(lacking)}")
            if len(lacks) == len(extras) == 1:
                fixes.append(f"map that LUN as {lacks[0]}: instead of {d}: (the letter the others use)")
            else:
                fixes.append(f"map {d}: on {_names(lacking)} too, or map the LUN to a letter the group uses "
                             f"({_drives(expected)})")
        if problems:
            out.append(Finding(server, Requirement.drive_letters, "fail", "; ".join(problems), "; ".join(fixes)))
        elif drives:
            out.append(Finding(server, Requirement.drive_letters, "ok", f"drives {_drives(drives)} as on the others"))
    return out


def check_failover_mode(server: ServerInfo) -> Finding:
    if server.san_failover_mode:
        return Finding(server.name, Requirement.san_failover_mode, "ok", "SAN failover mode is on")
    return Finding(server.name, Requirement.san_failover_mode, "fail", "SAN failover mode is off",
                   f"tick 'SAN Failover mode: Copy files to owner server' on {server.name} "
                   "(san_failover_mode: true in the farm file, then `farmkeeper apply`)")


# --- requirement (4) and the extras, over SMB ----------------------------------------------------------

@dataclass
class ShareProbe:
    """What one probe of one share found."""

    server: str
    drive: str
    share: str
    username: str
    status: Literal["ok", "auth", "missing", "unreachable", "read", "write", "error"] = "ok"
    message: str = ""
    space: Space | None = None
    space_error: str = ""
    skew_s: float | None = None
    leftover: str | None = None      # probe file that could not be deleted
    aliases: list[str] = field(default_factory=list)  # folders that are another folder by a second name
    large: list[tuple[str, int]] | None = None     # folders above FOLDER_LIMIT entries (None: not counted)
    folders_error: str = ""


def clock_skew(before: float, after: float, remote: float) -> float:
    """How far a server-set time lies outside the local window ``[before, after]`` (0 inside it)."""
    if remote < before:
        return before - remote
    if remote > after:
        return remote - after
    return 0.0


def large_folders(vol: Volume, limit: int = FOLDER_LIMIT, prefixes: Sequence[str] = ("video", "meta")
                  ) -> list[tuple[str, int]]:
    """Footage folders with more than ``limit`` entries (files and sub-folders), largest first."""
    files: dict[str, int] = {}
    children: dict[str, set[str]] = {}
    for prefix in prefixes:
        for folder, names in vol.list_files_by_dir(prefix):
            files[folder] = len(names)
            path = folder
            while "/" in path:
                parent = path.rsplit("/", 1)[0]
                children.setdefault(parent, set()).add(path)
                path = parent
    counts = {f: files.get(f, 0) + len(children.get(f, ())) for f in set(files) | set(children)}
    return sorted(((f, n) for f, n in counts.items() if n > limit), key=lambda fn: (-fn[1], fn[0]))


def probe_share(access: VolumeAccess, *, prefer: Prefer = "smb", clock: Callable[[], float] = time.time,
                folders: bool = False) -> ShareProbe:
    """Connect to the share, create, read back and delete a probe file at its root, read free space; with
    ``folders`` also count the entries of every footage folder (a full listing of ``video/`` and ``meta/``)."""
    res = ShareProbe(access.server, access.drive, access.share, access.username)
    secret = access.password

    here = f"\\\\{access.server}\\{access.share}: "

    def scrub(exc: BaseException) -> str:
        text = str(exc).removeprefix(here)
        return text.replace(secret, "***") if secret else text

    try:
        vol = open_volume(access, prefer=prefer)
    except StorageAuthError as exc:
        res.status, res.message = "auth", scrub(exc)
        return res
    except StorageNotFound as exc:
        res.status, res.message = "missing", scrub(exc)
        return res
    except (StorageUnavailable, OSError) as exc:
        res.status, res.message = "unreachable", scrub(exc)
        return res
    try:
        _probe_rw(vol, res, clock, scrub)
        try:
            res.space = vol.space()
        except (FarmkeeperError, OSError) as exc:
            res.space_error = scrub(exc)
        try:
            res.aliases = vol.find_aliases("", depth=3)   # down to video/<camera>/<stream>, meta/<camera>/<day>
        except (FarmkeeperError, OSError) as exc:
            log.warning("cannot look for aliases on %r: %s", vol, scrub(exc))
        if folders and res.status == "ok":
            try:
                res.large = large_folders(vol)
            except (FarmkeeperError, OSError) as exc:
                res.folders_error = scrub(exc)
    finally:
        vol.close()
    return res


def _probe_rw(vol: Volume, res: ShareProbe, clock: Callable[[], float], scrub: Callable[[BaseException], str]) -> None:
    name = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    data = b"farmkeeper SAN failover probe\n" + os.urandom(32)
    created = False
    try:
        before = clock()
        try:
            vol.write_bytes(name, data, durable=False)
            created = True
        except StorageError as exc:
            created = not isinstance(exc, (StoragePermission, StorageNotFound))
            res.status, res.message = "write", scrub(exc)
            try:
                vol.stat("")
            except (FarmkeeperError, OSError) as exc2:
                res.status, res.message = "read", f"{res.message}; cannot read the share either: {scrub(exc2)}"
            return
        after = clock()
        entry = vol.stat(name)
        if entry is not None:
            res.skew_s = clock_skew(before, after, entry.mtime)
        try:
            back = vol.read_bytes(name)
        except StorageError as exc:
            res.status, res.message = "read", scrub(exc)
            return
        if back != data:
            res.status, res.message = "read", f"probe file read back differs ({len(back)} of {len(data)} bytes)"
    except (FarmkeeperError, OSError) as exc:
        res.status, res.message = "error", scrub(exc)
    finally:
        if created:
            try:
                vol.remove(name)
            except (FarmkeeperError, OSError) as exc:
                res.leftover = name
                log.warning("cannot delete probe file %s on %r: %s", name, vol, scrub(exc))


def share_findings(server: ServerInfo, probes: Sequence[ShareProbe], *, skew_max_s: float,
                   password_error: str | None = None) -> list[Finding]:
    """Turn one server's share probes into findings: credentials, each share, free space, clock."""
    name = server.name
    user = server.smb_username or "(no user name)"
    cred_ref = (f"environment variable {server.smb_password_env}" if server.smb_password_env
                else f"Prefect Secret {server.smb_password_secret!r}" if server.smb_password_secret
                else "smb.password_env in the farm file")
    out: list[Finding] = []
    if password_error is not None:
        out.append(Finding(name, Requirement.credentials, "fail", f"no password for {user!r}: {password_error}",
                           f"set {cred_ref} for the farm's account"))
        for p in probes:
            out.append(Finding(name, Requirement.share, "skip", f"\\\\{name}\\{p.share}: not checked (no password)",
                               share=p.share))
        return out
    auth = [p for p in probes if p.status == "auth"]
    connected = [p for p in probes if p.status not in ("auth", "missing", "unreachable")]
    if auth:
        out.append(Finding(name, Requirement.credentials, "fail",
                           f"logon to {server.host} as {user!r} failed on "
                           f"{', '.join(_unc(name, p.share) for p in auth)} (wrong user name or password)",
                           f"check the password in {cred_ref} and that account {user!r} exists on {name} "
                           "with access to its DATA shares"))
    elif connected or any(p.status == "missing" for p in probes):
        out.append(Finding(name, Requirement.credentials, "ok", f"logon as {user!r} works"))
    else:
        out.append(Finding(name, Requirement.credentials, "skip", f"not checked: {name} is unreachable"))
    central = {a.drive.upper(): f"\\\\{a.host}\\{a.unc_share}" for a in server.volumes if a.unc_share}
    for p in probes:
        unc = central.get(p.drive.upper()) or f"\\\\{name}\\{p.share}"
        folder = f"{p.drive}:\\Data"
        fix = ""
        if p.status == "ok":
            msg = f"{unc} is shared, readable and writable as {user!r}"
        elif p.status == "auth":
            out.append(Finding(name, Requirement.share, "skip", f"{unc}: not checked (logon failed)", share=p.share))
            continue
        elif p.status == "missing":
            msg = f"{unc} is not shared: {p.message}"
            fix = (f"share {folder} of {name} as {p.share} with read and write permission for {user!r}"
                   if p.drive.upper() not in central else
                   f"check the central storage path {unc} (volume {p.drive}: of {name}) and that the NAS shares it")
        elif p.status == "unreachable":
            msg = f"{unc} cannot be reached: {p.message}"
            fix = f"check that {name} ({server.host}) is up and SMB port {server.smb_port} is reachable"
        elif p.status == "write":
            msg = f"{unc} is not writable as {user!r}: {p.message}"
            fix = (f"give {user!r} read and write permission on share {p.share} of {name} (share and folder "
                   "permissions; not read only)")
        elif p.status == "read":
            msg = f"{unc} is not readable as {user!r}: {p.message}"
            fix = f"give {user!r} read and write permission on share {p.share} of {name}"
        else:
            msg = f"{unc}: probe failed: {p.message}"
            fix = f"check share {p.share} of {name} and its volume {p.drive}:"
        if p.aliases:
            msg += f"; {len(p.aliases)} folder(s) are another folder by a second name, never walked: " + \
                "; ".join(a.removesuffix("; not walked (nothing under it is counted, copied or deleted)")
                          for a in p.aliases)
            fix = (fix + "; " if fix else "") + f"remove the link(s) on {p.share}: a footage folder must have one name"
        if p.leftover:
            msg += f"; probe file {p.leftover} could not be deleted"
            fix = (fix + "; " if fix else "") + f"delete {unc}\\{p.leftover}"
        out.append(Finding(name, Requirement.share, "ok" if not fix else "fail", msg, fix, p.share))
        if p.space is not None:
            sp = p.space
            out.append(Finding(name, Requirement.free_space, "ok" if sp.total > 0 else "fail",
                               f"{unc}: {human_size(sp.free)} free of {human_size(sp.total)} "
                               f"({sp.free_percent:.1f}%)",
                               "" if sp.total > 0 else f"check volume {p.drive}: of {name} (it reports no size)",
                               p.share))
        elif p.space_error:
            out.append(Finding(name, Requirement.free_space, "fail", f"{unc}: free space unreadable: {p.space_error}",
                               f"give {user!r} permission to query volume information on {p.share}", p.share))
        if p.large:
            shown = "; ".join(f"{folder} ({n} entries)" for folder, n in p.large[:5])
            out.append(Finding(name, Requirement.folders, "warn",
                               f"{unc}: {len(p.large)} footage folder(s) above {FOLDER_LIMIT} entries: {shown}"
                               + (" ..." if len(p.large) > 5 else ""),
                               "the seed advises no more than 5000 files per folder: shorter segments or fewer "
                               "streams per hour folder, or check for files that are not footage", p.share,
                               tuple(p.large)))
        elif p.large is not None:
            out.append(Finding(name, Requirement.folders, "ok", f"{unc}: every footage folder has at most "
                               f"{FOLDER_LIMIT} entries", share=p.share))
        elif p.folders_error:
            out.append(Finding(name, Requirement.folders, "skip", f"{unc}: folders not counted: {p.folders_error}",
                               share=p.share))
    skews = [p.skew_s for p in probes if p.skew_s is not None]
    if skews:
        skew = max(skews)
        if skew > skew_max_s:
            out.append(Finding(name, Requirement.clock, "fail",
                               f"clock differs from the control plane's by {skew:.1f} s (max {skew_max_s:g} s)",
                               f"synchronise {name}'s clock (NTP / w32time) with the farm's time source"))
        else:
            out.append(Finding(name, Requirement.clock, "ok", f"clock within {skew:.1f} s of the control plane"))
    else:
        out.append(Finding(name, Requirement.clock, "skip", "not checked: no probe file could be written"))
    return out


# --- the whole check ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerInfo:
    """What the check needs of one server, read from the inventory (no session needed afterwards)."""

    name: str
    host: str
    smb_port: int
    smb_username: str
    smb_password_env: str | None
    smb_password_secret: str | None
    san_failover_mode: bool
    volumes: tuple[VolumeAccess, ...]
    password_error: str | None = None

    @property
    def drives(self) -> set[str]:
        return {a.drive.upper() for a in self.volumes}


@dataclass(frozen=True)
class GroupSnapshot:
    """The redundancy group as read from the inventory, credentials resolved."""

    servers: tuple[ServerInfo, ...]
    clock_skew_max_s: float


def redundancy_group(session: Session, servers: Sequence[str] | None = None) -> list[Server]:
    """All servers with volumes, or the named ones (unknown names raise ``NotFoundError``)."""
    if servers:
        return [inventory.get_server(session, s) for s in sorted(set(servers))]
    with_volumes = {v.server_name for v in inventory.list_volumes(session)}
    return [s for s in inventory.list_servers(session) if s.name in with_volumes]


def load_group(session: Session, password_for: PasswordFor,
               servers: Sequence[str] | None = None) -> GroupSnapshot:
    """Read the redundancy group and resolve each server's password (a failure is kept, not raised)."""
    infos = []
    for s in redundancy_group(session, servers):
        error: str | None = None
        try:
            password = password_for(s)
        except (FarmkeeperError, KeyError, ValueError) as exc:
            error, password = str(exc), ""
        vols = tuple(volume_access(s, v, password) for v in inventory.list_volumes(session, s.name))
        infos.append(ServerInfo(s.name, s.host, s.smb_port, s.smb_username, s.smb_password_env,
                                s.smb_password_secret, s.san_failover_mode, vols, error))
    return GroupSnapshot(tuple(infos), inventory.farm_settings(session).clock_skew_max_s)


def check_group(group: GroupSnapshot, *, prefer: Prefer = "smb", probe: bool = True,
                workers: int = 16, folders: bool = False) -> ValidationReport:
    """Check a loaded group (no database access: the SMB probes hold no inventory lock).

    ``folders``: also report footage folders above ``FOLDER_LIMIT`` entries (a full listing of every
    volume: ``validate`` and ``validate-farm`` do it, the swap-back gate does not)."""
    report = ValidationReport(servers=[s.name for s in group.servers])
    by_server: dict[str, list[Finding]] = {s.name: [] for s in group.servers}
    for f in check_layout({s.name: s.drives for s in group.servers}):
        by_server[f.server].append(f)
    for s in group.servers:
        by_server[s.name].append(check_failover_mode(s))
    if probe:
        probes: dict[str, list[ShareProbe]] = {s.name: [] for s in group.servers}
        todo = [(s.name, a) for s in group.servers if s.password_error is None for a in s.volumes]
        if todo:
            with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo))),
                                    thread_name_prefix="fk-validate") as pool:
                futures = [(n, a, pool.submit(probe_share, a, prefer=prefer, folders=folders)) for n, a in todo]
                for n, a, fut in futures:
                    try:
                        probes[n].append(fut.result())
                    except Exception as exc:  # one server's surprise is reported for it; the others still validate
                        text = f"unexpected {type(exc).__name__}: {exc}"
                        text = text.replace(a.password, "***") if a.password else text
                        log.error("probing %s of %s failed: %s", a.share, n, text)
                        probes[n].append(ShareProbe(n, a.drive, a.share, a.username, "error", text))
        for s in group.servers:
            if s.password_error is not None:
                probes[s.name] = [ShareProbe(s.name, a.drive, a.share, a.username, "auth") for a in s.volumes]
            by_server[s.name] += share_findings(s, probes[s.name], skew_max_s=group.clock_skew_max_s,
                                                password_error=s.password_error)
    for s in group.servers:
        report.findings += by_server[s.name]
    return report


def validate_farm(session: Session, password_for: PasswordFor, servers: Sequence[str] | None = None, *,
                  prefer: Prefer = "smb", probe: bool = True, workers: int = 16) -> ValidationReport:
    """Check the SAN failover requirements of the redundancy group (all servers with volumes, or ``servers``).

    The gate before a swap-back: ``validate_farm(session, password_for, [home, source]).ok``. The share
    checks go over SMB (``prefer='smb'``) even when a volume has a local path. Nothing is written to the
    inventory (see ``record_findings``). The SMB probes run while ``session``'s transaction is open; on
    SQLite, which locks the whole database, prefer ``check_group(load_group(...))`` with a short session.
    """
    return check_group(load_group(session, password_for, servers), prefer=prefer, probe=probe, workers=workers)


def record_findings(session: Session, report: ValidationReport, now: datetime | None = None) -> list[Finding]:
    """Store the last result per (server, requirement); returns (and sets on the report) the new failures.

    A failure is new when the last stored result of that (server, requirement) was ok or absent;
    skipped checks leave the stored result as it was.
    """
    now = now or report.checked_at
    new: list[Finding] = []
    resolved: list[Finding] = []
    for f in report.findings:
        if f.status == "skip":
            continue
        row = session.get(ValidationFinding, (f.server, f.key))
        failed = f.status == "fail"
        if failed and (row is None or row.ok):
            new.append(f)
        if not failed and row is not None and not row.ok:
            resolved.append(f)
        if row is None:
            row = ValidationFinding(server=f.server, requirement=f.key, ok=not failed, message=f.message,
                                    fix=f.fix, at=now)
        else:
            row.ok, row.message, row.fix, row.at = not failed, f.message, f.fix, now
        session.add(row)
    session.flush()
    report.new_failures, report.resolved = new, resolved
    return new

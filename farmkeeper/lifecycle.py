"""Farm lifecycle checks of ``farmkeeper apply``: adding a server to a SAN farm, removing a server.

Run after the farm file parsed and before anything is saved (``preflight_apply``):

* **A new server** joining a farm that uses SAN failover (some server, old or new, has
  ``san_failover_mode``) is validated together with the farm's redundancy group (the seed's four
  requirements, over SMB): what the new server lacks (LUN count, drive letters, shares, the flag,
  credentials) is reported; the apply refuses such a server unless forced. The first apply of a farm
  (an empty inventory) validates nothing here: that is ``farmkeeper validate``'s job.
* **A removed server** must not hold footage of any camera: each of its volumes is read through the
  storage layer and any file under ``video/`` or ``meta/`` refuses the removal, naming the cameras and
  the command that moves their footage first. A volume that cannot be read refuses too (``--force``
  accepts losing track of it, e.g. for a dead server). Cameras still recording or at home there, and
  the last redundant server, are refused by ``inventory.check_server_removal`` during the apply itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal

from sqlmodel import Session

from farmkeeper import inventory
from farmkeeper.errors import FarmkeeperError
from farmkeeper.farmfile import FarmFile, apply_farm_file
from farmkeeper.layout import META, VIDEO
from farmkeeper.storage import open_volume
from farmkeeper.validation import GroupSnapshot, ValidationReport, check_group, load_group
from farmkeeper.volumes import PasswordFor, ServerVolume, server_volumes

log = logging.getLogger(__name__)

SessionFactory = Callable[[], AbstractContextManager[Session]]
Prefer = Literal["auto", "local", "smb"]


@dataclass
class FootageFound:
    """Footage left on one volume of a server to be removed: files per camera (``video/`` and ``meta/``)."""

    label: str
    cameras: dict[str, int] = field(default_factory=dict)


@dataclass
class ApplyCheck:
    new_servers: list[str] = field(default_factory=list)
    removed_servers: list[str] = field(default_factory=list)
    validation: ValidationReport | None = None
    footage: dict[str, list[FootageFound]] = field(default_factory=dict)   # server -> volumes with footage
    unreadable: dict[str, str] = field(default_factory=dict)               # server -> why its volumes were not read

    def new_server_failures(self) -> list[str]:
        if self.validation is None:
            return []
        return [f.text() for f in self.validation.failures if f.server in self.new_servers]

    def other_failures(self) -> list[str]:
        if self.validation is None:
            return []
        return [f.text() for f in self.validation.failures if f.server not in self.new_servers]

    def footage_problems(self) -> list[str]:
        out = []
        for server, found in sorted(self.footage.items()):
            cams = sorted({c for f in found for c in f.cameras})
            where = "; ".join(f"{f.label}: " + ", ".join(f"{c} ({n} files)" for c, n in sorted(f.cameras.items()))
                              for f in found)
            out.append(f"server {server} still holds footage ({where}): move it first, e.g. "
                       f"`farmkeeper move {' '.join(cams)} --to <server recording them> --footage move` "
                       "(copies it off, verified), then apply again")
        return out

    def unreadable_problems(self) -> list[str]:
        return [f"server {s}: cannot check it for footage ({why}); bring it back and apply again, or apply with "
                "--force to remove it without checking (its footage is then no longer tracked)"
                for s, why in sorted(self.unreadable.items())]

    def refusals(self, *, force: bool) -> list[str]:
        """Why the apply is refused (empty: go ahead). Footage found is refused even with ``force``."""
        out = self.footage_problems()
        if not force:
            out += self.new_server_failures() + self.unreadable_problems()
        return out


def wants_validation(session: Session, spec: FarmFile, new: Sequence[str]) -> bool:
    """New servers are validated when they join an existing farm that uses (or starts using) SAN failover."""
    existing = list(inventory.list_servers(session))
    if not new or not existing:
        return False
    return any(s.san_failover_mode for s in existing) or any(
        s.san_failover_mode for s in spec.servers if s.name in new)


def find_footage(volume: ServerVolume, *, prefer: Prefer = "auto") -> FootageFound:
    """Every file under ``video/`` and ``meta/`` of one volume, counted per camera folder."""
    found = FootageFound(volume.label)
    with open_volume(volume.access, prefer=prefer) as vol:
        for top in (VIDEO, META):
            for folder, names in vol.list_files_by_dir(top):
                if names:
                    parts = folder.split("/")
                    cam = parts[1] if len(parts) > 1 else f"({top}/)"
                    found.cameras[cam] = found.cameras.get(cam, 0) + len(names)
    return found


def preflight_apply(sessions: SessionFactory, spec: FarmFile, password_for: PasswordFor, *,
                    prefer: Prefer = "auto", validate_prefer: Prefer = "smb", probe: bool = True) -> ApplyCheck:
    """What ``apply`` would add and remove, validated and checked for footage; saves nothing.

    Raises what the apply itself would raise (``InventoryError`` from ``check_server_removal``: a removed
    server still records cameras or is the last redundant one) before any storage is read.
    """
    check = ApplyCheck()
    group: GroupSnapshot | None = None
    removed_volumes: list[ServerVolume] = []
    with sessions() as session:
        existing = {s.name for s in inventory.list_servers(session)}
        wanted = [s.name for s in spec.servers]
        check.new_servers = [n for n in wanted if n not in existing]
        check.removed_servers = sorted(existing - set(wanted))
        if not check.new_servers and not check.removed_servers:
            return check
        validate = wants_validation(session, spec, check.new_servers)
        for server in check.removed_servers:
            try:
                removed_volumes += server_volumes(session, password_for, servers=[server])
            except FarmkeeperError as exc:
                check.unreadable[server] = str(exc)
        try:
            apply_farm_file(session, spec)      # raises the apply's own refusals; rolled back below
            if validate:
                group = load_group(session, password_for)
        finally:
            session.rollback()
    for sv in removed_volumes:
        if sv.server in check.unreadable:
            continue
        try:
            found = find_footage(sv, prefer=prefer)
        except (FarmkeeperError, OSError) as exc:
            check.unreadable[sv.server] = f"{sv.label}: {exc}"
            continue
        if found.cameras:
            check.footage.setdefault(sv.server, []).append(found)
    if group is not None:
        check.validation = check_group(group, prefer=validate_prefer, probe=probe)
    return check

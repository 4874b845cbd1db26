"""From the inventory to storage: the ``VolumeAccess`` of each server volume, credentials resolved by the caller."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlmodel import Session, col, select

from farmkeeper import inventory
from farmkeeper.models import Server, Volume
from farmkeeper.storage.base import VolumeAccess

PasswordFor = Callable[[Server], str]


@dataclass(frozen=True)
class ServerVolume:
    """One volume of one server, as the flows see it."""

    server: str
    drive: str
    access: VolumeAccess
    capacity_bytes: int | None = None
    unc: str | None = None                 # central storage (NAS) this volume is

    @property
    def share(self) -> str:
        return self.access.share

    @property
    def label(self) -> str:
        if self.unc:
            return f"{self.unc} ({self.drive}: of {self.server})"
        return f"\\\\{self.server}\\{self.share}"

    @property
    def storage(self) -> str:
        """What this volume stores on: the same key is the same storage (``unc:`` for central storage)."""
        return storage_key(self.server, self.drive, self.unc)


def storage_key(server: str, drive: str, unc: str | None) -> str:
    """``unc:\\\\nas01\\cctv`` (case-insensitive) for central storage, else ``server:drive``."""
    return f"unc:{unc.lower()}" if unc else f"{server}:{drive.upper()}"


def parse_unc(unc: str) -> tuple[str, str]:
    """``\\\\host\\share`` → (host, share); raises ``ValueError`` saying what a central storage path looks like."""
    text = unc.strip().replace("/", "\\")
    parts = text[2:].split("\\") if text.startswith("\\\\") else []
    if len(parts) != 2 or not all(parts) or any(c in parts[1] for c in '<>:"|?*'):
        raise ValueError(f"not a central storage share '{unc}': give \\\\host\\share (e.g. '\\\\nas01\\cctv'; "
                         "footage goes under its video\\ and meta\\ folders)")
    return parts[0], parts[1]


def normalize_unc(unc: str) -> str:
    host, share = parse_unc(unc)
    return f"\\\\{host}\\{share}"


def not_on_storage_of(sources: Sequence[ServerVolume], targets: Sequence[ServerVolume]
                      ) -> tuple[list[ServerVolume], list[ServerVolume]]:
    """Split source volumes into those to copy from and those that are the same storage as a target volume
    (central storage both list): footage is never copied onto the storage it comes from."""
    same = {t.storage for t in targets}
    keep = [s for s in sources if s.storage not in same]
    return keep, [s for s in sources if s.storage in same]


def volume_access(server: Server, volume: Volume, password: str, *,
                  require_signing: bool | None = None) -> VolumeAccess:
    """How to reach ``volume``: the server's ``DATAX`` share, or for central storage the NAS share (``unc``)
    with the server's account (every server listing it must be able to use it)."""
    host, share = parse_unc(volume.unc) if volume.unc else (server.host, None)
    return VolumeAccess(
        server=server.name, drive=volume.drive, host=host, port=server.smb_port,
        username=server.smb_username, password=password, local_path=volume.path,
        require_signing=server.smb_signing if require_signing is None else require_signing and server.smb_signing,
        unc_share=share,
    )


def server_volumes(session: Session, password_for: PasswordFor, *, servers: Sequence[str] | None = None,
                   require_signing: bool | None = None) -> list[ServerVolume]:
    """Every volume of the named servers (all servers when ``None``), each with its access."""
    out: list[ServerVolume] = []
    passwords: dict[str, str] = {}
    wanted = None if servers is None else set(servers)
    query = select(Volume).order_by(Volume.server_name, Volume.drive)
    if wanted is not None:           # callers asking for one server read its volumes, not the whole farm's
        query = query.where(col(Volume.server_name).in_(sorted(wanted)))
    by_server: dict[str, list[Volume]] = {}
    for volume in session.exec(query):          # one query, not one per server (every sweep, twice)
        by_server.setdefault(volume.server_name, []).append(volume)
    for server in inventory.list_servers(session):
        if wanted is not None and server.name not in wanted:
            continue
        for volume in by_server.get(server.name, ()):
            if server.name not in passwords:
                passwords[server.name] = password_for(server)
            out.append(ServerVolume(server.name, volume.drive,
                                    volume_access(server, volume, passwords[server.name],
                                                  require_signing=require_signing),
                                    volume.capacity_bytes, volume.unc))
    return out

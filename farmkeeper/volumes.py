"""From the inventory to storage: the ``VolumeAccess`` of each server volume, credentials resolved by the caller."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlmodel import Session

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

    @property
    def share(self) -> str:
        return self.access.share

    @property
    def label(self) -> str:
        return f"\\\\{self.server}\\{self.share}"


def volume_access(server: Server, volume: Volume, password: str, *,
                  require_signing: bool | None = None) -> VolumeAccess:
    return VolumeAccess(
        server=server.name, drive=volume.drive, host=server.host, port=server.smb_port,
        username=server.smb_username, password=password, local_path=volume.path,
        require_signing=server.smb_signing if require_signing is None else require_signing and server.smb_signing,
    )


def server_volumes(session: Session, password_for: PasswordFor, *, servers: Sequence[str] | None = None,
                   require_signing: bool | None = None) -> list[ServerVolume]:
    """Every volume of the named servers (all servers when ``None``), each with its access."""
    out: list[ServerVolume] = []
    passwords: dict[str, str] = {}
    for server in inventory.list_servers(session):
        if servers is not None and server.name not in servers:
            continue
        for volume in inventory.list_volumes(session, server.name):
            if server.name not in passwords:
                passwords[server.name] = password_for(server)
            out.append(ServerVolume(server.name, volume.drive,
                                    volume_access(server, volume, passwords[server.name],
                                                  require_signing=require_signing),
                                    volume.capacity_bytes))
    return out

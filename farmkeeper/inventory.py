"""Plain CRUD over the inventory; every function takes the session from its caller."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from farmkeeper.errors import InventoryError, NotFoundError
from farmkeeper.models import (
    Camera,
    CopyJob,
    CopyJobState,
    FarmSettings,
    Hold,
    OwnershipChange,
    Server,
    ServerEvent,
    StorageSettings,
    Volume,
    utcnow,
)


def farm_settings(session: Session) -> FarmSettings:
    return session.get(FarmSettings, 1) or FarmSettings(id=1)


def storage_settings(session: Session) -> StorageSettings:
    return session.get(StorageSettings, 1) or StorageSettings(id=1)


def list_servers(session: Session) -> Sequence[Server]:
    return session.exec(select(Server).order_by(Server.name)).all()


def lock_servers(session: Session) -> list[Server]:
    """Every server row, locked for this transaction in name order (writers of the master, failovers).

    ``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite transactions are already serialised (BEGIN IMMEDIATE).
    The rows are re-read (``populate_existing``) so the caller decides on what it locked.
    """
    return list(session.exec(select(Server).order_by(Server.name).with_for_update()
                             .execution_options(populate_existing=True)).all())


def get_server(session: Session, name: str, *, for_update: bool = False) -> Server:
    query = select(Server).where(Server.name == name)
    if for_update:
        query = query.with_for_update()
    server = session.exec(query).first()
    if server is None:
        raise NotFoundError(f"unknown server {name!r}")
    return server


def list_cameras(session: Session, *, current: str | None = None, home: str | None = None) -> Sequence[Camera]:
    query = select(Camera).order_by(Camera.id)
    if current is not None:
        query = query.where(Camera.current == current)
    if home is not None:
        query = query.where(Camera.home == home)
    return session.exec(query).all()


def get_camera(session: Session, camera_id: str, *, for_update: bool = False) -> Camera:
    query = select(Camera).where(Camera.id == camera_id)
    if for_update:
        query = query.with_for_update()
    camera = session.exec(query).first()
    if camera is None:
        raise NotFoundError(f"unknown camera {camera_id!r}")
    return camera


def list_volumes(session: Session, server: str | None = None) -> Sequence[Volume]:
    query = select(Volume).order_by(Volume.server_name, Volume.drive)
    if server is not None:
        query = query.where(Volume.server_name == server)
    return session.exec(query).all()


def camera_counts(session: Session) -> Counter[str]:
    return Counter(cam.current for cam in session.exec(select(Camera)) if cam.current)


def record_server_event(session: Session, server: str, kind: str, **detail: Any) -> ServerEvent:
    event = ServerEvent(server=server, at=utcnow(), kind=kind, detail=detail)
    session.add(event)
    return event


def pin_camera(session: Session, camera_id: str, server: str | None) -> Camera:
    """Pin a camera's home to ``server`` (``None`` unpins); the home follows at once."""
    camera = get_camera(session, camera_id, for_update=True)
    if server is not None:
        get_server(session, server)
        if camera.home != server:
            session.add(OwnershipChange(camera_id=camera.id, at=utcnow(), from_server=camera.home, to_server=server,
                                        reason="operator pin"))
        camera.home = server
    camera.pinned_home = server
    camera.pin_reason = None
    camera.version += 1
    return camera


def check_server_removal(session: Session, server: Server) -> None:
    """Refuse to remove a server that records cameras, is a camera's home, or is the last redundant one."""
    recording = [c.id for c in list_cameras(session, current=server.name)]
    homed = [c.id for c in list_cameras(session, home=server.name)]
    if recording or homed:
        ids = sorted(set(recording) | set(homed))
        raise InventoryError(f"server {server.name} still has cameras ({', '.join(ids[:10])}"
                             f"{'...' if len(ids) > 10 else ''}): move them first with `farmkeeper move ... --to`")
    redundant = [s for s in list_servers(session) if s.role == "redundant"]
    if server.role == "redundant" and len(redundant) == 1 and len(list_servers(session)) > 1:
        raise InventoryError(f"server {server.name} is the only redundant server: add another one first")


def add_hold(session: Session, camera_id: str, start: datetime, end: datetime, reason: str) -> Hold:
    get_camera(session, camera_id)
    if end <= start:
        raise InventoryError(f"hold on {camera_id}: --to {end.isoformat()} is not after --from {start.isoformat()}")
    if not reason.strip():
        raise InventoryError("a hold needs a reason")
    hold = Hold(camera_id=camera_id, start=start, end=end, reason=reason, created_at=utcnow())
    session.add(hold)
    session.flush()
    return hold


def list_holds(session: Session, camera_id: str | None = None) -> Sequence[Hold]:
    query = select(Hold).order_by(col(Hold.camera_id), col(Hold.start))
    if camera_id:
        query = query.where(Hold.camera_id == camera_id)
    return session.exec(query).all()


def remove_hold(session: Session, hold_id: int) -> None:
    hold = session.get(Hold, hold_id)
    if hold is None:
        raise NotFoundError(f"no hold with id {hold_id}")
    session.delete(hold)


def running_copy_jobs(session: Session) -> Sequence[CopyJob]:
    return session.exec(select(CopyJob).where(col(CopyJob.state).in_([CopyJobState.planned, CopyJobState.running]))
                        .order_by(col(CopyJob.id))).all()


def resolve_password(server: Server, secret_loader: Any = None) -> str:
    """The SMB password behind the server's credential reference (env var, or a secret via ``secret_loader``)."""
    if server.smb_password_env:
        value = os.environ.get(server.smb_password_env)
        if value is None:
            raise InventoryError(f"server {server.name}: environment variable {server.smb_password_env} "
                                 "(smb.password_env) is not set")
        return value
    if server.smb_password_secret:
        if secret_loader is None:
            raise InventoryError(f"server {server.name}: password is in Prefect Secret "
                                 f"{server.smb_password_secret!r}; run through a flow to read it")
        return str(secret_loader(server.smb_password_secret))
    return ""

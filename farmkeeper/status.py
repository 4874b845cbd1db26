"""What ``farmkeeper status`` shows: servers, cameras and running copy jobs, as plain data."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from farmkeeper import inventory
from farmkeeper.notify import redact_target


def farm_status(session: Session) -> dict[str, Any]:
    """``{"servers": [...], "cameras": [...], "copy_jobs": [...]}`` with at least DESIGN.md's keys."""
    counts = inventory.camera_counts(session)
    servers = [
        {
            "name": s.name, "state": s.state.value, "role": s.role.value, "master": s.master,
            "cameras": counts.get(s.name, 0), "host": s.host, "maintenance": s.maintenance,
            "san_failover_mode": s.san_failover_mode,
            "last_seen": s.last_seen.isoformat() if s.last_seen else None,
        }
        for s in inventory.list_servers(session)
    ]
    cameras = [
        {
            "id": c.id, "home": c.home, "current": c.current, "movable": c.movable, "state": c.state.value,
            "name": c.name, "streams": c.streams, "pinned_home": c.pinned_home,
        }
        for c in inventory.list_cameras(session)
    ]
    jobs = [
        {
            "id": j.id, "kind": j.kind, "state": j.state.value, "cameras": list(j.cameras), "target": j.target,
            "files_total": j.files_total, "files_done": j.files_done, "bytes_total": j.bytes_total,
            "bytes_done": j.bytes_done, "updated_at": j.updated_at.isoformat(),
        }
        for j in inventory.running_copy_jobs(session)
    ]
    farm = inventory.farm_settings(session)
    return {"farm": farm.name, "swept_at": swept_at(session), "servers": servers, "cameras": cameras,
            "copy_jobs": jobs, "notify": [redact_target(entry) for entry in farm.notify]}


def swept_at(session: Session) -> str | None:
    """When a health sweep last probed the farm (ISO 8601, UTC), None if never: an old value means nobody watches."""
    from sqlmodel import col, select

    from farmkeeper.models import Server

    last = session.exec(select(Server.probed_at).where(col(Server.probed_at).is_not(None))
                        .order_by(col(Server.probed_at).desc()).limit(1)).first()
    return last.isoformat() if last is not None else None

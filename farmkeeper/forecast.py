"""Storage forecast per camera and volume, from what the last retention sweep saw (``retention_camera``).

For each volume, the footage it can keep is ``footage bytes + free - the floors' reserve``; the floors
delete oldest first across cameras, so every camera keeps the same number of days ``D`` unless its age
rule caps it earlier (water filling: ``sum(min(rule_i, D) * rate_i) = usable``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from farmkeeper import inventory
from farmkeeper.models import RetentionCamera, RetentionVolume, utcnow

DAY = 86400.0
MIN_SPAN_DAYS = 1 / 24


def days_at_capacity(usable: float, rates: list[float], caps: list[float | None]) -> float:
    """The ``D`` with ``sum(min(cap_i, D) * rate_i) == usable`` (``inf`` when every camera is capped)."""
    if usable <= 0:
        return 0.0
    items = sorted((math.inf if c is None else float(c), r) for r, c in zip(rates, caps, strict=True) if r > 0)
    free_rate = sum(r for _, r in items)
    used = 0.0
    for cap, rate in items:
        days = (usable - used) / free_rate
        if days <= cap:
            return days
        used += cap * rate       # this camera stops at its rule; the others share what is left
        free_rate -= rate
        if free_rate <= 0:
            break
    return math.inf


def storage_forecast(session: Session) -> list[dict[str, Any]]:
    """One row per camera and volume: camera, server, drive, held_days, rule_days, bytes_per_day, lasts_days."""
    storage = inventory.storage_settings(session)
    volumes = {(v.server, v.drive): v for v in session.exec(select(RetentionVolume))}
    rows = list(session.exec(select(RetentionCamera)))
    now = utcnow()
    by_volume: dict[tuple[str, str], list[RetentionCamera]] = defaultdict(list)
    for row in rows:
        by_volume[(row.server, row.drive)].append(row)
    out: list[dict[str, Any]] = []
    for key, cams in sorted(by_volume.items()):
        vol = volumes.get(key)
        rates = [_rate(c) for c in cams]
        lasts: float | None = None
        if vol is not None and vol.total_bytes is not None and vol.free_bytes is not None:
            reserve = max(storage.min_free_bytes, math.ceil(storage.min_free_percent / 100 * vol.total_bytes))
            usable = sum(c.video_bytes + c.meta_bytes for c in cams) + vol.free_bytes - reserve
            lasts = days_at_capacity(usable, rates, [c.rule_days for c in cams])
        for cam, rate in zip(cams, rates, strict=True):
            out.append({
                "camera": cam.camera_id, "server": cam.server, "drive": cam.drive,
                "held_days": _round(_held(cam, now)), "rule_days": cam.rule_days,
                "bytes_per_day": int(rate),
                "lasts_days": _round(_lasts(lasts, cam.rule_days, rate)),
                "shortfall": cam.shortfall,
            })
    out.sort(key=lambda r: (r["camera"], r["server"], r["drive"]))
    return out


def storage_summary(session: Session) -> list[dict[str, Any]]:
    """The seed's Storage Summary, one row per volume, from the last retention sweep of each volume.

    ``total``/``free`` (bytes, as the last sweep saw them), the floors (``min_free``, ``min_free_percent`` and
    the bytes they reserve on this volume), the oldest footage and the days it holds, against the days
    configured (the longest age rule of the cameras found there; ``None`` without ``limit_storage_days``).
    """
    from farmkeeper.floors import floor_bytes

    storage = inventory.storage_settings(session)
    swept = {(v.server, v.drive): v for v in session.exec(select(RetentionVolume))}
    cams: dict[tuple[str, str], list[RetentionCamera]] = defaultdict(list)
    for row in session.exec(select(RetentionCamera)):
        cams[(row.server, row.drive)].append(row)
    now = utcnow()
    out = []
    for vol in inventory.list_volumes(session):
        key = (vol.server_name, vol.drive)
        state = swept.get(key)
        total = state.total_bytes if state else None
        oldest = min((c.oldest_video_at for c in cams[key] if c.oldest_video_at is not None), default=None)
        rules = [c.rule_days for c in cams[key] if c.rule_days is not None]
        configured = max(rules) if rules else (storage.default_max_storage_days if storage.limit_storage_days
                                               else None)
        floor = floor_bytes(total, storage) if total is not None else None
        free = state.free_bytes if state else None
        out.append({
            "server": vol.server_name, "drive": vol.drive, "unc": vol.unc,
            "total_bytes": total, "free_bytes": free,
            "free_percent": round(100 * free / total, 1) if free is not None and total else None,
            "min_free_bytes": storage.min_free_bytes, "min_free_percent": storage.min_free_percent,
            "floor_bytes": floor, "below_floor": free is not None and bool(floor) and free < (floor or 0),
            "footage_files": state.footage_files if state else None,
            "footage_bytes": state.footage_bytes if state else None,
            "oldest_footage": oldest.isoformat() if oldest else None,
            "days_held": _round(max(0.0, (now - oldest).total_seconds() / DAY)) if oldest else None,
            "days_configured": configured,
            "swept_at": state.swept_at.isoformat() if state and state.swept_at else None,
        })
    return out


def _rate(cam: RetentionCamera) -> float:
    if cam.oldest_video_at is None or cam.newest_video_at is None:
        return 0.0
    span = max((cam.newest_video_at - cam.oldest_video_at).total_seconds() / DAY, MIN_SPAN_DAYS)
    return (cam.video_bytes + cam.meta_bytes) / span


def _held(cam: RetentionCamera, now: datetime) -> float | None:
    if cam.oldest_video_at is None:
        return None
    return max(0.0, (now - cam.oldest_video_at).total_seconds() / DAY)


def _lasts(days: float | None, rule: int | None, rate: float) -> float | None:
    if days is None or rate <= 0:
        return None
    value = min(days, float(rule)) if rule is not None else days
    return None if math.isinf(value) else value


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)

"""Prometheus metrics of the farm, read from the inventory at scrape time.

Flow runs execute in other processes (and, scaled out, on other machines) than ``farmkeeper serve``, so
no metric lives in process memory: gauges are read from the inventory when Prometheus scrapes
(``FarmCollector``), counters are counted from inventory tables (failover events, the deletion audit)
or kept in ``metric_counter`` rows that every process adds to (``record_sweep``: the health sweep
duration histogram). The numbers are therefore the same whichever process serves them.

Names follow Prometheus conventions: ``farmkeeper_`` prefix, base units (``_seconds``, ``_bytes``),
``_total`` on counters, labels for dimensions.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlmodel import Session

from farmkeeper.farmview import read_farm_view
from farmkeeper.models import (
    CameraState,
    DeletionAudit,
    FailoverEvent,
    MetricCounter,
    Role,
    ServerState,
    utcnow,
)

logger = logging.getLogger(__name__)

SWEEP_HISTOGRAM = "health_sweep_duration_seconds"
SWEEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
NOT_RETENTION = ("source_copied",)   # audited deletes of swap-back/move sources are not retention


def _bucket_label(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def add_counters(session: Session, increments: Mapping[tuple[str, str], float], now: datetime | None = None) -> None:
    """Add to ``metric_counter`` rows in one statement (created at 0 when missing); safe from many processes."""
    if not increments:
        return
    now = now or utcnow()
    table = MetricCounter.__table__  # type: ignore[attr-defined]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table)
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table)
    else:  # pragma: no cover - the inventory runs on SQLite or PostgreSQL
        raise NotImplementedError(f"metric counters on {dialect}")
    stmt = stmt.values([{"name": n, "label": label, "value": v, "updated_at": now}
                        for (n, label), v in sorted(increments.items())])
    stmt = stmt.on_conflict_do_update(index_elements=["name", "label"],
                                      set_={"value": table.c.value + stmt.excluded.value,
                                            "updated_at": stmt.excluded.updated_at})
    session.execute(stmt)


def record_sweep(session: Session, seconds: float, now: datetime | None = None) -> None:
    """Count one health sweep of ``seconds`` in the duration histogram (cumulative buckets, sum, count)."""
    increments = {(SWEEP_HISTOGRAM, _bucket_label(b)): 1.0 if seconds <= b else 0.0
                  for b in (*SWEEP_BUCKETS, math.inf)}
    increments[(SWEEP_HISTOGRAM, "sum")] = max(0.0, seconds)
    increments[(SWEEP_HISTOGRAM, "count")] = 1.0
    add_counters(session, increments, now)


def read_counters(session: Session, name: str) -> dict[str, float]:
    table = MetricCounter.__table__  # type: ignore[attr-defined]
    rows = session.execute(sa.select(table.c.label, table.c.value).where(table.c.name == name))
    return {label: float(value) for label, value in rows}


class _AuditTotals:
    """Files and bytes deleted per (server, drive, rule), counted from the deletion audit incrementally.

    Rows are append-only; a ``pending`` row (written before its delete) is counted once it says
    ``deleted``. Each scrape reads only rows newer than the last one seen, plus the pending ones.
    """

    def __init__(self) -> None:
        self.last_id = 0
        self.pending: set[int] = set()
        self.files: dict[tuple[str, str, str], int] = {}
        self.bytes: dict[tuple[str, str, str], int] = {}

    def update(self, session: Session) -> None:
        t = DeletionAudit.__table__.c  # type: ignore[attr-defined]
        cols = (t.id, t.server, t.drive, t.rule, t.size, t.outcome)
        rows = list(session.execute(sa.select(*cols).where(t.id > self.last_id).order_by(t.id)))
        if self.pending:
            rows += list(session.execute(sa.select(*cols).where(t.id.in_(sorted(self.pending)))))
            self.pending.clear()
        for row_id, server, drive, rule, size, outcome in rows:
            self.last_id = max(self.last_id, row_id)
            if outcome == "pending":
                self.pending.add(row_id)
            elif outcome == "deleted" and rule not in NOT_RETENTION:
                key = (server, drive, rule)
                self.files[key] = self.files.get(key, 0) + 1
                self.bytes[key] = self.bytes.get(key, 0) + int(size or 0)


class FarmCollector(Collector):
    """Every ``farmkeeper_*`` metric, read from the inventory at scrape time.

    ``sessions`` opens a session on the inventory. When the inventory cannot be read the scrape still
    answers, with ``farmkeeper_inventory_up 0`` and nothing else.
    """

    def __init__(self, sessions: Callable[[], Any]) -> None:
        self._sessions = sessions
        self._audit = _AuditTotals()
        self._lock = threading.Lock()

    def describe(self) -> Iterator[Metric]:
        return iter(())   # no describe-time inventory read (registration must not need the database)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            try:
                metrics = self._read()
            except Exception as exc:  # noqa: BLE001 - a scrape never fails; it says the inventory is down
                logger.warning("metrics: inventory not readable: %s: %s", type(exc).__name__, exc)
                metrics = []
                up = 0.0
            else:
                up = 1.0
        yield GaugeMetricFamily("farmkeeper_inventory_up", "1 when the inventory could be read for this scrape",
                                value=up)
        yield from metrics

    def _read(self) -> list[Metric]:
        with self._sessions() as session:
            view = read_farm_view(session)
            failovers = session.execute(sa.select(sa.func.count()).select_from(FailoverEvent)).scalar_one()
            sweeps = read_counters(session, SWEEP_HISTOGRAM)
            self._audit.update(session)
        now = view.at
        out: list[Metric] = []

        servers = GaugeMetricFamily("farmkeeper_servers", "Servers by health state and role",
                                    labels=["state", "role"])
        by = {(st.value, r.value): 0 for st in ServerState for r in Role}
        for s in view.servers:
            by[(s.state, s.role)] = by.get((s.state, s.role), 0) + 1
        for (state, role), n in sorted(by.items()):
            servers.add_metric([state, role], n)
        up = GaugeMetricFamily("farmkeeper_server_up", "1 when the server answers its health probe, else 0",
                               labels=["server", "role"])
        master = GaugeMetricFamily("farmkeeper_server_master", "1 for the master server", labels=["server"])
        cams = GaugeMetricFamily("farmkeeper_server_cameras", "Cameras recording on the server now",
                                 labels=["server"])
        seen = GaugeMetricFamily("farmkeeper_server_last_seen_timestamp_seconds",
                                 "When the server last answered its probe (Unix time)", labels=["server"])
        for s in view.servers:
            up.add_metric([s.name, s.role], 1 if s.state == ServerState.up.value else 0)
            master.add_metric([s.name], 1 if s.master else 0)
            cams.add_metric([s.name], s.cameras)
            if s.last_seen is not None:
                seen.add_metric([s.name], s.last_seen.timestamp())
        out += [servers, up, master, cams, seen]

        cameras = GaugeMetricFamily("farmkeeper_cameras", "Cameras by state", labels=["state"])
        states = {st.value: 0 for st in CameraState}
        for state, n in sorted((states | dict(view.cameras)).items()):
            cameras.add_metric([state], n)
        out.append(cameras)

        if view.last_sweep_at is not None:
            out.append(GaugeMetricFamily("farmkeeper_health_sweep_last_timestamp_seconds",
                                         "When the last health sweep probed the servers (Unix time)",
                                         value=view.last_sweep_at.timestamp()))
            out.append(GaugeMetricFamily("farmkeeper_health_sweep_age_seconds", "Seconds since the last health sweep",
                                         value=max(0.0, (now - view.last_sweep_at).total_seconds())))
        buckets = [(_bucket_label(b), sweeps.get(_bucket_label(b), 0.0)) for b in (*SWEEP_BUCKETS, math.inf)]
        out.append(HistogramMetricFamily("farmkeeper_health_sweep_duration_seconds",
                                         "Duration of health sweeps (probe, record, fail over), every process",
                                         buckets=buckets, sum_value=sweeps.get("sum", 0.0)))
        out.append(CounterMetricFamily("farmkeeper_failovers", "Cameras moved by failover (one per camera and "
                                       "outage)", value=failovers))

        free = GaugeMetricFamily("farmkeeper_volume_free_bytes", "Free space of the volume at the last retention "
                                 "sweep", labels=["server", "drive"])
        size = GaugeMetricFamily("farmkeeper_volume_size_bytes", "Size of the volume", labels=["server", "drive"])
        floor = GaugeMetricFamily("farmkeeper_volume_floor_bytes", "Free-space floor of the volume (min_free or "
                                  "min_free_percent, the larger)", labels=["server", "drive"])
        below = GaugeMetricFamily("farmkeeper_volume_below_floor", "1 when free space is under the floor",
                                  labels=["server", "drive"])
        oldest = GaugeMetricFamily("farmkeeper_volume_oldest_footage_age_seconds", "Age of the oldest video on the "
                                   "volume (last retention sweep)", labels=["server", "drive"])
        for v in view.volumes:
            labels = [v.server, v.drive]
            if v.free_bytes is not None:
                free.add_metric(labels, v.free_bytes)
                below.add_metric(labels, 1 if v.below_floor else 0)
            if v.total_bytes is not None:
                size.add_metric(labels, v.total_bytes)
            floor.add_metric(labels, v.floor_bytes)
            if v.oldest_at is not None:
                oldest.add_metric(labels, max(0.0, (now - v.oldest_at).total_seconds()))
        out += [free, size, floor, below, oldest]

        files = CounterMetricFamily("farmkeeper_retention_deleted_files", "Footage files deleted by retention",
                                    labels=["server", "drive", "rule"])
        nbytes = CounterMetricFamily("farmkeeper_retention_deleted_bytes", "Bytes of footage deleted by retention",
                                     labels=["server", "drive", "rule"])
        for key in sorted(self._audit.files):
            files.add_metric(list(key), self._audit.files[key])
            nbytes.add_metric(list(key), self._audit.bytes[key])
        out += [files, nbytes]

        running = GaugeMetricFamily("farmkeeper_copy_jobs_running", "Copy jobs (swap-back, move) running",
                                    value=len(view.jobs))
        done = GaugeMetricFamily("farmkeeper_copy_job_done_bytes", "Bytes copied so far by a running copy job",
                                 labels=["job", "kind", "target"])
        planned = GaugeMetricFamily("farmkeeper_copy_job_planned_bytes", "Bytes a running copy job has to copy",
                                    labels=["job", "kind", "target"])
        for j in view.jobs:
            labels = [str(j.id), j.kind, j.target]
            done.add_metric(labels, j.bytes_done)
            planned.add_metric(labels, j.bytes_total)
        out += [running, done, planned]
        return out


def start_metrics_server(port: int, sessions: Callable[[], Any], addr: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` on ``addr:port`` from a thread; returns the server (``.shutdown()`` stops it)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(FarmCollector(sessions))
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server

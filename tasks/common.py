"""What every task shares: tags that carry concurrency limits, the inventory session, notifications."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

from prefect import get_run_logger, task
from sqlmodel import Session

from farmkeeper import inventory
from farmkeeper.db import ensure_schema, get_engine, session_scope
from farmkeeper.models import Server
from farmkeeper.notify import notify, resolve_targets
from farmkeeper.settings import load_settings
from farmkeeper.volumes import ServerVolume, server_volumes


class Tag(StrEnum):
    """Task tags; tag concurrency limits keep file servers and the database from being flooded."""

    uses_smb = "uses-smb"
    uses_db = "uses-db"
    copies = "copies-footage"
    deletes = "deletes-footage"


@contextmanager
def inventory_session() -> Iterator[Session]:
    """One inventory transaction on the configured (and migrated) database."""
    with session_scope(ensure_schema(get_engine())) as session:
        yield session


def load_secret(name: str) -> str:
    """Read a Prefect Secret block (credential references with ``password_secret``)."""
    from prefect.blocks.system import Secret

    return str(Secret.load(name).get())


def server_password(server: Server) -> str:
    return inventory.resolve_password(server, secret_loader=load_secret)


@task(name="notify", retries=0, tags=[])
def send_notification(title: str, body: str, kind: str = "info", urls: list[str] | None = None) -> list[str]:
    """Send to the farm's notify targets (or ``urls``); failures are logged, never raised.

    ``{env: NAME}`` and ``{secret: BLOCK}`` entries are resolved here, at run time; only the privacy form of a
    URL is ever logged or returned (``notify.redact_target``).
    """
    logger = get_run_logger()
    if urls is None:
        with inventory_session() as session:
            entries = list(inventory.farm_settings(session).notify)
        resolved = resolve_targets(entries, secret_loader=load_secret)
        for problem in resolved.problems:
            logger.warning("%s", problem)
        urls = resolved.urls
    if not urls:
        return []
    result = notify(urls, title, body, kind=kind)
    for url in result.failed:
        logger.warning("notification to %s failed: %s", url, title)
    return result.delivered


def farm_volumes(servers: list[str] | None = None) -> list[ServerVolume]:
    """The volumes of the named servers (all when ``None``) with credentials resolved (env or Secret block)."""
    with inventory_session() as session:
        return server_volumes(session, server_password, servers=servers,
                              require_signing=load_settings().storage.require_signing)


def storage_prefer() -> str:
    """How flows reach volumes: ``auto`` (local mount when the volume has a path), ``local`` or ``smb``."""
    return load_settings().storage.prefer

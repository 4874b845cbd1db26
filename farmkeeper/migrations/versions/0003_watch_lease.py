"""watch lease: exactly one watching health check sweeps; another takes over when it expires

Revision ID: 0003_watch_lease
Revises: 0002_watchdog
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import farmkeeper.models

revision = '0003_watch_lease'
down_revision = '0002_watchdog'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('watch_lease',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('holder', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('flow_run_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('acquired_at', farmkeeper.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('renewed_at', farmkeeper.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', farmkeeper.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('watch_lease')

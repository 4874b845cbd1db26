"""failover: when each server was last probed and why its last probe failed

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import farmkeeper.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("server", schema=None) as batch_op:
        batch_op.add_column(sa.Column("probed_at", farmkeeper.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("probe_error", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("server", schema=None) as batch_op:
        batch_op.drop_column("probe_error")
        batch_op.drop_column("probed_at")

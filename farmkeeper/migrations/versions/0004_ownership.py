"""ownership: the last video file count per camera and server (for ``farmkeeper ownership --explain``)

Revision ID: 0004
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import farmkeeper.models

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ownership_count",
        sa.Column("camera_id", sa.String(length=64), nullable=False),
        sa.Column("server", sa.String(length=64), nullable=False),
        sa.Column("files", sa.BigInteger(), nullable=False),
        sa.Column("streams", sa.JSON(), nullable=False),
        sa.Column("first_day", sa.String(), nullable=True),
        sa.Column("last_day", sa.String(), nullable=True),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("counted_at", farmkeeper.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("camera_id", "server"),
    )


def downgrade() -> None:
    op.drop_table("ownership_count")

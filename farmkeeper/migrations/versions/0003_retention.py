"""retention: audit outcome, last sweep per volume (lease, alert) and per camera (forecast, shortfall)

Revision ID: 0003
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import farmkeeper.models

revision = "0003"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deletion_audit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outcome", sa.String(), nullable=False, server_default="deleted"))
    op.create_table(
        "retention_volume",
        sa.Column("server", sa.String(length=64), nullable=False),
        sa.Column("drive", sa.String(length=1), nullable=False),
        sa.Column("total_bytes", sa.BigInteger(), nullable=True),
        sa.Column("free_bytes", sa.BigInteger(), nullable=True),
        sa.Column("footage_files", sa.BigInteger(), nullable=False),
        sa.Column("footage_bytes", sa.BigInteger(), nullable=False),
        sa.Column("swept_at", farmkeeper.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("alert", sa.String(), nullable=True),
        sa.Column("lease_run_id", sa.String(), nullable=True),
        sa.Column("lease_until", farmkeeper.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("server", "drive"),
    )
    op.create_table(
        "retention_camera",
        sa.Column("camera_id", sa.String(length=64), nullable=False),
        sa.Column("server", sa.String(length=64), nullable=False),
        sa.Column("drive", sa.String(length=1), nullable=False),
        sa.Column("video_files", sa.BigInteger(), nullable=False),
        sa.Column("video_bytes", sa.BigInteger(), nullable=False),
        sa.Column("meta_files", sa.BigInteger(), nullable=False),
        sa.Column("meta_bytes", sa.BigInteger(), nullable=False),
        sa.Column("oldest_video_at", farmkeeper.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("newest_video_at", farmkeeper.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("rule_days", sa.Integer(), nullable=True),
        sa.Column("held_days", sa.Float(), nullable=True),
        sa.Column("worst_stream", sa.Integer(), nullable=True),
        sa.Column("worst_rule_days", sa.Integer(), nullable=True),
        sa.Column("shortfall", sa.Boolean(), nullable=False),
        sa.Column("shortfall_since", farmkeeper.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", farmkeeper.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("camera_id", "server", "drive"),
    )


def downgrade() -> None:
    op.drop_table("retention_camera")
    op.drop_table("retention_volume")
    with op.batch_alter_table("deletion_audit", schema=None) as batch_op:
        batch_op.drop_column("outcome")

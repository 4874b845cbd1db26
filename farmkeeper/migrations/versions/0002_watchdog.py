"""watchdog: stalled cameras, volume health, failover priority and chains

Revision ID: 0002_watchdog
Revises: 0001
Create Date: 2026-11-26 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import farmkeeper.models

revision = '0002_watchdog'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.execute("ALTER TYPE camerastate ADD VALUE IF NOT EXISTS 'stalled'")
    op.create_table('camera_watch',
    sa.Column('camera_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('server', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('since', farmkeeper.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_segment_at', farmkeeper.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('segment_s', sa.Float(), nullable=True),
    sa.Column('checked_at', farmkeeper.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('stalled_at', farmkeeper.models.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('camera_id')
    )
    op.create_table('volume_health',
    sa.Column('server', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('drive', sqlmodel.sql.sqltypes.AutoString(length=1), nullable=False),
    sa.Column('failed', sa.Boolean(), nullable=False),
    sa.Column('failing_since', farmkeeper.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('checked_at', farmkeeper.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('changed_at', farmkeeper.models.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('server', 'drive')
    )
    with op.batch_alter_table('farm_settings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stall_after_s', sa.Float(), nullable=False, server_default='120'))
        batch_op.add_column(sa.Column('failover_stalled', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    with op.batch_alter_table('server', schema=None) as batch_op:
        batch_op.add_column(sa.Column('failover_to', sa.JSON(), nullable=False, server_default='[]'))
    with op.batch_alter_table('camera', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.Integer(), nullable=False, server_default='3'))
        batch_op.add_column(sa.Column('stall_after_s', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('failover_stalled', sa.Boolean(), nullable=True))
    # SQLite: the enum is a VARCHAR without a CHECK constraint; 'stalled' fits as it is.


def downgrade() -> None:
    with op.batch_alter_table('camera', schema=None) as batch_op:
        batch_op.drop_column('failover_stalled')
        batch_op.drop_column('stall_after_s')
        batch_op.drop_column('priority')
    with op.batch_alter_table('server', schema=None) as batch_op:
        batch_op.drop_column('failover_to')
    with op.batch_alter_table('farm_settings', schema=None) as batch_op:
        batch_op.drop_column('failover_stalled')
        batch_op.drop_column('stall_after_s')
    op.drop_table('volume_health')
    op.drop_table('camera_watch')

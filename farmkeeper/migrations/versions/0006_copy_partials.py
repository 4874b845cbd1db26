"""copy items record their resumable partial file: path, acknowledged length, origin

Revision ID: 0006_copy_partials
Revises: 0005_metric_counters
Create Date: 2026-11-26 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0006_copy_partials'
down_revision = '0005_metric_counters'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('copy_item', schema=None) as batch_op:
        batch_op.add_column(sa.Column('partial_path', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('partial_bytes', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('partial_origin', sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('copy_item', schema=None) as batch_op:
        batch_op.drop_column('partial_origin')
        batch_op.drop_column('partial_bytes')
        batch_op.drop_column('partial_path')

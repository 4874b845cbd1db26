"""metric counters (sweep duration histogram, kept across processes)

Revision ID: 0005_metric_counters
Revises: 0004_one_master
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import farmkeeper.models

revision = '0005_metric_counters'
down_revision = '0004_one_master'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('metric_counter',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('label', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('updated_at', farmkeeper.models.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name', 'label')
    )


def downgrade() -> None:
    op.drop_table('metric_counter')

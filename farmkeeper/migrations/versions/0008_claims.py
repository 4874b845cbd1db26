"""footage claims: one flow at a time acts on a camera's footage on a volume

Revision ID: 0008_claims
Revises: 0007_central_storage
Create Date: 2026-11-26 10:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import farmkeeper.models

revision = '0008_claims'
down_revision = '0007_central_storage'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('footage_claim',
    sa.Column('camera_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('server', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('drive', sqlmodel.sql.sqltypes.AutoString(length=1), nullable=False),
    sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('host', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('claimed_at', farmkeeper.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('until', farmkeeper.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('camera_id', 'server', 'drive')
    )
    with op.batch_alter_table('footage_claim', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_footage_claim_owner'), ['owner'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('footage_claim', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_footage_claim_owner'))
    op.drop_table('footage_claim')

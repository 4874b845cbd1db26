"""central storage: a volume may be a NAS share (``unc``) that several servers list

Revision ID: 0007_central_storage
Revises: 0006_copy_partials
Create Date: 2026-11-26 10:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0007_central_storage'
down_revision = '0006_copy_partials'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('volume', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unc', sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('volume', schema=None) as batch_op:
        batch_op.drop_column('unc')

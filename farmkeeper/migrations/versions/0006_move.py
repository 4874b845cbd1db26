"""move: why a camera's home is pinned (``pin_reason='move'``: released once the file counts agree)

Revision ID: 0006
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("camera") as batch:
        batch.add_column(sa.Column("pin_reason", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("camera") as batch:
        batch.drop_column("pin_reason")

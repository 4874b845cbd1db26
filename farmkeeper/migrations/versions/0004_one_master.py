"""one master: a partial unique index lets at most one server row be the master

Revision ID: 0004_one_master
Revises: 0003_watch_lease
Create Date: 2026-11-26 09:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004_one_master'
down_revision = '0003_watch_lease'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # An inventory written before the index may have two masters (the race this index closes): keep the
    # declared master if it is one of them, else the first by name.
    server = sa.table('server', sa.column('name', sa.String), sa.column('master', sa.Boolean),
                      sa.column('declared_master', sa.Boolean))
    conn = op.get_bind()
    masters = conn.execute(sa.select(server.c.name, server.c.declared_master)
                           .where(server.c.master == sa.true()).order_by(server.c.name)).all()
    if len(masters) > 1:
        keep = next((name for name, declared in masters if declared), masters[0][0])
        conn.execute(sa.update(server).where(server.c.master == sa.true(), server.c.name != keep)
                     .values(master=False))
    with op.batch_alter_table('server', schema=None) as batch_op:
        batch_op.create_index('uq_server_one_master', ['master'], unique=True,
                              sqlite_where=sa.text('master'), postgresql_where=sa.text('master'))


def downgrade() -> None:
    with op.batch_alter_table('server', schema=None) as batch_op:
        batch_op.drop_index('uq_server_one_master', sqlite_where=sa.text('master'),
                            postgresql_where=sa.text('master'))

"""Access key ids and names, Outline server ids and names of any length: ``text`` columns,
and the (server, key id) uniqueness on an md5 of the key id (a B-tree entry holds at most
about 2.7 kB; Outline lets an admin choose any id with ``PUT /access-keys/{id}``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, column, old type): widened to text
_WIDENED = (
    ("access_keys", "key_id", sa.String(100)),
    ("access_keys", "name", sa.String(300)),
    ("servers", "outline_server_id", sa.String(100)),
    ("servers", "outline_name", sa.String(200)),
)


def upgrade() -> None:
    op.drop_constraint("uq_access_keys_server_key", "access_keys", type_="unique")
    for table, column, old in _WIDENED:
        op.alter_column(table, column, type_=sa.Text(), existing_type=old)
    op.add_column(
        "access_keys",
        sa.Column("key_id_md5", sa.String(32), sa.Computed("md5(key_id)", persisted=True)),
    )
    op.create_unique_constraint(
        "uq_access_keys_server_key", "access_keys", ["server_id", "key_id_md5"]
    )


def downgrade() -> None:
    # ids and names longer than the old columns would not fit: they are cut (down is lossy)
    op.drop_constraint("uq_access_keys_server_key", "access_keys", type_="unique")
    op.drop_column("access_keys", "key_id_md5")
    for table, column, old in _WIDENED:
        length = old.length
        op.alter_column(
            table,
            column,
            type_=old,
            existing_type=sa.Text(),
            postgresql_using=f"left({column}, {length})",
        )
    op.create_unique_constraint("uq_access_keys_server_key", "access_keys", ["server_id", "key_id"])

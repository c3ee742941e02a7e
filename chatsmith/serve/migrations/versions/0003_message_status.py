"""Schema version 3: a message's status, so an answer the server streams is stored as it grows.

"done" for every message written whole; an answer being streamed is "streaming", then
"done", "length" (cut by max_tokens or the context), "stopped" (the client left) or
"cut" (the server died mid-answer; set when the next server starts).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("status", sa.String(16), nullable=False, server_default="done"))
    op.execute("UPDATE schema_version SET version = 3")


def downgrade() -> None:
    with op.batch_alter_table("messages") as t:
        t.drop_column("status")
    op.execute("UPDATE schema_version SET version = 2")

"""Schema version 2: a conversation's settings (system prompt, sampling) and a message's tool calls.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("conversations", sa.Column("settings", sa.JSON, nullable=True))
    op.add_column("messages", sa.Column("tool_calls", sa.JSON, nullable=True))
    op.execute("UPDATE schema_version SET version = 2")


def downgrade() -> None:
    # Batch mode: SQLite drops a column by copying the table.
    with op.batch_alter_table("messages") as t:
        t.drop_column("tool_calls")
    with op.batch_alter_table("conversations") as t:
        t.drop_column("settings")
    op.execute("UPDATE schema_version SET version = 1")

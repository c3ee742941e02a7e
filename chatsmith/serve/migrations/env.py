"""Alembic's environment for the conversation store (run by chatsmith.serve.migrate).

The store passes its open connection in `config.attributes["connection"]`, so the
migrations run inside the store's own transaction and no alembic.ini is needed. A new
migration is a file in versions/ whose `down_revision` is the latest one; it also sets
`schema_version` to its number, which becomes SCHEMA_VERSION in migrate.py.
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection)
with context.begin_transaction():
    context.run_migrations()

"""Bring a store's database to the latest schema with Alembic (the scripts are in migrations/).

A new database runs every migration from the start. A database made before Alembic
carries only its `schema_version` number (1 or 2); it is stamped with the matching
revision, then upgraded like any other. `schema_version` stays current as well, so
the number that a person, or an older chatsmith, reads is still true; a database
newer than this code, by either mark, is refused rather than touched.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from chatsmith.common.errors import ChatsmithError

SCHEMA_VERSION = 3
MIGRATIONS = Path(__file__).parent / "migrations"
# The Alembic revision that each schema version of the hand-made migrations corresponds to.
REVISION_OF_VERSION = {1: "0001", 2: "0002"}


def alembic_config(conn: Connection) -> Config:
    """An Alembic config made in code, running on `conn` (no alembic.ini)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    cfg.attributes["connection"] = conn
    return cfg


def upgrade(conn: Connection, url: str) -> int:
    """Upgrade the database behind `conn` to the latest schema; returns its schema version."""
    cfg = alembic_config(conn)
    tables = set(inspect(conn).get_table_names())
    version = _version(conn) if "schema_version" in tables else None
    if version is not None and version > SCHEMA_VERSION:
        raise _newer(url, f"schema version {version}")
    if "alembic_version" in tables:
        rev = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        known = {s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()}
        if rev is not None and rev not in known:
            raise _newer(url, f"schema revision {rev!r}")
    elif version is not None:
        command.stamp(cfg, REVISION_OF_VERSION[version])  # made by the hand-made migrations
    command.upgrade(cfg, "head")
    return _version(conn)


def _version(conn: Connection) -> int:
    return conn.execute(text("SELECT version FROM schema_version")).scalar_one()


def _newer(url: str, what: str) -> ChatsmithError:
    return ChatsmithError(
        f"database {url} has {what}, newer than this chatsmith ({SCHEMA_VERSION}); upgrade chatsmith"
    )

"""The conversation store and API keys, against SQLite and (when CHATSMITH_TEST_PG_URL is set,
as .ci/run does) a real PostgreSQL server."""

from __future__ import annotations

import os
import uuid

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from chatsmith.common.errors import ChatsmithError
from chatsmith.serve.auth import Authenticator, AuthError, create_key
from chatsmith.serve.limits import RateLimiter
from chatsmith.serve.migrate import alembic_config
from chatsmith.serve.store import SCHEMA_VERSION, Base, Store

PG = os.environ.get("CHATSMITH_TEST_PG_URL")


def _fresh_pg_url() -> str:
    """A new, empty database on the test server for each test."""
    name = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return PG.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    if not PG:
        pytest.skip("set CHATSMITH_TEST_PG_URL to run the store tests on PostgreSQL (.ci/run does)")
    return _fresh_pg_url()


def test_conversation_tree_branches_and_search(db_url) -> None:
    st = Store(db_url)
    uid = st.user("alice").id
    c = st.create_conversation(uid, "Cooking")
    u1 = st.add_message(uid, c.id, "user", "How do I boil an egg?", None)
    a1 = st.add_message(uid, c.id, "assistant", "Put it in boiling water.", u1.id)
    # Editing the user message makes a sibling branch; both stay stored.
    u1b = st.add_message(uid, c.id, "user", "How do I fry an egg? 煎蛋", None)
    conv, msgs = st.conversation(uid, c.id)
    assert conv.current_leaf == u1b.id
    assert [m.id for m in msgs] == [u1.id, a1.id, u1b.id]
    st.update_conversation(uid, c.id, current_leaf=a1.id, title="Eggs")
    conv, _ = st.conversation(uid, c.id)
    assert (conv.current_leaf, conv.title) == (a1.id, "Eggs")
    assert [x.id for x in st.list_conversations(uid, "煎蛋")] == [c.id]
    assert [x.id for x in st.list_conversations(uid, "eggs")] == [c.id]  # title, any case
    assert st.list_conversations(uid, "100%") == []
    # Another user sees nothing of alice's.
    bob = st.user("bob").id
    assert st.list_conversations(bob) == []
    with pytest.raises(KeyError):
        st.conversation(bob, c.id)
    with pytest.raises(ChatsmithError, match="parent"):
        st.add_message(uid, c.id, "user", "x", "nope")
    nul = st.add_message(uid, c.id, "assistant", "a\x00b", u1b.id)  # storable in PostgreSQL too
    assert st.conversation(uid, c.id)[1][-1].content == "a\ufffdb" and nul.id
    st.delete_conversation(uid, c.id)
    assert st.list_conversations(uid) == []
    st.close()


def test_keys_hashed_shown_once_and_revocable(db_url) -> None:
    st = Store(db_url)
    kid, key = create_key(st, "alice", rpm=5)
    assert key.startswith("sk-cs-") and len(key) > 40
    with st.engine.connect() as c:
        stored = " ".join(str(v) for row in c.execute(text("SELECT * FROM api_keys")) for v in row)
    assert key not in stored  # only its hash is kept
    auth = Authenticator(st)
    caller = auth.authenticate(f"Bearer {key}")
    assert (caller.user_name, caller.key_id, caller.rpm) == ("alice", kid, 5)
    with pytest.raises(AuthError):
        auth.authenticate(None)  # a key exists, so one is required
    with pytest.raises(AuthError):
        auth.authenticate("Bearer sk-cs-wrong")
    st.revoke_key(kid)
    with pytest.raises(AuthError, match="revoked"):
        auth.authenticate(f"Bearer {key}")
    with pytest.raises(ChatsmithError, match="no key"):
        st.revoke_key("nothing")
    st.close()


def test_open_server_without_keys_uses_the_local_user(tmp_path) -> None:
    st = Store(f"sqlite:///{tmp_path / 'a.db'}")
    assert Authenticator(st).authenticate(None).user_name == "local"
    with pytest.raises(AuthError):
        Authenticator(st, require=True).authenticate(None)


V1_SCHEMA = [
    "CREATE TABLE schema_version (version INTEGER PRIMARY KEY)",
    "INSERT INTO schema_version VALUES (1)",
    "CREATE TABLE users (id VARCHAR(64) PRIMARY KEY, name VARCHAR(200) UNIQUE, created_at FLOAT)",
    "CREATE TABLE api_keys (id VARCHAR(64) PRIMARY KEY, user_id VARCHAR(64) REFERENCES users(id), "
    "name VARCHAR(200), prefix VARCHAR(32), key_hash VARCHAR(128) UNIQUE, rpm INTEGER, revoked BOOLEAN, "
    "created_at FLOAT, last_used_at FLOAT)",
    "CREATE TABLE conversations (id VARCHAR(64) PRIMARY KEY, user_id VARCHAR(64) REFERENCES users(id), "
    "title VARCHAR(500), current_leaf VARCHAR(64), created_at FLOAT, updated_at FLOAT)",
    "CREATE TABLE messages (id VARCHAR(64) PRIMARY KEY, "
    "conversation_id VARCHAR(64) REFERENCES conversations(id), "
    "parent_id VARCHAR(64), role VARCHAR(16), content TEXT, created_at FLOAT)",
    "INSERT INTO users VALUES ('u1', 'old', 1.0)",
    "INSERT INTO conversations VALUES ('c1', 'u1', 'from v1', 'm1', 1.0, 1.0)",
    "INSERT INTO messages VALUES ('m1', 'c1', NULL, 'user', 'kept across the upgrade', 1.0)",
]


def test_schema_upgrades_in_place(db_url) -> None:
    eng = create_engine(db_url)
    with eng.begin() as c:
        for stmt in V1_SCHEMA:
            c.execute(text(stmt))
    eng.dispose()
    st = Store(db_url)
    assert st.version == SCHEMA_VERSION
    conv, msgs = st.conversation("u1", "c1")
    assert conv.title == "from v1" and msgs[0].content == "kept across the upgrade"
    st.update_conversation("u1", "c1", settings={"temperature": 0.5})
    st.add_message("u1", "c1", "assistant", "", "m1", tool_calls=[{"id": "t", "type": "function"}])
    conv, msgs = st.conversation("u1", "c1")
    assert conv.settings == {"temperature": 0.5} and msgs[1].tool_calls[0]["id"] == "t"
    st.close()
    assert Store(db_url).version == SCHEMA_VERSION  # reopening is a no-op


# The schema as the hand-made migrations left it at version 2 (before Alembic): no
# alembic_version table, the two columns of version 2 present and holding data.
V2_SCHEMA = [
    *(stmt.replace("VALUES (1)", "VALUES (2)") for stmt in V1_SCHEMA[:6]),
    "ALTER TABLE conversations ADD COLUMN settings JSON",
    "ALTER TABLE messages ADD COLUMN tool_calls JSON",
    "INSERT INTO users VALUES ('u2', 'old2', 1.0)",
    """INSERT INTO conversations VALUES ('c2', 'u2', 'from v2', 'm3', 1.0, 2.0, '{"temperature": 0.3}')""",
    "INSERT INTO messages VALUES ('m2', 'c2', NULL, 'user', 'weather?', 1.0, NULL)",
    "INSERT INTO messages VALUES ('m3', 'c2', 'm2', 'assistant', '', 2.0, "
    """'[{"id": "call-1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]')""",
]


def _run(url: str, statements: list[str]) -> None:
    eng = create_engine(url)
    with eng.begin() as c:
        for stmt in statements:
            c.execute(text(stmt))
    eng.dispose()


def _alembic_revision(st: Store) -> str:
    with st.engine.connect() as c:
        return c.execute(text("SELECT version_num FROM alembic_version")).scalar_one()


def test_schema_v2_from_before_alembic_upgrades_in_place(db_url) -> None:
    _run(db_url, V2_SCHEMA)
    st = Store(db_url)
    assert st.version == SCHEMA_VERSION and _alembic_revision(st) == "0003"
    conv, msgs = st.conversation("u2", "c2")
    assert (conv.title, conv.current_leaf, conv.settings) == ("from v2", "m3", {"temperature": 0.3})
    assert [m.content for m in msgs] == ["weather?", ""]
    assert msgs[1].tool_calls[0]["function"]["name"] == "w"
    st.close()


def test_migrations_build_the_schema_the_models_describe(db_url) -> None:
    st = Store(db_url)
    with st.engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []
    st.close()


def test_downgrade_keeps_the_data_and_upgrades_again(db_url) -> None:
    st = Store(db_url)
    uid = st.user("alice").id
    cid = st.create_conversation(uid, "kept", settings={"top_p": 0.9}).id
    st.add_message(uid, cid, "user", "hello", None)
    with st.engine.begin() as c:
        command.downgrade(alembic_config(c), "0001")
        assert c.execute(text("SELECT version FROM schema_version")).scalar_one() == 1
    st.close()
    st = Store(db_url)  # back to the latest: the v2 columns come back empty
    conv, msgs = st.conversation(uid, cid)
    assert (conv.title, conv.settings, [m.content for m in msgs]) == ("kept", None, ["hello"])
    assert st.version == SCHEMA_VERSION
    st.close()


def test_unknown_alembic_revision_is_refused(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    Store(url).close()
    _run(url, ["UPDATE alembic_version SET version_num = 'f00d'"])
    with pytest.raises(ChatsmithError, match="newer"):
        Store(url)


def test_newer_schema_is_refused(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'n.db'}"
    Store(url).close()
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(text("UPDATE schema_version SET version = 99"))
    with pytest.raises(ChatsmithError, match="newer"):
        Store(url)


def test_rate_limiter_bucket() -> None:
    now = [0.0]
    lim = RateLimiter(clock=lambda: now[0])
    assert [lim.check("k", 2) for _ in range(2)] == [0.0, 0.0]
    wait = lim.check("k", 2)
    assert 29 <= wait <= 31  # one request every 30 s once the burst is spent
    now[0] += 30.0
    assert lim.check("k", 2) == 0.0
    assert lim.check("other", 2) == 0.0
    assert lim.check("k", None) == 0.0

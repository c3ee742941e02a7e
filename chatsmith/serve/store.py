"""Users, API keys and conversations, persisted through SQLAlchemy.

SQLite (a file under CHATSMITH_HOME) by default, PostgreSQL by URL. The schema upgrades
in place when a store opens it: Alembic runs the missing migrations (migrate.py) in one
transaction. The models here describe the latest schema; the migrations build it.

A conversation is a tree of messages (editing a user message starts a sibling branch);
`current_leaf` says which branch the user looks at. Every write commits before it
returns, so a message the server acknowledged survives the process being killed.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from alembic.util.exc import CommandError
from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    or_,
    select,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from chatsmith.common.errors import ChatsmithError
from chatsmith.common.paths import home
from chatsmith.serve import migrate
from chatsmith.serve.migrate import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "ApiKey", "Conversation", "Message", "Store", "User"]


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    """The schema's number, from before Alembic; the migrations keep it current."""

    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[float] = mapped_column(Float)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(32))  # shown in listings; the key itself is never stored
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    rpm: Mapped[int | None] = mapped_column(
        Integer, nullable=True
    )  # requests per minute; None = server default
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Conversation(Base):
    __tablename__ = "conversations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(500), default="")
    current_leaf: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float, index=True)
    # Added in schema version 2: the system prompt and sampling settings of the conversation.
    settings: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    parent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)
    # Added in schema version 2: tool calls of an assistant message (OpenAI's shape).
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    # Added in schema version 3: "done", or where a streamed answer stands (migration 0003).
    status: Mapped[str] = mapped_column(String(16), default="done", server_default="done")


ROLES = ("system", "user", "assistant", "tool")
MAX_CONTENT = 1_000_000  # characters in one stored message


def _text(s: str) -> str:
    # PostgreSQL text cannot hold NUL; the same text must be storable in every backend.
    return s.replace("\x00", "\ufffd")


def default_url() -> str:
    return f"sqlite:///{home() / 'chatsmith.db'}"


def new_id() -> str:
    return uuid.uuid4().hex


class Store:
    def __init__(self, url: str | None = None) -> None:
        url = url or default_url()
        self.url = url
        kw: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                # Conversations are private: the file (and the -wal/-shm files SQLite makes
                # with the same mode) is readable by its owner only.
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            kw["connect_args"] = {"check_same_thread": False, "timeout": 30}
        try:
            self.engine = create_engine(url, **kw)
        except Exception as e:  # a malformed URL or a missing driver
            raise ChatsmithError(f"cannot open database {url!r}: {e}") from None
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        try:
            with self.engine.begin() as conn:
                self.version = migrate.upgrade(conn, url)
        except OperationalError as e:
            raise ChatsmithError(f"cannot open database {url!r}: {e.orig}") from None
        except CommandError as e:
            raise ChatsmithError(f"cannot upgrade database {url!r}: {e}") from None

    def close(self) -> None:
        self.engine.dispose()

    # -- users and keys ------------------------------------------------------------------
    def user(self, name: str, create: bool = True) -> User:
        with self.session() as s:
            u = s.scalar(select(User).where(User.name == name))
        if u is not None:
            return u
        if not create:
            raise ChatsmithError(f"no user named {name!r}")
        try:
            with self.session() as s, s.begin():
                u = User(id=new_id(), name=name, created_at=time.time())
                s.add(u)
            return u
        except IntegrityError:  # created by a concurrent request a moment ago
            with self.session() as s:
                return s.scalars(select(User).where(User.name == name)).one()

    def add_key(
        self, user_name: str, prefix: str, key_hash: str, name: str = "", rpm: int | None = None
    ) -> ApiKey:
        uid = self.user(user_name).id
        with self.session() as s, s.begin():
            k = ApiKey(
                id=new_id()[:12],
                user_id=uid,
                name=name,
                prefix=prefix,
                key_hash=key_hash,
                rpm=rpm,
                revoked=False,
                created_at=time.time(),
            )
            s.add(k)
            return k

    def list_keys(self) -> list[tuple[ApiKey, str]]:
        with self.session() as s:
            rows = s.execute(select(ApiKey, User.name).join(User).order_by(ApiKey.created_at)).all()
            return [(k, n) for k, n in rows]

    def revoke_key(self, id_or_prefix: str) -> ApiKey:
        with self.session() as s, s.begin():
            found = s.scalars(
                select(ApiKey).where(or_(ApiKey.id == id_or_prefix, ApiKey.prefix == id_or_prefix))
            ).all()
            if len(found) != 1:
                what = "no key" if not found else f"{len(found)} keys"
                raise ChatsmithError(f"{what} with id or prefix {id_or_prefix!r}; see `chatsmith keys list`")
            found[0].revoked = True
            return found[0]

    def key_by_hash(self, key_hash: str) -> tuple[ApiKey, User] | None:
        with self.session() as s:
            row = s.execute(select(ApiKey, User).join(User).where(ApiKey.key_hash == key_hash)).first()
            return (row[0], row[1]) if row else None

    def has_keys(self) -> bool:
        """Whether a key was ever made (revoked ones count)."""
        with self.session() as s:
            return s.scalar(select(ApiKey.id).limit(1)) is not None

    # -- conversations -------------------------------------------------------------------
    def create_conversation(
        self, user_id: str, title: str = "", settings: dict | None = None
    ) -> Conversation:
        now = time.time()
        c = Conversation(
            id=new_id(),
            user_id=user_id,
            title=_text(title),
            settings=settings,
            created_at=now,
            updated_at=now,
        )
        with self.session() as s, s.begin():
            s.add(c)
        return c

    def list_conversations(self, user_id: str, query: str = "", limit: int = 200) -> list[Conversation]:
        q = select(Conversation).where(Conversation.user_id == user_id)
        if query:
            pat = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            hits = select(Message.conversation_id).where(Message.content.ilike(pat, escape="\\"))
            q = q.where(or_(Conversation.title.ilike(pat, escape="\\"), Conversation.id.in_(hits)))
        with self.session() as s:
            return list(s.scalars(q.order_by(Conversation.updated_at.desc()).limit(limit)))

    def conversation(self, user_id: str, conv_id: str) -> tuple[Conversation, list[Message]]:
        with self.session() as s:
            c = s.get(Conversation, conv_id)
            if c is None or c.user_id != user_id:
                raise KeyError(conv_id)
            msgs = s.scalars(
                select(Message).where(Message.conversation_id == conv_id).order_by(Message.created_at)
            ).all()
            return c, list(msgs)

    def update_conversation(self, user_id: str, conv_id: str, **fields: Any) -> Conversation:
        with self.session() as s, s.begin():
            c = s.get(Conversation, conv_id)
            if c is None or c.user_id != user_id:
                raise KeyError(conv_id)
            if fields.get("current_leaf") is not None:
                m = s.get(Message, fields["current_leaf"])
                if m is None or m.conversation_id != conv_id:
                    raise ChatsmithError(f"message {fields['current_leaf']!r} is not in this conversation")
            for k, v in fields.items():
                if v is not None:
                    setattr(c, k, _text(v) if k == "title" else v)
            c.updated_at = time.time()
            return c

    def delete_conversation(self, user_id: str, conv_id: str) -> None:
        with self.session() as s, s.begin():
            c = s.get(Conversation, conv_id)
            if c is None or c.user_id != user_id:
                raise KeyError(conv_id)
            # Explicit, because SQLite enforces ON DELETE CASCADE only with a pragma.
            s.execute(Message.__table__.delete().where(Message.conversation_id == conv_id))
            s.delete(c)

    def add_message(
        self,
        user_id: str,
        conv_id: str,
        role: str,
        content: str,
        parent_id: str | None,
        tool_calls: list[dict[str, Any]] | None = None,
        created_at: float | None = None,
        msg_id: str | None = None,
        status: str = "done",
    ) -> Message:
        """Append a message under parent_id (None = a root) and make it the current leaf."""
        if role not in ROLES:
            raise ChatsmithError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if len(content) > MAX_CONTENT:
            raise ChatsmithError(f"a message holds at most {MAX_CONTENT} characters, got {len(content)}")
        with self.session() as s, s.begin():
            c = s.get(Conversation, conv_id)
            if c is None or c.user_id != user_id:
                raise KeyError(conv_id)
            if parent_id is not None:
                p = s.get(Message, parent_id)
                if p is None or p.conversation_id != conv_id:
                    raise ChatsmithError(f"parent message {parent_id!r} is not in this conversation")
            now = time.time()
            # Strictly increasing times keep the order of messages written in the same tick.
            last = s.scalar(
                select(Message.created_at)
                .where(Message.conversation_id == conv_id)
                .order_by(Message.created_at.desc())
                .limit(1)
            )
            t = created_at if created_at is not None else max(now, (last or 0) + 1e-6)
            m = Message(
                id=msg_id or new_id(),
                conversation_id=conv_id,
                parent_id=parent_id,
                role=role,
                content=_text(content),
                tool_calls=tool_calls,
                created_at=t,
                status=status,
            )
            s.add(m)
            c.current_leaf = m.id
            c.updated_at = now
            return m

    def branch(self, user_id: str, conv_id: str, leaf_id: str) -> tuple[Conversation, list[Message]]:
        """The conversation and the messages from its root down to `leaf_id`."""
        c, msgs = self.conversation(user_id, conv_id)
        by_id = {m.id: m for m in msgs}
        if leaf_id not in by_id:
            raise ChatsmithError(f"message {leaf_id!r} is not in this conversation")
        path: list[Message] = []
        at: str | None = leaf_id
        while at is not None and at in by_id and len(path) <= len(msgs):
            path.append(by_id[at])
            at = by_id[at].parent_id
        return c, path[::-1]

    def update_answer(
        self, msg_id: str, content: str, status: str, tool_calls: list[dict[str, Any]] | None = None
    ) -> None:
        """Write what a streamed answer holds so far (committed before it returns)."""
        with self.session() as s, s.begin():
            m = s.get(Message, msg_id)
            if m is None:  # the conversation was deleted while it streamed
                return
            m.content, m.status = _text(content), status
            if tool_calls is not None:
                m.tool_calls = tool_calls

    def cut_streaming(self) -> int:
        """Answers still "streaming" when a server starts were cut by the last one dying."""
        with self.session() as s, s.begin():
            rows = Message.__table__.update().where(Message.status == "streaming")
            res = s.execute(rows.values(status="cut"))
            return res.rowcount or 0


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers run while a writer commits; synchronous=FULL makes a commit durable
    # before it returns (the default NORMAL may drop the last commits on power loss).
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()

"""The conversation store over HTTP, for the web app: /api/conversations/...

Each caller sees only their own conversations. A write answers only after it committed,
so an acknowledged message survives the server being killed.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter
from fastapi import Request as HTTPRequest
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from chatsmith.common.errors import ChatsmithError
from chatsmith.serve.context import Who, ctx_of
from chatsmith.serve.errors import APIError, bad_request
from chatsmith.serve.openai_routes import read_body
from chatsmith.serve.openapi import doc
from chatsmith.serve.response_models import ResponseModel
from chatsmith.serve.store import Conversation, Message, Store, new_id

router = APIRouter(prefix="/api")
MAX_IMPORT_MESSAGES = 10_000


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class NewConversation(_Body):
    title: str = Field(default="", max_length=500)
    settings: dict[str, Any] | None = None


class ConversationPatch(_Body):
    title: str | None = Field(default=None, max_length=500)
    current_leaf: str | None = None
    settings: dict[str, Any] | None = None


class NewMessage(_Body):
    role: Literal["system", "user", "assistant", "tool"]  # the store's ROLES, so the document lists them
    content: str = ""
    parent_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ImportedMessage(NewMessage):
    id: str
    created_at: float | None = None


class ImportedConversation(_Body):
    title: str = Field(default="", max_length=500)
    settings: dict[str, Any] | None = None
    current_leaf: str | None = None
    messages: list[ImportedMessage] = Field(default_factory=list, max_length=MAX_IMPORT_MESSAGES)


class StoredMessage(ResponseModel):
    id: str
    parent_id: str | None
    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None
    created_at: float
    # "done"; for an answer the server streamed: "streaming", "length", "stopped" or "cut"
    status: str = "done"


class ConversationOut(ResponseModel):
    """What the web app reads (and exports): with `messages`, the whole message tree."""

    _omit_none = frozenset({"messages"})
    id: str
    title: str
    current_leaf: str | None
    settings: dict[str, Any]
    created_at: float
    updated_at: float
    messages: list[StoredMessage] | None = None

    @classmethod
    def of(cls, c: Conversation, msgs: list[Message] | None = None) -> ConversationOut:
        tree = None if msgs is None else [_stored(m) for m in msgs]
        return cls(
            id=c.id,
            title=_clean(c.title),
            current_leaf=c.current_leaf,
            settings=_clean(c.settings if isinstance(c.settings, dict) else {}),
            created_at=c.created_at,
            updated_at=c.updated_at,
            messages=tree,
        )


def _clean(x: Any) -> Any:
    """Rows stored before input was checked may hold lone surrogates, which no JSON response
    can carry: they read as U+FFFD instead of breaking every later GET."""
    if isinstance(x, str):
        return x if x.isascii() else x.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(x, dict):
        return {_clean(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def _stored(m: Message) -> StoredMessage:
    return StoredMessage(
        id=m.id,
        parent_id=m.parent_id,
        role=m.role,
        content=_clean(m.content or ""),
        tool_calls=_clean(m.tool_calls) if isinstance(m.tool_calls, list) else None,
        created_at=m.created_at,
        status=m.status or "done",
    )


class ConversationList(ResponseModel):
    data: list[ConversationOut]


class AddedMessage(ResponseModel):
    id: str
    parent_id: str | None
    role: str
    content: str
    created_at: float


class Deleted(ResponseModel):
    id: str
    deleted: bool = True


def _store(request: HTTPRequest) -> Store:
    return ctx_of(request).store


async def _run(fn: Any, *args: Any, **kw: Any) -> Any:
    """Database work runs on a worker thread; KeyError means 'not yours or not there'."""
    try:
        return await run_in_threadpool(fn, *args, **kw)
    except KeyError:
        raise APIError(404, "no such conversation", code="conversation_not_found") from None
    except ChatsmithError as e:
        raise bad_request(str(e)) from None


@router.get("/conversations", **doc(None, 401))
async def list_conversations(request: HTTPRequest, who: Who, q: str = "") -> ConversationList:
    convs = await _run(_store(request).list_conversations, who.user_id, q[:200])
    return ConversationList(data=[ConversationOut.of(c) for c in convs])


@router.post("/conversations", **doc(NewConversation, 401))
async def create_conversation(request: HTTPRequest, who: Who) -> ConversationOut:
    body = await read_body(request, NewConversation)
    c = await _run(_store(request).create_conversation, who.user_id, body.title, body.settings)
    return ConversationOut.of(c, [])


@router.get("/conversations/{conv_id}", **doc(None, 401, 404))
async def get_conversation(request: HTTPRequest, conv_id: str, who: Who) -> ConversationOut:
    c, msgs = await _run(_store(request).conversation, who.user_id, conv_id)
    return ConversationOut.of(c, msgs)


@router.patch("/conversations/{conv_id}", **doc(ConversationPatch, 401, 404))
async def patch_conversation(request: HTTPRequest, conv_id: str, who: Who) -> ConversationOut:
    body = await read_body(request, ConversationPatch)
    c = await _run(_store(request).update_conversation, who.user_id, conv_id, **body.model_dump())
    return ConversationOut.of(c)


@router.delete("/conversations/{conv_id}", **doc(None, 401, 404))
async def delete_conversation(request: HTTPRequest, conv_id: str, who: Who) -> Deleted:
    await _run(_store(request).delete_conversation, who.user_id, conv_id)
    return Deleted(id=conv_id)


@router.post("/conversations/{conv_id}/messages", **doc(NewMessage, 401, 404))
async def add_message(request: HTTPRequest, conv_id: str, who: Who) -> AddedMessage:
    body = await read_body(request, NewMessage)
    m = await _run(
        _store(request).add_message,
        who.user_id,
        conv_id,
        body.role,
        body.content,
        body.parent_id,
        body.tool_calls,
    )
    return AddedMessage.model_validate(m, from_attributes=True)


@router.post("/conversations/import", **doc(ImportedConversation, 401))
async def import_conversation(request: HTTPRequest, who: Who) -> ConversationOut:
    """A conversation exported by the web app (GET /api/conversations/{id}); ids are renewed."""
    body = await read_body(request, ImportedConversation)
    st = _store(request)

    def run() -> ConversationOut:
        c = st.create_conversation(who.user_id, body.title, body.settings)
        try:
            return fill(c.id)
        except ChatsmithError:
            st.delete_conversation(who.user_id, c.id)  # no half-imported conversation stays behind
            raise

    def fill(conv_id: str) -> ConversationOut:
        ids: dict[str, str] = {}
        # Parents first: the tree is stored in the order of creation times.
        for m in sorted(body.messages, key=lambda m: m.created_at or 0.0):
            if m.parent_id is not None and m.parent_id not in ids:
                raise ChatsmithError(
                    f"message {m.id!r} names parent {m.parent_id!r}, which comes later or not at all"
                )
            ids[m.id] = new_id()
            st.add_message(
                who.user_id,
                conv_id,
                m.role,
                m.content,
                ids.get(m.parent_id) if m.parent_id else None,
                m.tool_calls,
                created_at=m.created_at or time.time(),
                msg_id=ids[m.id],
            )
        leaf = ids.get(body.current_leaf or "")
        if leaf:
            st.update_conversation(who.user_id, conv_id, current_leaf=leaf)
        conv, msgs = st.conversation(who.user_id, conv_id)
        return ConversationOut.of(conv, msgs)

    return await _run(run)

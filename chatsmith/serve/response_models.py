"""The OpenAI response objects the server sends, as pydantic models (the requests are in protocol.py).

chatsmith defines its own, as vLLM does: `openai` is a test dependency only. The JSON
follows OpenAI's: a field that OpenAI leaves out when it has no value (a message's
`tool_calls`, a chunk's `usage`, the parts of a delta) is listed in `_omit_none` and
dropped when None; every other field is always present, null or not.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer


class ResponseModel(BaseModel):
    """A response object; the fields named in `_omit_none` are left out when None."""

    _omit_none: ClassVar[frozenset[str]] = frozenset()

    # No return annotation: with one, pydantic would publish that type as the output schema.
    @model_serializer(mode="wrap")
    def _drop_empty(self, handler: SerializerFunctionWrapHandler):
        out = handler(self)
        for k in self._omit_none:
            if isinstance(out, dict) and out.get(k, 0) is None:
                del out[k]
        return out


class Usage(ResponseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt: int, completion: int) -> Usage:
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    def __add__(self, other: Usage) -> Usage:
        done = self.completion_tokens + other.completion_tokens
        return Usage.of(self.prompt_tokens + other.prompt_tokens, done)


# -- chat completions -----------------------------------------------------------------------
class TopLogprob(ResponseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(ResponseModel):
    content: list[TokenLogprob]


class FunctionCall(ResponseModel):
    name: str
    arguments: str  # a JSON object, as text


class ToolCall(ResponseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ToolCallDelta(ResponseModel):
    """A whole tool call in one stream chunk; `index` orders the calls of one choice."""

    index: int
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(ResponseModel):
    _omit_none = frozenset({"tool_calls"})
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(ResponseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None
    finish_reason: str | None


class ChatCompletion(ResponseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class ChatDelta(ResponseModel):
    _omit_none = frozenset({"role", "content", "tool_calls"})
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(ResponseModel):
    index: int
    delta: ChatDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(ResponseModel):
    _omit_none = frozenset({"usage"})
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    system_fingerprint: str | None = None
    usage: Usage | None = None  # only in the last chunk, with stream_options.include_usage


# -- legacy completions ---------------------------------------------------------------------
class CompletionLogprobs(ResponseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(ResponseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class Completion(ResponseModel):
    """A whole text completion, or one chunk of a streamed one (which has no `usage`)."""

    _omit_none = frozenset({"usage"})
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


# -- models, tokens, errors -----------------------------------------------------------------
class ModelCard(ResponseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "chatsmith"
    max_model_len: int  # vLLM's extension


class ModelList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeResponse(ResponseModel):
    count: int
    max_model_len: int
    tokens: list[int]


class DetokenizeResponse(ResponseModel):
    prompt: str


class Health(BaseModel):
    """/health: "ok" with the engine's counters, "loading", or "error" with the reason."""

    model_config = ConfigDict(extra="allow")
    status: Literal["ok", "loading", "error"]
    error: str | None = None


class ErrorInfo(ResponseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(ResponseModel):
    error: ErrorInfo


class StreamError(ResponseModel):
    """An error inside a stream that already sent its 200: message and type only."""

    class Info(ResponseModel):
        message: str
        type: str

    error: Info

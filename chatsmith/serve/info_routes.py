"""The small endpoints: /health, /metrics, the model list, /tokenize and /detokenize."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from chatsmith.serve.context import caller, ctx_of
from chatsmith.serve.convert import check_model, conversation
from chatsmith.serve.errors import APIError
from chatsmith.serve.openai_routes import read_body
from chatsmith.serve.openapi import doc
from chatsmith.serve.protocol import ChatRequest, DetokenizeRequest, TokenizeRequest
from chatsmith.serve.response_models import (
    DetokenizeResponse,
    Health,
    ModelCard,
    ModelList,
    TokenizeResponse,
)
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import encode_prompt, render_with_controls

router = APIRouter()


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "The model is loading, or failed to load"}},
)
async def health(request: HTTPRequest) -> Response:
    b = ctx_of(request).backend
    if b.error:
        return JSONResponse({"status": "error", "error": b.error}, status_code=503)
    if not b.ready:
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "2"})
    return JSONResponse({"status": "ok", **b.stats()})


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: HTTPRequest) -> Response:
    return Response(ctx_of(request).metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/v1/models", dependencies=[Depends(caller)], **doc(None, 401, 503))
async def models(request: HTTPRequest) -> ModelList:
    ctx = ctx_of(request)
    ctx.ensure_ready()
    b = ctx.backend
    return ModelList(data=[ModelCard(id=b.name, created=b.created, max_model_len=b.context_length)])


@router.get("/v1/models/{model_id}", dependencies=[Depends(caller)], **doc(None, 401, 404, 503))
async def model(request: HTTPRequest, model_id: str) -> ModelCard:
    card = (await models(request)).data[0]
    if model_id != card.id:
        raise APIError(404, f"The model `{model_id}` does not exist", param="model", code="model_not_found")
    return card


@router.post("/tokenize", dependencies=[Depends(caller)], **doc(TokenizeRequest, 401, 404, 503))
async def tokenize(request: HTTPRequest) -> TokenizeResponse:
    req = await read_body(request, TokenizeRequest)
    c = ctx_of(request)
    c.ensure_ready()
    check_model(c.backend, req.model)
    ids = await run_in_threadpool(_tokens, c.backend.tok, req)
    return TokenizeResponse(count=len(ids), max_model_len=c.backend.context_length, tokens=ids)


def _tokens(tok: BPETokenizer, req: TokenizeRequest) -> list[int]:
    """Templating and tokenizing: CPU work, run on a worker thread."""
    if req.messages is not None:
        msgs = conversation(ChatRequest(messages=req.messages))
        if req.add_generation_prompt:
            return encode_prompt(tok, msgs)
        text, _, controls = render_with_controls(msgs)
        return tok.encode_with_controls(text, controls)
    if req.prompt is not None:
        return tok.encode(req.prompt)
    raise APIError(400, "send `prompt` or `messages`", param="prompt")


@router.post("/detokenize", dependencies=[Depends(caller)], **doc(DetokenizeRequest, 401, 503))
async def detokenize(request: HTTPRequest) -> DetokenizeResponse:
    req = await read_body(request, DetokenizeRequest)
    c = ctx_of(request)
    c.ensure_ready()
    tok = c.backend.tok
    if any(not 0 <= t < tok.vocab_size for t in req.tokens):
        raise APIError(400, f"token ids must be in [0, {tok.vocab_size})", param="tokens")
    return DetokenizeResponse(prompt=tok.decode(req.tokens))

"""The FastAPI application: middleware, error handlers, small endpoints, and the routers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatsmith.common.log import warn
from chatsmith.serve import openai_routes, web_routes
from chatsmith.serve.context import ServerContext, caller, ctx_of
from chatsmith.serve.errors import APIError, error_body
from chatsmith.serve.openai_routes import read_body
from chatsmith.serve.protocol import DetokenizeRequest, TokenizeRequest

STATIC = Path(__file__).parent / "static"
ENDPOINTS = {"/v1/chat/completions", "/v1/completions", "/v1/models"}


class BodyLimit:
    """413 for a body over the limit, decided from Content-Length when sent, else while reading."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.limit:
                return await self._too_large(send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise APIError(413, self._message(), code="request_too_large")
            return msg

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"the request body is larger than this server's limit of {self.limit} bytes (--max-body-mb)"

    async def _too_large(self, send: Send) -> None:
        await JSONResponse(error_body(413, self._message(), code="request_too_large"), status_code=413)(
            {"type": "http"}, _no_receive, send
        )


class CountRequests:
    """Requests per endpoint and status, for /metrics. Plain ASGI (not BaseHTTPMiddleware),
    so a client's disconnect still reaches a streaming response and cancels its generation."""

    def __init__(self, app: ASGIApp, ctx: ServerContext) -> None:
        self.app, self.ctx = app, ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/v1/"):
            return await self.app(scope, receive, send)

        async def counted(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                # Unknown paths share one label, so a scanner cannot grow the metric without bound.
                label = path if path in ENDPOINTS else "other"
                self.ctx.metrics.requests.labels(label, str(msg["status"])).inc()
            await send(msg)

        await self.app(scope, receive, counted)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def create_app(ctx: ServerContext, static_dir: Path | None = None) -> FastAPI:
    app = FastAPI(title="chatsmith", docs_url="/docs", redoc_url=None, openapi_url="/openapi.json")
    app.state.ctx = ctx
    app.add_middleware(BodyLimit, limit=ctx.max_body_bytes)

    app.add_middleware(CountRequests, ctx=ctx)

    @app.exception_handler(APIError)
    async def api_error(_r: HTTPRequest, e: APIError) -> Response:
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_r: HTTPRequest, e: RequestValidationError) -> Response:
        err = e.errors()[0] if e.errors() else {"msg": "invalid request", "loc": ()}
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        return JSONResponse(error_body(400, f"{loc}: {err.get('msg')}", param=loc or None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_r: HTTPRequest, e: StarletteHTTPException) -> Response:
        return JSONResponse(error_body(e.status_code, str(e.detail)), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def bug(_r: HTTPRequest, e: Exception) -> Response:
        warn(f"internal error: {type(e).__name__}: {e}")
        return JSONResponse(error_body(500, "internal server error", code="internal_error"), status_code=500)

    @app.get("/health")
    async def health() -> Response:
        b = ctx.backend
        if b.error:
            return JSONResponse({"status": "error", "error": b.error}, status_code=503)
        if not b.ready:
            return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "2"})
        return JSONResponse({"status": "ok", **b.stats()})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", dependencies=[Depends(caller)])
    async def models() -> dict[str, Any]:
        ctx.ensure_ready()
        b = ctx.backend
        card = {"id": b.name, "object": "model", "created": b.created, "owned_by": "chatsmith"}
        return {"object": "list", "data": [{**card, "max_model_len": b.context_length}]}

    @app.get("/v1/models/{model_id}", dependencies=[Depends(caller)])
    async def model(model_id: str) -> dict[str, Any]:
        listed = (await models())["data"]
        if model_id != listed[0]["id"]:
            raise APIError(
                404, f"The model `{model_id}` does not exist", param="model", code="model_not_found"
            )
        return listed[0]

    @app.post("/tokenize", dependencies=[Depends(caller)])
    async def tokenize(request: HTTPRequest) -> dict[str, Any]:
        from chatsmith.serve.convert import check_model, conversation
        from chatsmith.serve.protocol import ChatRequest
        from chatsmith.tokenizer.chat_format import encode_prompt, render

        req = await read_body(request, TokenizeRequest)
        c = ctx_of(request)
        c.ensure_ready()
        check_model(c.backend, req.model)
        tok = c.backend.tok
        if req.messages is not None:
            msgs = conversation(ChatRequest(messages=req.messages))
            ids = encode_prompt(tok, msgs) if req.add_generation_prompt else tok.encode(render(msgs)[0])
        elif req.prompt is not None:
            ids = tok.encode(req.prompt)
        else:
            raise APIError(400, "send `prompt` or `messages`", param="prompt")
        return {"count": len(ids), "max_model_len": c.backend.context_length, "tokens": ids}

    @app.post("/detokenize", dependencies=[Depends(caller)])
    async def detokenize(request: HTTPRequest) -> dict[str, Any]:
        req = await read_body(request, DetokenizeRequest)
        c = ctx_of(request)
        c.ensure_ready()
        tok = c.backend.tok
        if any(not 0 <= t < tok.vocab_size for t in req.tokens):
            raise APIError(400, f"token ids must be in [0, {tok.vocab_size})", param="tokens")
        return {"prompt": tok.decode(req.tokens)}

    app.include_router(openai_routes.router)
    app.include_router(web_routes.router)
    _mount_web(app, static_dir or STATIC)
    return app


def _mount_web(app: FastAPI, static: Path) -> None:
    index = static / "index.html"

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        if not index.is_file():
            msg = "The web app is not built: run `make web` (needs node and npm), then reload."
            return JSONResponse(error_body(404, msg), status_code=404)
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    if (static / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=static / "assets"), name="assets")

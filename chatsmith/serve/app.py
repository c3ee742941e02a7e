"""The FastAPI application: middleware, error handlers, the routers and the web app's files."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatsmith.common.log import warn
from chatsmith.serve import answer_routes, info_routes, openai_routes, web_routes
from chatsmith.serve.context import ServerContext
from chatsmith.serve.errors import APIError, error_body

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
    _add_error_handlers(app)
    app.include_router(info_routes.router)
    app.include_router(openai_routes.router)
    app.include_router(web_routes.router)
    app.include_router(answer_routes.router)
    _mount_web(app, static_dir or STATIC)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error leaves in OpenAI's shape; bad input is a 400, never a 500."""

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

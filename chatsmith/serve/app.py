"""The FastAPI application: middleware, error handlers, the routers and the web app's files."""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatsmith.common.log import warn
from chatsmith.serve import answer_routes, info_routes, openai_routes, openapi, web_routes
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


class JSONOnly:
    """415 for a write whose body is not declared JSON. A page on another site can make the
    browser POST text/plain, form or multipart bodies (or a typeless Blob) without asking
    the server first; a JSON body needs a CORS preflight, which this server never grants."""

    WRITES = frozenset({"POST", "PUT", "PATCH"})

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in self.WRITES:
            ctype = dict(scope.get("headers", [])).get(b"content-type", b"").decode("latin-1")
            kind = ctype.split(";", 1)[0].strip().lower()
            if kind != "application/json" and not kind.endswith("+json"):
                got = ctype or "none"
                msg = f"the request body must be JSON (Content-Type: application/json), not {got!r}"
                body = error_body(415, msg, code="unsupported_media_type")
                return await JSONResponse(body, status_code=415)(scope, _no_receive, send)
        await self.app(scope, receive, send)


class CountRequests:
    """Requests per endpoint and status, for /metrics. Plain ASGI (not BaseHTTPMiddleware),
    so a client's disconnect still reaches a streaming response and cancels its generation."""

    def __init__(self, app: ASGIApp, ctx: ServerContext) -> None:
        self.app, self.ctx = app, ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/v1/"):
            return await self.app(scope, receive, send)

        # Unknown paths share one label, so a scanner cannot grow the metric without bound.
        label = path if path in ENDPOINTS else "other"
        started = False

        async def counted(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
                self.ctx.metrics.requests.labels(label, str(msg["status"])).inc()
            await send(msg)

        try:
            await self.app(scope, receive, counted)
        except Exception:
            # A bug: the error middleware outside answers 500; count it here, where it passes.
            if not started:
                self.ctx.metrics.requests.labels(label, "500").inc()
            raise


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def create_app(ctx: ServerContext, static_dir: Path | None = None) -> FastAPI:
    # No Swagger UI: it loads its scripts from a CDN. /docs is a plain page instead.
    app = FastAPI(title="chatsmith", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.ctx = ctx
    app.add_middleware(JSONOnly)
    app.add_middleware(BodyLimit, limit=ctx.max_body_bytes)
    app.add_middleware(CountRequests, ctx=ctx)
    _add_error_handlers(app)
    app.include_router(info_routes.router)
    app.include_router(openai_routes.router)
    app.include_router(web_routes.router)
    app.include_router(answer_routes.router)
    _mount_web(app, static_dir or STATIC)
    _add_docs(app)
    openapi.install(app)
    return app


def _add_docs(app: FastAPI) -> None:
    """The API's routes as a plain page with a link to the OpenAPI document: no scripts."""

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        rows = []
        for path, ops in app.openapi().get("paths", {}).items():
            for method, op in ops.items():
                summary = html.escape(op.get("summary", ""))
                rows.append(f"<tr><td>{method.upper()}</td><td><code>{html.escape(path)}</code></td>"
                            f"<td>{summary}</td></tr>")
        page = (
            "<!doctype html><meta charset=utf-8><title>chatsmith API</title>"
            "<h1>chatsmith API</h1><p>The OpenAPI document: <a href=/openapi.json>/openapi.json</a> "
            "(load it into any OpenAPI viewer or client generator).</p>"
            f"<table>{''.join(rows)}</table>"
        )
        return HTMLResponse(page)


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

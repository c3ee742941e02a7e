"""What every route shares: the backend, the store, auth, limits and metrics; and the
dependencies that authenticate and rate-limit a request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from fastapi import Request as HTTPRequest
from starlette.concurrency import run_in_threadpool

from chatsmith.serve.auth import Authenticator, AuthError, Caller
from chatsmith.serve.backend import Backend
from chatsmith.serve.errors import APIError
from chatsmith.serve.limits import RateLimiter, retry_after_header
from chatsmith.serve.metrics import Metrics
from chatsmith.serve.store import Store


@dataclass
class ServerContext:
    backend: Backend
    store: Store
    auth: Authenticator
    limiter: RateLimiter
    metrics: Metrics
    max_body_bytes: int = 4 * 1024 * 1024

    def ensure_ready(self) -> None:
        if self.backend.error:
            raise APIError(503, f"the model failed to load: {self.backend.error}", code="model_load_failed")
        if not self.backend.ready:
            raise APIError(
                503, "the model is still loading; retry shortly", code="loading", headers={"Retry-After": "2"}
            )


def ctx_of(request: HTTPRequest) -> ServerContext:
    return request.app.state.ctx


async def caller(request: HTTPRequest) -> Caller:
    """Who sent the request (401 if a key is needed and missing, unknown or revoked)."""
    ctx = ctx_of(request)
    try:
        return await run_in_threadpool(ctx.auth.authenticate, request.headers.get("authorization"))
    except AuthError as e:
        raise APIError(401, str(e), code=e.code, headers={"WWW-Authenticate": "Bearer"}) from None


async def limited_caller(request: HTTPRequest) -> Caller:
    """As `caller`, and counted against the key's requests-per-minute limit (429 when spent)."""
    who = await caller(request)
    wait = ctx_of(request).limiter.check(who.key_id or "local", who.rpm)
    if wait > 0:
        raise APIError(
            429,
            f"rate limit of {who.rpm} requests per minute reached; retry in {wait:.1f} s",
            code="rate_limit_exceeded",
            headers={"Retry-After": retry_after_header(wait)},
        )
    return who


# Route parameters: `who: Who` authenticates, `who: LimitedWho` also applies the rate limit.
Who = Annotated[Caller, Depends(caller)]
LimitedWho = Annotated[Caller, Depends(limited_caller)]

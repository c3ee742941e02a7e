"""The OpenAPI document, as the server really behaves, so client generators and fuzzers can use it.

Routes read their own body (`read_body`: parsed on a worker thread, a 400 that names the
field), so FastAPI cannot see their models; `doc()` describes each route's JSON body from
its pydantic model and lists the errors the route can answer, in OpenAI's error shape.
FastAPI's automatic 422 is never sent here (validation errors are 400s) and is dropped.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from chatsmith.serve.response_models import ErrorResponse

REF = "#/components/schemas/{model}"
ERRORS = {
    400: "Bad request: the body is not valid JSON, or a field is wrong (`error.param` names it)",
    401: "No API key, or an unknown or revoked one (keys are required once one was created)",
    404: "No such model or conversation",
    413: "The body is larger than the server's limit (--max-body-mb)",
    415: "The body is not declared JSON (Content-Type: application/json)",
    429: "The key's requests-per-minute limit is spent; the Retry-After header says when to retry",
    500: "Generation failed inside the engine (a fault of the server, not of the request)",
    503: "The model is loading or failed to load, or the queue is full; see Retry-After",
}
# The HTTP bearer scheme; a server that never had a key also takes requests without one.
SECURITY = [{"bearer": []}, {}]
# Before OpenAPI 3.2 (itemSchema), an event stream's `schema` describes one event.
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string", "description": "A chunk object as JSON (or an error object); "
                 "the last event is `[DONE]`"},
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}


def doc(
    body: type[BaseModel] | None = None, *errors: int, auth: bool = True, stream: str = ""
) -> dict[str, Any]:
    """Keyword arguments for a route decorator: its JSON body (required when given), the error
    statuses it answers (a body adds 400, 413 and 415), bearer auth, and, if `stream` describes
    it, an SSE 200."""
    codes = set(errors) | ({400, 413, 415} if body is not None else set())
    responses: dict[int | str, dict[str, Any]] = {
        c: {"model": ErrorResponse, "description": ERRORS[c]} for c in sorted(codes)
    }
    if stream:
        responses[200] = {"description": stream, "content": {"text/event-stream": {"schema": SSE_EVENT}}}
    extra: dict[str, Any] = {"security": SECURITY} if auth else {}
    if body is not None:
        schema = body.model_json_schema(ref_template=REF)
        extra["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    return {"responses": responses, "openapi_extra": extra}


def install(app: FastAPI) -> None:
    """Replace `app.openapi` with one that builds the document once and finishes it."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
            app.openapi_schema = finish(spec)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def finish(spec: dict[str, Any]) -> dict[str, Any]:
    """Body models and their nested models become components; 422 goes; bearer is declared."""
    comps = spec.setdefault("components", {})
    schemas = comps.setdefault("schemas", {})
    for ops in spec.get("paths", {}).values():
        for op in ops.values():
            op.get("responses", {}).pop("422", None)
            media = op.get("requestBody", {}).get("content", {}).get("application/json")
            if media is not None and "$ref" not in media["schema"]:
                top = dict(media["schema"])
                for name, sub in top.pop("$defs", {}).items():
                    _add(schemas, name, sub)
                _add(schemas, top["title"], top)
                media["schema"] = {"$ref": REF.format(model=top["title"])}
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    comps["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "An API key: `chatsmith keys create`"}
    }
    return spec


def _add(schemas: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    # Two different models of one name would silently describe the wrong body.
    if name in schemas and schemas[name] != schema:
        raise ValueError(f"two OpenAPI schemas are named {name!r}")
    schemas[name] = schema

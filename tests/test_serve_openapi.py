"""/openapi.json describes the server as it is: a request body for every write, and the
error statuses each route really answers (400/401/404/413/415/429/503, never FastAPI's
unused 422). schemathesis then fuzzes the live server from that document alone."""

from __future__ import annotations

import os
from collections import Counter

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis import checks as sc
from schemathesis.core.failures import FailureGroup
from test_serve_helpers import live_server

# Per operation and mode. The default suite stays near a minute; CI or a person can ask for
# a deeper run with CHATSMITH_FUZZ_EXAMPLES=200.
EXAMPLES = int(os.environ.get("CHATSMITH_FUZZ_EXAMPLES", "12"))
CHECKS = [
    sc.not_a_server_error,
    sc.status_code_conformance,
    sc.content_type_conformance,
    sc.response_schema_conformance,
]
WRITES = {"post", "put", "patch"}


@pytest.fixture(scope="module")
def live(tiny_tok, tmp_path_factory):
    with live_server(tiny_tok, tmp_path_factory.mktemp("db") / "o.db", max_body_bytes=256 * 1024) as s:
        yield s


@pytest.fixture(scope="module")
def spec(live) -> dict:
    return httpx.get(live.url + "/openapi.json").json()


def operations(spec: dict):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def test_every_write_documents_its_json_body(spec) -> None:
    schemas = spec["components"]["schemas"]
    writes = [(p, m, op) for p, m, op in operations(spec) if m in WRITES]
    assert len(writes) >= 9
    for path, method, op in writes:
        body = op.get("requestBody")
        assert body and body["required"], f"{method} {path} has no request body"
        ref = body["content"]["application/json"]["schema"]["$ref"]
        name = ref.rsplit("/", 1)[-1]
        assert name in schemas and schemas[name]["type"] == "object", (path, ref)
    chat = schemas["ChatRequest"]
    assert chat["required"] == ["messages"] and chat["properties"]["temperature"]["anyOf"][0]["maximum"] == 2
    assert "ChatMessage" in schemas and "$defs" not in chat  # nested models live in components
    assert schemas["NewMessage"]["properties"]["role"]["enum"] == ["system", "user", "assistant", "tool"]
    assert "FunctionDef" in schemas and "AnswerRequest" in schemas and "ImportedConversation" in schemas


def test_errors_are_documented_as_sent(spec) -> None:
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    for path, method, op in operations(spec):
        codes = set(op["responses"])
        assert "422" not in codes, f"{method} {path} documents 422, which is never sent"
        for c in codes - {"200"}:
            if path != "/health":
                err = op["responses"][c]["content"]["application/json"]["schema"]
                assert err == {"$ref": "#/components/schemas/ErrorResponse"}, (path, c)
        if method in WRITES:
            assert {"400", "413", "415"} <= codes, (method, path, codes)
        if path not in ("/health", "/metrics"):
            assert op["security"] == [{"bearer": []}, {}] and "401" in codes, (method, path)
    by = {(p, m): set(op["responses"]) for p, m, op in operations(spec)}
    assert {"400", "401", "404", "429", "503"} <= by["/v1/chat/completions", "post"]
    assert {"401", "404"} <= by["/api/conversations/{conv_id}", "get"]
    assert by["/health", "get"] == {"200", "503"}
    chat_ok = spec["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(chat_ok) == {"application/json", "text/event-stream"}
    assert chat_ok["text/event-stream"]["schema"]["required"] == ["data"]  # one event, as before 3.2
    assert set(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}


def _fuzz(schema, live, op_id: str, mode: GenerationMode, path_parameters: dict | None, log: dict) -> None:
    op = schema[op_id[1]][op_id[0].upper()]
    strategy = op.as_strategy(generation_mode=mode, path_parameters=path_parameters)
    session = requests.Session()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: every failure is logged as found
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case) -> None:
        resp = case.call(base_url=live.url, session=session, timeout=120)
        log["requests"] += 1
        log["status"][resp.status_code] += 1
        try:
            case.validate_response(resp, checks=CHECKS)
        except (AssertionError, FailureGroup) as e:  # collected: one run reports every failure
            log["failures"].append(f"{op_id[0].upper()} {op_id[1]} [{mode.value}]: {str(e)[:3000]}")

    try:
        run()
    except Unsatisfiable:
        # Only a string query or path parameter: no value breaks the document's rules.
        assert mode == GenerationMode.NEGATIVE, op_id


def test_schemathesis_finds_no_5xx_and_no_undocumented_status(live, spec) -> None:
    schema = schemathesis.openapi.from_dict(spec)
    conv = httpx.post(live.url + "/api/conversations", json={"title": "fuzz"}).json()["id"]
    httpx.post(live.url + f"/api/conversations/{conv}/messages", json={"role": "user", "content": "Hi"})
    log: dict = {"requests": 0, "failures": [], "status": Counter()}
    ops = [(m, p, bool(op.get("parameters") or op.get("requestBody"))) for p, m, op in operations(spec)]
    # A conversation that exists, so the fuzzer gets past "404 no such conversation" too;
    # DELETE goes last, as it removes it.
    ops.sort(key=lambda o: o[0] == "delete")
    for method, path, has_input in ops:
        # Negative cases break the document's rules (wrong types, missing fields, out of range).
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)[: 1 + has_input]:
            _fuzz(schema, live, (method, path), mode, None, log)
            if "{conv_id}" in path:
                _fuzz(schema, live, (method, path), mode, {"conv_id": conv}, log)
    print(f"schemathesis: {log['requests']} requests, {len(ops)} operations, "
          f"checks: {', '.join(c.__name__ for c in CHECKS)}; {len(log['failures'])} failures; "
          f"statuses: {dict(sorted(log['status'].items()))}")
    assert log["requests"] >= len(ops) * EXAMPLES
    assert not log["failures"], "\n".join(log["failures"][:20])

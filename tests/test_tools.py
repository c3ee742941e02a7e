"""Tests for the built-in tools: safe calculator, letter counter, registry and dispatcher."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatsmith.engine.tools import TOOLS, calculator, count_letters, openai_tool_schemas, run_tool


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("37 * 41", "1517"),
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("2 ** 3 ** 2", "512"),
        ("-3 * 4", "-12"),
        ("-(2 + 3)", "-5"),
        ("+5 - -2", "7"),
        ("7 / 2", "3.5"),
        ("4 / 2", "2"),
        ("7 // 2", "3"),
        ("7 % 3", "1"),
        ("1 / 3", "0.3333333333"),
        ("0.1 + 0.2", "0.3"),
        ("2 ** -1", "0.5"),
        ("2 ^ 10", "1024"),
        ("37 x 41", "1517"),
        ("37x41", "1517"),
        ("37 × 41", "1517"),
        ("10 ÷ 4", "2.5"),
        ("  12  ", "12"),
    ],
)
def test_calculator_values(expression: str, expected: str) -> None:
    assert calculator(expression) == expected


@pytest.mark.parametrize("expression", ["1 / 0", "1 // 0", "5 % 0", "1.5 / 0.0", "0 ** -1"])
def test_division_by_zero_refused(expression: str) -> None:
    assert calculator(expression) == "error: division by zero"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os')", "function calls"),
        ("(1).__class__", "attributes"),
        ("9**9**9", "exponent too large"),
        ("10**10**10", "exponent too large"),
        ("'a'*3", "strings"),
        ("[1,2][0]", "subscripts"),
        ("lambda: 1", "lambdas"),
        ("a + 1", "names"),
        ("1 < 2", "comparisons"),
        ("True + 1", "bool"),
        ("1j * 2", "complex"),
        ("[i for i in (1, 2)]", "ListComp"),
        ("max x 2", "invalid syntax"),
        ("1 & 3", "operator"),
        ("1+" * 5000 + "1", "expression too long (10001 > 200 characters)"),
        ("(" * 1000 + "1" + ")" * 1000, "too long"),
        ("(" * 60 + "1" + ")" * 60, "nested"),
        ("2**1000", "exponent too large"),
        ("99**100", "more than 100 digits"),
        ("10**99 * 10**2", "more than 100 digits"),
        ("1" * 150, "more than 100 digits"),
        ("1e308 * 10", "too large"),
        ("10000000 ** 2", "base too large"),
        ("(-8) ** 0.5", "complex"),
        ("1,000 + 1", "thousands separators"),
        ("0x1f", "hex"),
        ("", "empty"),
        ("1 +", "invalid syntax"),
        ("import os", "invalid syntax"),
    ],
)
def test_calculator_refusals_are_fast_strings(expression: str, message: str) -> None:
    start = time.monotonic()
    result = calculator(expression)
    assert time.monotonic() - start < 1.0
    assert result.startswith("error: ")
    assert message in result


def test_calculator_non_string_refused() -> None:
    assert calculator(42).startswith("error: ")  # type: ignore[arg-type]


def test_calculator_allows_long_flat_chain_within_limit() -> None:
    assert calculator("1+" * 99 + "1") == "100"


@settings(max_examples=200, deadline=None)
@given(a=st.integers(-999, 999), b=st.integers(-999, 999), op=st.sampled_from(["+", "-", "*"]))
def test_calculator_matches_python_on_small_ints(a: int, b: int, op: str) -> None:
    expected = {"+": a + b, "-": a - b, "*": a * b}[op]
    assert calculator(f"{a} {op} {b}") == str(expected)


def test_count_letters() -> None:
    assert count_letters("strawberry", "r") == "3"
    assert count_letters("Mississippi", "S") == "4"
    assert count_letters("Banana", "b") == "1"
    assert count_letters("", "a") == "0"


@pytest.mark.parametrize(
    ("word", "letter"),
    [("strawberry", ""), ("strawberry", "rr"), ("a" * 101, "a"), (None, "a"), ("word", 1)],
)
def test_count_letters_refusals(word: object, letter: object) -> None:
    assert count_letters(word, letter).startswith("error: ")  # type: ignore[arg-type]


def test_run_tool_dispatches_dict_and_json_arguments() -> None:
    assert run_tool("calculator", {"expression": "37 * 41"}) == "1517"
    assert run_tool("count_letters", json.dumps({"word": "strawberry", "letter": "r"})) == "3"


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("shell", {"cmd": "ls"}, "unknown tool"),
        (None, {}, "unknown tool"),
        ("calculator", {}, "missing argument"),
        ("count_letters", {"word": "abc"}, "missing argument(s): letter"),
        ("calculator", {"expression": "1", "extra": "2"}, "unexpected argument(s): extra"),
        ("calculator", ["1 + 1"], "must be an object"),
        ("calculator", None, "must be an object"),
        ("calculator", "not json", "not valid JSON"),
        ("calculator", '"1 + 1"', "must be an object"),
        ("calculator", {"expression": 5}, "must be strings"),
    ],
)
def test_run_tool_refusals(name: object, arguments: object, message: str) -> None:
    result = run_tool(name, arguments)  # type: ignore[arg-type]
    assert result.startswith("error: ")
    assert message in result


def test_run_tool_returns_tool_errors_as_strings() -> None:
    assert run_tool("calculator", {"expression": "1 / 0"}) == "error: division by zero"


def test_openai_tool_schemas_shape() -> None:
    schemas = openai_tool_schemas()
    assert [s["function"]["name"] for s in schemas] == list(TOOLS)
    by_name = {s["function"]["name"]: s for s in schemas}
    assert set(by_name) == {"calculator", "count_letters"}
    for schema in schemas:
        assert schema["type"] == "function"
        assert set(schema["function"]) == {"name", "description", "parameters"}
        params = schema["function"]["parameters"]
        assert params["type"] == "object"
        assert all(prop["type"] == "string" for prop in params["properties"].values())
    assert by_name["calculator"]["function"]["parameters"]["required"] == ["expression"]
    assert by_name["count_letters"]["function"]["parameters"]["required"] == ["word", "letter"]
    # Returned schemas are copies: mutating them must not change the registry.
    schemas[0]["function"]["parameters"]["required"].append("bogus")
    assert "bogus" not in TOOLS[schemas[0]["function"]["name"]].parameters["required"]

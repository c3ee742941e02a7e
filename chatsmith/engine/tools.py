"""Built-in tools the model can call during generation.

Tool calls come from a language model, so every input is treated as untrusted:
the calculator walks the parsed syntax tree itself (never ``eval``), every
resource it could burn is bounded, and no public function here raises. A
refusal is a short string starting with ``"error: "`` that goes back into the
conversation, so the model can read it and recover.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import operator
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_EXPR_LEN = 200
MAX_PAREN_DEPTH = 50
MAX_EXPONENT = 100
MAX_POW_BASE = 1e6
MAX_INT_DIGITS = 100
MAX_SECONDS = 1.0
MAX_WORD_LEN = 100

_BIG_INT = 10**MAX_INT_DIGITS  # abs(value) >= this means more than MAX_INT_DIGITS digits
_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
# Names for the refusals a model is most likely to trigger; anything else uses the node's class name.
_REFUSED = {
    ast.Name: "names",
    ast.Attribute: "attributes",
    ast.Call: "function calls",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambdas",
    ast.Compare: "comparisons",
}
_THOUSANDS = re.compile(r"\d,\d{3}(?!\d)")
_RADIX = re.compile(r"(?<![\w.])0[xXoObB]\w")
# "x" only counts as multiplication between operands, so names such as "max" stay intact (and are refused).
_TIMES_X = re.compile(r"(?<=[\d.)])\s*[xX]\s*(?=[\d.(+\-])")


class _Refused(Exception):
    """Internal signal carrying a refusal message; never escapes this module."""


def _check_number(value: int | float) -> int | float:
    if isinstance(value, int) and abs(value) >= _BIG_INT:
        raise _Refused(f"result has more than {MAX_INT_DIGITS} digits")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Refused("result is too large (not a finite number)")
    return value


def _power(base: int | float, exp: int | float) -> int | float:
    # Checked before computing: a huge power is slow to build even if it is refused afterwards.
    if abs(exp) > MAX_EXPONENT:
        raise _Refused("exponent too large")
    if abs(base) > MAX_POW_BASE and exp not in (0, 1):
        raise _Refused("base too large for exponentiation")
    result = base**exp
    if isinstance(result, complex):
        raise _Refused("complex results are not supported")
    return result


def _walk(node: ast.AST, depth: int, deadline: float) -> int | float:
    # The depth guard cannot trigger within MAX_EXPR_LEN (each level costs a character); it keeps the
    # recursion safe should the length limit ever be raised.
    if depth > MAX_EXPR_LEN:
        raise _Refused("expression nested too deeply")
    if time.monotonic() > deadline:
        raise _Refused("expression took too long")
    if isinstance(node, ast.Constant):
        if type(node.value) not in (int, float):  # type() rather than isinstance: rejects bool too
            kind = "strings" if isinstance(node.value, str) else f"{type(node.value).__name__} literals"
            raise _Refused(f"{kind} are not allowed")
        return _check_number(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _walk(node.operand, depth + 1, deadline)
        return _check_number(-value if isinstance(node.op, ast.USub) else value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left = _walk(node.left, depth + 1, deadline)
        right = _walk(node.right, depth + 1, deadline)
        if isinstance(node.op, ast.Pow):
            return _check_number(_power(left, right))
        return _check_number(_BINOPS[type(node.op)](left, right))
    if isinstance(node, (ast.UnaryOp, ast.BinOp)):
        raise _Refused(f"operator {type(node.op).__name__} is not allowed")
    what = _REFUSED.get(type(node), f"{type(node).__name__} expressions")
    raise _Refused(f"{what} are not allowed")


def _format_number(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:  # 4/2 reads better as "2" than "2.0"
        return str(int(value))
    return format(value, ".10g")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression; return the result or an ``"error: ..."`` string."""
    try:
        if not isinstance(expression, str):
            return "error: expression must be a string"
        if len(expression) > MAX_EXPR_LEN:  # before any parsing: parse cost grows with length
            return f"error: expression too long ({len(expression)} > {MAX_EXPR_LEN} characters)"
        expr = expression.strip()
        if not expr:
            return "error: empty expression"
        if _THOUSANDS.search(expr):
            return "error: commas as thousands separators are not supported (write 1000, not 1,000)"
        if _RADIX.search(expr):
            return "error: hex, octal and binary literals are not supported"
        expr = expr.replace("×", "*").replace("÷", "/").replace("−", "-").replace("^", "**")
        expr = _TIMES_X.sub(" * ", expr)
        depth = 0
        for char in expr:
            depth += (char == "(") - (char == ")")
            if depth > MAX_PAREN_DEPTH:
                return f"error: too deeply nested (more than {MAX_PAREN_DEPTH} parentheses)"
        try:
            tree = ast.parse(expr, mode="eval")
        except (SyntaxError, ValueError):
            return "error: invalid syntax"
        return _format_number(_walk(tree.body, 0, time.monotonic() + MAX_SECONDS))
    except _Refused as exc:
        return f"error: {exc}"
    except ZeroDivisionError:
        return "error: division by zero"
    except OverflowError:
        return "error: result is too large"
    except Exception as exc:  # the model must always get an answer, never a crash
        return f"error: could not evaluate ({type(exc).__name__})"


def count_letters(word: str, letter: str) -> str:
    """Count case-insensitive occurrences of ``letter`` in ``word``; return it as a decimal string."""
    if not isinstance(word, str) or not isinstance(letter, str):
        return "error: word and letter must be strings"
    if len(letter) != 1:
        return f"error: letter must be exactly one character (got {len(letter)})"
    if len(word) > MAX_WORD_LEN:
        return f"error: word too long ({len(word)} > {MAX_WORD_LEN} characters)"
    # Compare per character: lowering the whole word can change its length (e.g. "İ" -> "i̇").
    target = letter.lower()
    return str(sum(1 for char in word if char.lower() == target))


@dataclass(frozen=True)
class ToolSpec:
    """One callable tool: its OpenAI-style description and the function that implements it."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., str]


def _string_params(**descriptions: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {key: {"type": "string", "description": text} for key, text in descriptions.items()},
        "required": list(descriptions),
        "additionalProperties": False,
    }


TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec(
            name="calculator",
            description="Evaluate an arithmetic expression with + - * / // % ** and parentheses.",
            parameters=_string_params(expression="Arithmetic expression, e.g. '37 * 41'."),
            fn=calculator,
        ),
        ToolSpec(
            name="count_letters",
            description="Count how many times a letter occurs in a word (case-insensitive).",
            parameters=_string_params(word="The word to search.", letter="A single character to count."),
            fn=count_letters,
        ),
    )
}


def run_tool(name: str, arguments: object) -> str:
    """Run tool ``name`` with ``arguments`` (a dict or a JSON object string); never raises."""
    try:
        spec = TOOLS.get(name) if isinstance(name, str) else None
        if spec is None:
            return f"error: unknown tool {name!r} (available: {', '.join(sorted(TOOLS))})"
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return "error: arguments are not valid JSON"
        if not isinstance(arguments, dict):
            return f"error: arguments must be an object, got {type(arguments).__name__}"
        required = set(spec.parameters["required"])
        if missing := sorted(required - arguments.keys()):
            return f"error: missing argument(s): {', '.join(missing)}"
        if extra := sorted(map(str, arguments.keys() - required)):
            return f"error: unexpected argument(s): {', '.join(extra)}"
        if bad := sorted(key for key, value in arguments.items() if not isinstance(value, str)):
            return f"error: argument(s) must be strings: {', '.join(bad)}"
        return str(spec.fn(**arguments))
    except Exception as exc:  # a tool bug must not take down generation
        return f"error: tool {name!r} failed ({type(exc).__name__})"


def openai_tool_schemas() -> list[dict[str, Any]]:
    """Describe every tool in OpenAI function-calling format (copies, so callers cannot alter TOOLS)."""
    return [
        {
            "type": "function",
            "function": {
                "name": spec.name,
                "description": spec.description,
                "parameters": copy.deepcopy(spec.parameters),
            },
        }
        for spec in TOOLS.values()
    ]

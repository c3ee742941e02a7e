"""Client tool definitions in the system turn: `with_tools` + `render` equals CHAT_TEMPLATE with `tools`."""

from __future__ import annotations

import json

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from chatsmith.tokenizer.chat_format import CHAT_TEMPLATE, render, with_tools

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city, e.g. 北京",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {"type": "function", "function": {"name": "now", "description": "<time> & 'date'"}},
]


def _template():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False)
    return env.from_string(CHAT_TEMPLATE)


CASES = {
    "no_system": [{"role": "user", "content": "Weather in Paris?"}],
    "system": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}],
    "round_trip": [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "content": '{"temp_c": 21}'},
        {"role": "assistant", "content": "21 °C."},
    ],
}


@pytest.mark.parametrize("gen", [False, True])
@pytest.mark.parametrize("name", list(CASES))
def test_tools_render_equals_template(name: str, gen: bool) -> None:
    msgs = CASES[name]
    expected, _ = render(with_tools(msgs, TOOLS), add_generation_prompt=gen)
    assert _template().render(messages=msgs, tools=TOOLS, add_generation_prompt=gen) == expected
    assert "<tools>\n" + json.dumps(TOOLS[0], ensure_ascii=False) in expected
    assert expected.startswith("<|im_start|>system\n" + ("Be brief.\n\n" if name == "system" else "# Tools"))


def test_without_tools_nothing_changes() -> None:
    msgs = CASES["system"]
    assert with_tools(msgs, None) is msgs
    assert _template().render(messages=msgs) == render(msgs)[0]

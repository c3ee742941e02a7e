"""Tests for the chat format (chatsmith.tokenizer.chat_format): rendering, the loss mask token by
token, prompts for generation, tool responses, validation and the exported Jinja template."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from chatsmith.common.errors import ChatsmithError
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import (
    CHAT_TEMPLATE,
    GENERATION_PROMPT,
    encode_conversation,
    encode_prompt,
    render,
    tool_call_text,
    tool_response_ids,
    tool_results_ids,
    validate,
)
from chatsmith.tokenizer.special import (
    IM_END,
    IM_START,
    TOOL_CALL,
    TOOL_CALL_END,
    TOOL_RESPONSE,
    TOOL_RESPONSE_END,
)

CALC_CALL = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "37 * 41"}}}
CALC_BLOCK = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "37 * 41"}}\n</tool_call>'

CONV: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "What is 37 * 41?"},
    {"role": "assistant", "content": "", "tool_calls": [CALC_CALL]},
    {"role": "tool", "content": "1517"},
    {"role": "assistant", "content": "37 * 41 = 1517."},
]

CONV_TEXT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nHi!<|im_end|>\n"
    "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
    "<|im_start|>user\nWhat is 37 * 41?<|im_end|>\n"
    "<|im_start|>assistant\n" + CALC_BLOCK + "<|im_end|>\n"
    "<|im_start|>user\n<tool_response>\n1517\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n37 * 41 = 1517.<|im_end|>\n"
)

# The same conversation cut where the pre-tokenizer cuts anyway, with the loss mask by hand.
CONV_SEGMENTS: list[tuple[str, int]] = [
    ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n", 0),
    ("<|im_start|>user\nHi!<|im_end|>\n", 0),
    ("<|im_start|>assistant", 0),
    ("\n", 0),
    ("Hello! How can I help?", 1),
    ("<|im_end|>", 1),
    ("\n", 0),
    ("<|im_start|>user\nWhat is 37 * 41?<|im_end|>\n", 0),
    ("<|im_start|>assistant", 0),
    ("\n", 0),
    ("<tool_call>", 1),
    ('\n{"name": "calculator", "arguments": {"expression": "37 * 41"}}\n', 1),
    ("</tool_call>", 1),
    ("<|im_end|>", 1),
    ("\n", 0),
    ("<|im_start|>user\n<tool_response>\n1517\n</tool_response><|im_end|>\n", 0),
    ("<|im_start|>assistant", 0),
    ("\n", 0),
    ("37 * 41 = 1517.", 1),
    ("<|im_end|>", 1),
    ("\n", 0),
]


# ---- render ---------------------------------------------------------------------------------


def test_render_text_and_spans() -> None:
    text, spans = render(CONV)
    assert text == CONV_TEXT
    assert "".join(s for s, _ in CONV_SEGMENTS) == CONV_TEXT
    assert [text[a:b] for a, b in spans] == [
        "Hello! How can I help?<|im_end|>",
        CALC_BLOCK + "<|im_end|>",
        "37 * 41 = 1517.<|im_end|>",
    ]
    gen_text, gen_spans = render(CONV, add_generation_prompt=True)
    assert gen_text == CONV_TEXT + "<|im_start|>assistant\n"
    assert gen_spans == spans


def test_render_assistant_variants() -> None:
    call = {"name": "f", "arguments": {"x": 1}}
    assert render([{"role": "assistant", "content": "hi"}])[0] == "<|im_start|>assistant\nhi<|im_end|>\n"
    assert render([{"role": "assistant", "content": ""}])[0] == "<|im_start|>assistant\n<|im_end|>\n"
    assert render([{"role": "assistant", "content": None}])[0] == "<|im_start|>assistant\n<|im_end|>\n"
    assert render([{"role": "assistant", "content": "ok", "tool_calls": [call]}])[0] == (
        "<|im_start|>assistant\nok\n"
        '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call><|im_end|>\n'
    )
    # Arguments as a JSON string (OpenAI's wire format) go in verbatim, not quoted again.
    as_string = {"function": {"name": "f", "arguments": '{"x": 1}'}}
    assert (
        render([{"role": "assistant", "tool_calls": [as_string]}])[0]
        == render([{"role": "assistant", "tool_calls": [call]}])[0]
    )
    assert (
        tool_call_text("f", {"w": "中文"})
        == '<tool_call>\n{"name": "f", "arguments": {"w": "中文"}}\n</tool_call>'
    )


def test_two_tool_messages_render_into_one_user_turn() -> None:
    msgs = [
        {"role": "user", "content": "Compute two things."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                CALC_CALL,
                {"function": {"name": "calculator", "arguments": {"expression": "2 + 2"}}},
            ],
        },
        {"role": "tool", "content": "1517"},
        {"role": "tool", "content": "4"},
    ]
    text, _ = render(msgs)
    assert text.endswith(
        "<|im_start|>user\n<tool_response>\n1517\n</tool_response>\n<tool_response>\n4\n</tool_response><|im_end|>\n"
    )
    assert text.count("<|im_start|>user") == 2
    assert text.count(IM_END) == 3


# ---- the loss mask, token by token ------------------------------------------------------------


def _positions(ids: list[int], tid: int) -> list[int]:
    return [k for k, i in enumerate(ids) if i == tid]


def test_mask_matches_hand_made_segments(tiny_tok: BPETokenizer) -> None:
    ids, mask = encode_conversation(tiny_tok, CONV)
    expected_ids: list[int] = []
    expected_mask: list[int] = []
    for seg, trained in CONV_SEGMENTS:
        seg_ids = tiny_tok.encode(seg)
        expected_ids += seg_ids
        expected_mask += [trained] * len(seg_ids)
    assert ids == expected_ids
    assert mask == expected_mask


def test_mask_token_by_token(tiny_tok: BPETokenizer) -> None:
    tok = tiny_tok
    ids, mask = encode_conversation(tok, CONV)
    assert len(ids) == len(mask)
    assert set(mask) == {0, 1}
    assert ids == tok.encode(CONV_TEXT)
    assert tok.decode(ids) == CONV_TEXT

    im_start, im_end = tok.token_id(IM_START), tok.token_id(IM_END)
    nl = tok.encode("\n")
    assert len(nl) == 1
    nl_id = nl[0]
    assistant_hdr = tok.encode("assistant")
    starts, ends = _positions(ids, im_start), _positions(ids, im_end)
    assert len(starts) == len(ends) == 7
    turn_roles = []
    for s, e in zip(starts, ends):
        assert s < e
        # Every turn ends with <|im_end|> then "\n", and the "\n" is never trained.
        assert ids[e + 1] == nl_id and mask[e + 1] == 0
        header_end = ids.index(nl_id, s)  # the "\n" after the role
        role = tok.decode(ids[s + 1 : header_end])
        turn_roles.append(role)
        assert mask[s] == 0, "<|im_start|> is never trained"
        assert all(m == 0 for m in mask[s + 1 : header_end]), "the role name is never trained"
        if role == "assistant":
            assert ids[s + 1 : header_end] == assistant_hdr
            assert mask[header_end] == 0, "the newline after the assistant header is not trained"
            assert all(m == 1 for m in mask[header_end + 1 : e]), "assistant content is trained"
            assert mask[e] == 1, "the <|im_end|> that closes an assistant turn is trained"
        else:
            assert all(m == 0 for m in mask[s : e + 2]), f"the {role} turn is not trained"
    # (the tool result comes back in a user turn)
    assert turn_roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]

    # The tool-call turn: <tool_call> ... </tool_call> all trained.
    tc, tc_end = tok.token_id(TOOL_CALL), tok.token_id(TOOL_CALL_END)
    (a,), (b,) = _positions(ids, tc), _positions(ids, tc_end)
    assert a < b
    assert all(m == 1 for m in mask[a : b + 1])
    assert ids[b + 1] == im_end and mask[b + 1] == 1
    assert ids[a - 1] == nl_id and mask[a - 1] == 0  # the header newline before <tool_call>

    # The tool-response turn: <tool_response>, 1517, </tool_response>, <|im_end|> all masked.
    tr, tr_end = tok.token_id(TOOL_RESPONSE), tok.token_id(TOOL_RESPONSE_END)
    (c,), (d,) = _positions(ids, tr), _positions(ids, tr_end)
    assert tok.decode(ids[c : d + 1]) == "<tool_response>\n1517\n</tool_response>"
    assert ids[d + 1] == im_end
    assert all(m == 0 for m in mask[c : d + 2])

    # Exactly the three assistant <|im_end|>s are trained.
    assert [mask[e] for e in ends] == [0, 0, 1, 0, 1, 0, 1]

    # Decoding only the trained tokens gives the assistant contents, tool calls and <|im_end|>s.
    trained = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(trained) == (
        "Hello! How can I help?<|im_end|>" + CALC_BLOCK + "<|im_end|>" + "37 * 41 = 1517.<|im_end|>"
    )
    # The last trained token is the final stop token.
    assert trained[-1] == im_end == tok.im_end_id


def test_mask_tool_call_with_content(tiny_tok: BPETokenizer) -> None:
    msgs = [
        {"role": "user", "content": "数一数 strawberry 里有几个 r"},
        {
            "role": "assistant",
            "content": "我来数一下。",
            "tool_calls": [
                {"function": {"name": "count_letters", "arguments": {"word": "strawberry", "letter": "r"}}}
            ],
        },
        {"role": "tool", "content": "3"},
        {"role": "assistant", "content": "「strawberry」里有 3 个 r。😀"},
    ]
    ids, mask = encode_conversation(tiny_tok, msgs)
    text, _ = render(msgs)
    assert tiny_tok.decode(ids) == text
    trained = tiny_tok.decode([i for i, m in zip(ids, mask) if m])
    assert trained == (
        "我来数一下。\n"
        + tool_call_text("count_letters", {"word": "strawberry", "letter": "r"})
        + IM_END
        + "「strawberry」里有 3 个 r。😀"
        + IM_END
    )


_SAFE_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40).filter(
    # Text that starts with whitespace ending in a newline merges with the header's "\n"
    # under the GPT-4 split pattern (as in every ChatML tokenizer); keep to the normal case.
    lambda s: not re.match(r"\s*[\r\n]", s)
)


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    if draw(st.booleans()):
        msgs.append({"role": "system", "content": draw(_SAFE_TEXT)})
    for _ in range(draw(st.integers(1, 3))):
        msgs.append({"role": "user", "content": draw(_SAFE_TEXT)})
        content = draw(_SAFE_TEXT)
        n_calls = draw(st.integers(0, 2))
        calls = [
            {
                "type": "function",
                "function": {"name": "calculator", "arguments": {"expression": draw(_SAFE_TEXT)}},
            }
            for _ in range(n_calls)
        ]
        msgs.append({"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})})
        if calls:
            msgs += [{"role": "tool", "content": draw(_SAFE_TEXT)} for _ in calls]
            msgs.append({"role": "assistant", "content": draw(_SAFE_TEXT)})
    return msgs


def _trained_text(msgs: list[dict[str, Any]]) -> str:
    out = ""
    for m in msgs:
        if m["role"] != "assistant":
            continue
        blocks = [m["content"]] if m["content"] else []
        blocks += [
            tool_call_text(c["function"]["name"], c["function"]["arguments"]) for c in m.get("tool_calls", [])
        ]
        out += "\n".join(blocks) + IM_END
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msgs=conversations())
def test_mask_properties(tiny_tok: BPETokenizer, msgs: list[dict[str, Any]]) -> None:
    ids, mask = encode_conversation(tiny_tok, msgs)
    text, _ = render(msgs)
    assert tiny_tok.decode(ids) == text
    assert tiny_tok.decode([i for i, m in zip(ids, mask) if m]) == _trained_text(msgs)
    # Training sees exactly the tokens that generation is primed with: for every assistant
    # turn, the prompt up to its header is a prefix of the training ids, the header (and the
    # "\n" before it) is untrained, and the first token after it is trained.
    gp = tiny_tok.encode(GENERATION_PROMPT)
    for k, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        prompt = encode_prompt(tiny_tok, msgs[:k]) if k else gp
        assert ids[: len(prompt)] == prompt
        assert not any(mask[max(0, len(prompt) - len(gp) - 1) : len(prompt)])
        assert mask[len(prompt)] == 1
    assert not any(mask[: len(encode_prompt(tiny_tok, msgs[:1]))])


# ---- prompts and tool responses ------------------------------------------------------------


def test_encode_prompt(tiny_tok: BPETokenizer) -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好"}]
    prompt = encode_prompt(tiny_tok, msgs)
    gp = tiny_tok.encode("<|im_start|>assistant\n")
    assert gp[0] == tiny_tok.token_id(IM_START)
    assert prompt[-len(gp) :] == gp
    assert prompt == encode_conversation(tiny_tok, msgs)[0] + gp
    assert tiny_tok.decode(prompt) == render(msgs, add_generation_prompt=True)[0]


def test_tool_response_ids_continue_a_tool_call(tiny_tok: BPETokenizer) -> None:
    call_turn = CONV[:5]  # ... ends in the assistant's tool call
    assert call_turn[-1]["tool_calls"]
    text, _ = render(call_turn)
    assert text.endswith(IM_END + "\n")
    generated = tiny_tok.encode(text[: -len("\n")])  # what the engine holds when it stops on <|im_end|>
    assert generated[-1] == tiny_tok.im_end_id
    assert generated + tool_response_ids(tiny_tok, "1517") == encode_prompt(tiny_tok, CONV[:6])
    assert (
        tiny_tok.decode(generated + tool_response_ids(tiny_tok, "1517"))
        == render(CONV[:6], add_generation_prompt=True)[0]
    )


def test_tool_response_ids_two_results(tiny_tok: BPETokenizer) -> None:
    """The engine joins several results the way two consecutive tool messages render."""
    call_turn = [
        {"role": "user", "content": "Two sums."},
        {"role": "assistant", "content": "", "tool_calls": [CALC_CALL, CALC_CALL]},
    ]
    generated = tiny_tok.encode(render(call_turn)[0][:-1])
    joined = "\n</tool_response>\n<tool_response>\n".join(["1517", "1517"])
    full = [*call_turn, {"role": "tool", "content": "1517"}, {"role": "tool", "content": "1517"}]
    assert generated + tool_response_ids(tiny_tok, joined) == encode_prompt(tiny_tok, full)


def test_tool_results_ids_token_by_token(tiny_tok: BPETokenizer) -> None:
    """The results of one turn's calls, token by token: one user turn holding a block per
    result, then the next assistant header, as consecutive tool messages render."""
    call_turn = [
        {"role": "user", "content": "Two sums."},
        {"role": "assistant", "content": "", "tool_calls": [CALC_CALL, CALC_CALL]},
    ]
    generated = tiny_tok.encode(render(call_turn)[0][:-1])  # up to the <|im_end|> that stopped it
    full = [*call_turn, {"role": "tool", "content": "1517"}, {"role": "tool", "content": "4"}]
    ids = tool_results_ids(tiny_tok, ["1517", "4"])
    assert generated + ids == encode_prompt(tiny_tok, full)
    tid = tiny_tok.token_id
    nl, user, assistant = (tiny_tok.encode(w) for w in ("\n", "user", "assistant"))
    r1, r2 = tiny_tok.encode("1517"), tiny_tok.encode("4")
    assert ids == [
        *nl, tid(IM_START), *user, *nl,
        tid(TOOL_RESPONSE), *nl, *r1, *nl, tid(TOOL_RESPONSE_END), *nl,
        tid(TOOL_RESPONSE), *nl, *r2, *nl, tid(TOOL_RESPONSE_END),
        tid(IM_END), *nl, tid(IM_START), *assistant, *nl,
    ]  # fmt: skip
    # One result is the single-response form; none is an empty tool turn.
    assert tool_results_ids(tiny_tok, ["1517"]) == tool_response_ids(tiny_tok, "1517")
    assert tool_results_ids(tiny_tok, []) == tool_response_ids(tiny_tok, "")


# ---- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        [],
        None,
        "hello",
        {"role": "user", "content": "hi"},
        [{"content": "no role"}],
        ["not a dict"],
        [{"role": "robot", "content": "beep"}],
        [{"role": "User", "content": "case matters"}],
        [{"role": "user", "content": 42}],
        [{"role": "user", "content": ["a", "list"]}],
        [{"role": "user", "content": "ok"}, {"role": "assistant", "content": {"text": "x"}}],
    ],
)
def test_validate_rejects(bad: Any) -> None:
    with pytest.raises(ChatsmithError):
        validate(bad)
    with pytest.raises(ChatsmithError):
        render(bad)


def test_validate_accepts() -> None:
    assert validate(CONV) is CONV
    validate([{"role": "assistant", "content": None, "tool_calls": [CALC_CALL]}])


def test_tool_call_without_name_raises(tiny_tok: BPETokenizer) -> None:
    bad = [{"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": {}}}]}]
    with pytest.raises(ChatsmithError):
        encode_conversation(tiny_tok, bad)
    for calls in (
        ["calculator"],
        [{"function": {"name": None}}],
        [{"function": "calculator"}],
        [{"name": 3}],
    ):
        with pytest.raises(ChatsmithError):
            render([{"role": "assistant", "tool_calls": calls}])


# ---- the exported Jinja chat template -------------------------------------------------------


def _hf_env() -> ImmutableSandboxedEnvironment:
    """How transformers' `apply_chat_template` compiles a template (tojson without HTML escaping)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False)
    return env


_TEMPLATE = _hf_env().from_string(CHAT_TEMPLATE)

TEMPLATE_CASES: dict[str, list[dict[str, Any]]] = {
    "plain": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there!"}],
    "system": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "and 3+3?"},
    ],
    "chinese": [
        {"role": "user", "content": "人工智能領域知名科學家是谁？"},
        {"role": "assistant", "content": "我是一个助手。"},
    ],
    "tool_call_no_content": CONV,
    "tool_call_null_content": [
        {"role": "user", "content": "37*41?"},
        {"role": "assistant", "content": None, "tool_calls": [CALC_CALL]},
        {"role": "tool", "content": "1517"},
    ],
    "tool_call_with_content": [
        {"role": "user", "content": "How many r in strawberry?"},
        {
            "role": "assistant",
            "content": "Let me count.",
            "tool_calls": [
                {"function": {"name": "count_letters", "arguments": {"word": "strawberry", "letter": "r"}}}
            ],
        },
        {"role": "tool", "content": "3"},
        {"role": "assistant", "content": "There are 3."},
    ],
    "two_calls_two_results": [
        {"role": "user", "content": "Both, please."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                CALC_CALL,
                {
                    "type": "function",
                    "function": {"name": "count_letters", "arguments": {"word": "日本", "letter": "日"}},
                },
            ],
        },
        {"role": "tool", "content": "1517"},
        {"role": "tool", "content": "1"},
        {"role": "assistant", "content": "1517 and 1."},
    ],
    "arguments_as_json_string": [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "f", "arguments": '{"a": [1, 2]}'}}],
        }
    ],
    "flat_tool_call_no_arguments": [{"role": "assistant", "tool_calls": [{"name": "now"}]}],
    "html_and_quotes": [
        {"role": "user", "content": "<b>bold</b> & \"quotes\" 'single' {{ not jinja }} {% raw %}"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "f", "arguments": {"z": "<&>'\"", "a": {"nested": [1, None, True]}}}}
            ],
        },
    ],
    "empty_and_missing_content": [
        {"role": "system", "content": ""},
        {"role": "user", "content": None},
        {"role": "assistant", "content": ""},
        {"role": "user"},
        {"role": "assistant"},
    ],
    "tool_first": [{"role": "tool", "content": "orphan"}, {"role": "user", "content": "hm"}],
    "newlines_and_tabs": [
        {"role": "user", "content": "def f():\n\treturn 1\n"},
        {"role": "assistant", "content": "\n\n  indented\n"},
    ],
}


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("name", list(TEMPLATE_CASES))
def test_chat_template_matches_render(name: str, add_generation_prompt: bool) -> None:
    msgs = TEMPLATE_CASES[name]
    expected, _ = render(msgs, add_generation_prompt=add_generation_prompt)
    assert _TEMPLATE.render(messages=msgs, add_generation_prompt=add_generation_prompt) == expected
    if add_generation_prompt:
        assert expected == render(msgs)[0] + GENERATION_PROMPT


def test_chat_template_without_add_generation_prompt_variable() -> None:
    """transformers always passes it, but other consumers may not: undefined means False."""
    assert _TEMPLATE.render(messages=CONV) == CONV_TEXT


@settings(max_examples=100, deadline=None)
@given(msgs=conversations(), add_generation_prompt=st.booleans())
def test_chat_template_matches_render_random(msgs: list[dict[str, Any]], add_generation_prompt: bool) -> None:
    expected, _ = render(msgs, add_generation_prompt=add_generation_prompt)
    assert _TEMPLATE.render(messages=msgs, add_generation_prompt=add_generation_prompt) == expected

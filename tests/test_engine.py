"""The generation loop's tool handling, driven by a scripted stand-in for the model."""

from __future__ import annotations

import types

import torch

from chatsmith.engine.generate import Generator, parse_tool_call
from chatsmith.engine.sampling import SamplingParams, sample
from chatsmith.tokenizer.chat_format import tool_response_ids


class ScriptedModel(torch.nn.Module):
    """Emits a fixed token script greedily and records every chunk it is fed."""

    def __init__(self, script: list[int], vocab: int) -> None:
        super().__init__()
        self.script, self.vocab, self.fed = list(script), vocab, []
        self.cfg = types.SimpleNamespace(n_layer=1, n_kv_head=1, head_dim=2, vocab_size=vocab, seq_len=2048)
        self.embed_tokens = torch.nn.Embedding(1, 1)
        self.lm_head = torch.nn.Identity()
        self.rope_cos = torch.zeros(4096, 1)

    def hidden_states(self, x: torch.Tensor, meta=None) -> torch.Tensor:
        kv = torch.zeros(x.size(0), 1, x.size(1), 2)  # its one layer's keys and values, (B, G, T, D)
        meta.hand_back(kv, kv)
        self.fed.append(x[0].tolist())
        out = torch.zeros(x.size(0), x.size(1), self.vocab)
        nxt = self.script.pop(0) if self.script else 0
        out[:, -1, nxt] = 1.0
        return out


def run(tok, text_script: str, max_new: int = 200) -> tuple[list, ScriptedModel]:
    ids = tok.encode(text_script)
    model = ScriptedModel(ids, tok.vocab_size)
    gen = Generator(model, tok)  # type: ignore[arg-type]
    events = list(
        gen.stream(
            tok.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
            SamplingParams(max_new_tokens=max_new),
        )
    )
    return events, model


def test_builtin_tool_runs_and_its_result_is_fed_back(tiny_tok) -> None:
    script = (
        '<tool_call>\n{"name": "calculator", "arguments": {"expression": "37 * 41"}}\n</tool_call>'
        "<|im_end|>" + "37 * 41 = 1517.<|im_end|>"
    )
    events, model = run(tiny_tok, script)
    results = [e.text for e in events if e.kind == "tool_result"]
    assert results == ["1517"]
    calls = [e.data for e in events if e.kind == "tool_call"]
    assert calls == [{"name": "calculator", "arguments": {"expression": "37 * 41"}}]
    # The chunk fed after the tool call is exactly <|im_end|> + the chat format's tool turn.
    im_end = tiny_tok.im_end_id
    feed = next(chunk for chunk in model.fed if len(chunk) > 1 and chunk[0] == im_end)
    assert feed == [im_end, *tool_response_ids(tiny_tok, "1517")]
    assert events[-1].kind == "done" and events[-1].data["finish_reason"] == "stop"


def test_malformed_tool_call_is_reported_not_raised(tiny_tok) -> None:
    script = '<tool_call>\n{"name": "calculator", "arguments": {oops}\n</tool_call><|im_end|>Sorry.<|im_end|>'
    events, _ = run(tiny_tok, script)
    results = [e.text for e in events if e.kind == "tool_result"]
    assert len(results) == 1 and results[0].startswith("error: malformed tool call JSON")
    assert events[-1].data["finish_reason"] == "stop"


def test_refused_expression_comes_back_as_an_error_string(tiny_tok) -> None:
    script = (
        '<tool_call>\n{"name": "calculator", "arguments": {"expression": "__import__(\'os\')"}}\n'
        "</tool_call><|im_end|>I cannot.<|im_end|>"
    )
    events, _ = run(tiny_tok, script)
    results = [e.text for e in events if e.kind == "tool_result"]
    assert len(results) == 1 and results[0].startswith("error:")


def test_client_tool_ends_the_turn_with_tool_calls(tiny_tok) -> None:
    script = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'
    events, _ = run(tiny_tok, script)
    done = events[-1]
    assert done.data["finish_reason"] == "tool_calls"
    assert done.data["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert not [e for e in events if e.kind == "tool_result"]


def test_max_new_tokens_stops_with_length(tiny_tok) -> None:
    events, _ = run(tiny_tok, "a b c d e f g h i j k l m n o p", max_new=5)
    assert sum(e.kind == "token" for e in events) == 5
    assert events[-1].data["finish_reason"] == "length"


def test_parse_tool_call() -> None:
    assert parse_tool_call('{"name": "x", "arguments": {"a": 1}}') == ("x", {"a": 1})
    assert parse_tool_call("[1, 2]") == "error: a tool call needs a name"
    assert str(parse_tool_call("{nope")).startswith("error: malformed")


def test_sampling_seed_top_k_top_p() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    greedy = SamplingParams(temperature=0.0)
    assert int(sample(logits, greedy)[0]) == 4
    p = SamplingParams(temperature=1.0, top_k=2)
    draws = {int(sample(logits, p, torch.Generator().manual_seed(s))[0]) for s in range(200)}
    assert draws == {3, 4}
    p = SamplingParams(temperature=1.0, top_p=0.5)  # token 4 alone holds ~64% of the mass
    draws = {int(sample(logits, p, torch.Generator().manual_seed(s))[0]) for s in range(100)}
    assert draws == {4}
    p = SamplingParams(temperature=1.0)
    a = [int(sample(logits, p, torch.Generator().manual_seed(7))[0]) for _ in range(5)]
    b = [int(sample(logits, p, torch.Generator().manual_seed(7))[0]) for _ in range(5)]
    assert a == b


def test_ignore_eos_runs_past_the_end_of_the_turn(tiny_tok) -> None:
    ids = tiny_tok.encode("Hi.<|im_end|>more text here")
    gen = Generator(ScriptedModel(ids, tiny_tok.vocab_size), tiny_tok)  # type: ignore[arg-type]
    events = list(gen.stream([1], SamplingParams(max_new_tokens=len(ids), ignore_eos=True), run_tools=False))
    assert [e.token for e in events if e.kind == "token"] == ids
    assert events[-1].data["finish_reason"] == "length"


def test_extreme_sampling_values_are_greedy_or_refused_never_a_crash() -> None:
    """A temperature too small for float32 means greedy; a near-zero repetition penalty is refused
    (both overflowed the logits and failed the engine step for everyone in the batch)."""
    import pytest

    from chatsmith.common.errors import ChatsmithError

    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    for t in (1e-300, 5e-324, 1e-6):
        p = SamplingParams(temperature=t).validate()
        assert p.greedy and int(sample(logits, p, torch.Generator().manual_seed(0))[0]) == 4
    with pytest.raises(ChatsmithError, match="repetition_penalty"):
        SamplingParams(repetition_penalty=1e-40).validate()


class EveryPositionModel(ScriptedModel):
    """As ScriptedModel, but every position of every row predicts the script's next token:
    all sequences write the same text, one script token per forward."""

    def hidden_states(self, x: torch.Tensor, meta=None) -> torch.Tensor:
        out = super().hidden_states(x, meta)
        out[:] = out[:, -1:]
        return out


def test_tool_turns_ending_in_one_step_are_fed_in_one_forward(tiny_tok) -> None:
    """Two calculator turns that close in the same step get their results in one packed
    forward, while a third sequence leaves in that step; both go on to the same answer."""
    from chatsmith.engine.scheduler import Scheduler
    from chatsmith.engine.sequence import Request

    script = (
        '<tool_call>\n{"name": "calculator", "arguments": {"expression": "37 * 41"}}\n</tool_call>'
        "<|im_end|>" + "37 * 41 = 1517.<|im_end|>"
    )
    model = EveryPositionModel(tiny_tok.encode(script), tiny_tok.vocab_size)
    sched = Scheduler(model, tiny_tok, n_slots=4, max_len=256, prefix_slots=0)  # type: ignore[arg-type]
    prompt = tiny_tok.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    params = SamplingParams(max_new_tokens=100)
    # The first, not allowed to run tools, ends where the others' results are fed: slot 0
    # empties in that step while slots 1 and 2 are being fed.
    reqs = [Request(prompt, params, run_tools=k > 0) for k in range(3)]
    with torch.inference_mode():
        for r in reqs:
            sched.add(r)
        while sched.busy:
            sched.step()
    leaver, *tooled = [r.result()[0] for r in reqs]
    assert leaver.finish_reason == "tool_calls" and not leaver.tool_results
    feed = [tiny_tok.im_end_id, *tool_response_ids(tiny_tok, "1517")]
    assert feed + feed in model.fed  # one forward for both tool turns
    for c in tooled:
        assert c.tool_results == ["1517"] and c.finish_reason == "stop"
        assert c.final_text == "37 * 41 = 1517."


def test_draw_follows_each_rows_distribution_and_never_picks_a_zero() -> None:
    """Inverse-CDF draws: frequencies match the probabilities, a zero-probability token
    (a filtered one) never comes out, and a seeded row draws the same beside other rows."""
    from chatsmith.engine.sampling import draw

    probs = torch.tensor([[0.0, 0.1, 0.0, 0.6, 0.3], [0.5, 0.0, 0.5, 0.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    picks = torch.stack([draw(probs, [g, g]) for _ in range(20_000)])
    for r in range(2):
        freq = torch.bincount(picks[:, r], minlength=5).double() / len(picks)
        assert torch.allclose(freq, probs[r].double(), atol=0.015), (r, freq)
        assert not set(picks[:, r].tolist()) & set((probs[r] == 0).nonzero()[:, 0].tolist())
    alone = [int(draw(probs[:1], [torch.Generator().manual_seed(s)])[0]) for s in range(50)]
    beside = [int(draw(probs, [torch.Generator().manual_seed(s), None])[0]) for s in range(50)]
    assert alone == beside

"""Greedy decoding gives the same tokens whatever else runs or is cached: bf16, compiled.

One request alone, among others, joining at different steps, after a prefix-cache hit and in
any chunking of its prompt must give the same tokens and the same log-probabilities, to the
bit. The model has plain (not peaky) weights, so its top logits are close and any change in
rounding between those paths would show.
"""

from __future__ import annotations

import pytest
import torch

from chatsmith.engine.sampling import SamplingParams
from chatsmith.engine.scheduler import Scheduler
from chatsmith.engine.sequence import Request
from chatsmith.kernels.cpu import matmul
from chatsmith.model.build import build_model
from chatsmith.model.gpt import GPT, GPTConfig

NEW = 12

pytestmark = pytest.mark.skipif(not matmul.available(), reason="needs the CPU kernels with AVX512-BF16")


def plain_model(vocab: int, seed: int) -> GPT:
    shape = {"n_layer": 2, "n_embd": 128, "n_head": 4, "n_kv_head": 2, "head_dim": 32}
    cfg = GPTConfig(vocab_size=vocab, intermediate_size=256, seq_len=256, **shape)
    return build_model(cfg, seed=seed).eval()


@pytest.fixture(scope="module")
def sched(tiny_tok) -> Scheduler:
    model = plain_model(tiny_tok.vocab_size, 11).to(torch.bfloat16)
    s = Scheduler(model, tiny_tok, n_slots=8, max_len=256, prefix_slots=4, compile=True)
    s.warm_up()
    return s


def prompts(vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(4)
    system = torch.randint(10, vocab, (40,), generator=g).tolist()  # shared: a prefix-cache hit
    return [system + torch.randint(10, vocab, (3 + 5 * i,), generator=g).tolist() for i in range(8)]


def params() -> SamplingParams:
    return SamplingParams(max_new_tokens=NEW, ignore_eos=True, logprobs=True)


def run(sched: Scheduler, ps: list[list[int]], join_every: int = 0) -> list[tuple]:
    """Each prompt's (tokens, logprobs); with join_every, prompt i arrives at step i * join_every."""
    reqs = [Request(list(p), params(), False) for p in ps]
    pending, step = list(reqs), 0
    while pending or sched.busy:
        while pending and step >= join_every * (len(reqs) - len(pending)):
            sched.add(pending.pop(0))
        sched.step()
        step += 1
    return [(tuple(c.token_ids), tuple(c.logprobs)) for r in reqs for c in r.completions]


def forget_prefixes(sched: Scheduler) -> None:
    while sched.kv.evict_prefix():
        pass


@pytest.mark.slow  # four compiled graphs: minutes on a busy 2-core machine
def test_greedy_tokens_do_not_depend_on_batch_arrival_cache_or_chunking(sched, tiny_tok) -> None:
    ps = prompts(tiny_tok.vocab_size)
    alone = []
    for p in ps:
        forget_prefixes(sched)
        alone += run(sched, [p])
    assert len({a[0] for a in alone}) == 8
    forget_prefixes(sched)
    assert run(sched, ps) == alone, "batched"
    forget_prefixes(sched)
    assert run(sched, ps, join_every=3) == alone, "joining at different steps"
    hits = sched.kv.prefix_hits
    assert [run(sched, [p])[0] for p in ps] == alone, "after a prefix-cache hit"
    assert sched.kv.prefix_hits >= hits + 8
    forget_prefixes(sched)
    chunk, idle = sched.chunk, sched.idle_chunk
    sched.chunk = sched.idle_chunk = 7  # every prompt fed in chunks of 7 tokens
    try:
        assert run(sched, ps) == alone, "chunked prefill"
    finally:
        sched.chunk, sched.idle_chunk = chunk, idle


@pytest.mark.slow
def test_through_the_server_the_first_answer_is_the_later_ones(tiny_tok, tmp_path) -> None:
    """The issue's case: served in bf16, a prompt's first answer and later identical ones
    (prefix-cache hits, alone or among others) are the same."""
    import concurrent.futures as cf

    import openai
    from test_serve_helpers import live_server

    from chatsmith.serve.backend import Backend

    model = plain_model(tiny_tok.vocab_size, 12)
    backend = Backend.from_model(model, tiny_tok, name="m", max_batch=8, compile=True)
    system = {"role": "system", "content": "You are concise. Answer in one short sentence, please."}
    chats = [[system, {"role": "user", "content": f"Q{i}: what is {i} plus {7 * i}?"}] for i in range(8)]
    with live_server(tiny_tok, tmp_path / "s.db", backend=backend) as s:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=600)

        def ask(messages: list) -> tuple:
            r = client.chat.completions.create(
                model="m", messages=messages, max_tokens=NEW, temperature=0, logprobs=True
            )
            return r.choices[0].message.content, tuple(t.logprob for t in r.choices[0].logprobs.content)

        with cf.ThreadPoolExecutor(8) as ex:
            first = list(ex.map(ask, chats))  # together, the prefix store empty
        again = [ask(c) for c in chats]  # alone, each prompt in the prefix store
        with cf.ThreadPoolExecutor(8) as ex:
            third = list(ex.map(ask, chats))
    assert again == first and third == first

"""Multiple-choice scoring against a brute-force reference from the model's raw logits."""

from __future__ import annotations

import json
import random

import torch
import torch.nn.functional as F

from chatsmith.eval.multiple_choice import summarize_mc
from chatsmith.eval.runner import EvalSettings, evaluate_model
from chatsmith.eval.tasks import load_task
from chatsmith.model.build import build_model
from chatsmith.model.gpt import GPTConfig

WORDS = ["red", "blue", "green", "seven", "banana", "strawberry", "tokenizer", "answer", "dog", "fox"]


def tiny_model(vocab: int, seed: int = 0):
    cfg = GPTConfig(
        vocab_size=vocab,
        n_layer=2,
        n_embd=64,
        n_head=4,
        n_kv_head=2,
        head_dim=16,
        intermediate_size=128,
        seq_len=64,
    )
    model = build_model(cfg, seed=seed)
    with torch.no_grad():  # a random model with opinions: wider logits than the init's near-uniform ones
        g = torch.Generator().manual_seed(seed)
        model.lm_head.weight.copy_(torch.randn(model.lm_head.weight.shape, generator=g) * 0.3)
        for block in model.layers:
            block.self_attn.o_proj.weight.copy_(
                torch.randn(block.self_attn.o_proj.weight.shape, generator=g) * 0.1
            )
    return model.eval()


def write_questions(path, n: int = 20, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = rng.choice([2, 3, 4, 5])
        choices = [" ".join(rng.sample(WORDS, rng.randint(1, 3))) for _ in range(k)]
        choices = list(dict.fromkeys(choices)) if len(set(choices)) > 1 else [*choices[:1], "fox"]
        # Some long contexts: more than the model's 64 tokens, so truncation is checked too.
        ctx = (
            f"Question {i}: "
            + " ".join(rng.choice(WORDS) for _ in range(rng.choice([3, 8, 60])))
            + "?\nAnswer:"
        )
        rows.append({"context": ctx, "choices": choices, "gold": rng.randrange(len(choices))})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return rows


@torch.no_grad()
def reference_loglik(model, tok, context: str, choice: str) -> float:
    """One full forward per (question, choice) on the unpadded sequence; left-truncated to the context."""
    ctx = [tok.bos_id, *tok.encode(context)]
    cont = tok.encode(" " + choice)
    full = (ctx + cont)[-(model.cfg.seq_len + 1) :]
    logits = model(torch.tensor([full[:-1]]))[0]
    logp = F.log_softmax(logits.float(), dim=-1)
    n = len(cont)
    return sum(float(logp[len(full) - 1 - n + j, full[len(full) - n + j]]) for j in range(n))


def test_accuracy_equals_brute_force_reference(tmp_path, tiny_tok):
    rows = write_questions(tmp_path / "hand_made.jsonl")
    model = tiny_model(tiny_tok.vocab_size)
    # A small batch budget forces several padded batches of mixed lengths.
    res = evaluate_model(model, tiny_tok, [tmp_path / "hand_made.jsonl"], EvalSettings(batch_tokens=300))
    got = res["hand_made"]["metrics"]

    right, right_norm, preds = 0, 0, []
    for r in rows:
        lls = [reference_loglik(model, tiny_tok, r["context"], c) for c in r["choices"]]
        pred = max(range(len(lls)), key=lambda j: lls[j])
        norm = max(range(len(lls)), key=lambda j: lls[j] / len(r["choices"][j].encode()))
        right += pred == r["gold"]
        right_norm += norm == r["gold"]
        preds.append(pred)
    assert len(set(preds)) > 1, "the fixed model should not always pick the same position"
    assert got["n"] == 20
    assert got["accuracy"] == right / 20
    assert got["accuracy_norm"] == right_norm / 20
    chance = sum(1 / len(r["choices"]) for r in rows) / 20
    assert abs(got["centered"] - (right / 20 - chance) / (1 - chance)) < 1e-12


def test_logliks_match_reference_per_choice(tmp_path, tiny_tok):
    from chatsmith.eval.multiple_choice import evaluate_mc

    rows = write_questions(tmp_path / "q.jsonl", n=6, seed=3)
    model = tiny_model(tiny_tok.vocab_size, seed=1)
    task = load_task(tmp_path / "q.jsonl")
    recs = evaluate_mc(model, tiny_tok, task, list(range(6)), seed=0, batch_tokens=256)
    for rec, r in zip(recs, rows):
        ref = [reference_loglik(model, tiny_tok, r["context"], c) for c in r["choices"]]
        for a, b in zip(rec["loglik"], ref):
            assert abs(a - b) < 1e-3 * max(1.0, abs(b))


def test_summary_of_records():
    recs = [
        {"correct": True, "correct_norm": False, "n_choices": 4},
        {"correct": False, "correct_norm": True, "n_choices": 2},
    ]
    s = summarize_mc(recs)
    assert s["accuracy"] == 0.5 and s["accuracy_norm"] == 0.5
    assert abs(s["chance"] - 0.375) < 1e-12
    assert abs(s["centered"] - (0.5 - 0.375) / 0.625) < 1e-12


def test_fewshot_prompts_are_deterministic_and_exclude_the_question(tmp_path, tiny_tok):
    from chatsmith.eval.prompts import fewshot_examples

    rows = write_questions(tmp_path / "q.jsonl", n=10)
    head = json.dumps({"task": {"num_fewshot": 3}})
    (tmp_path / "fs.jsonl").write_text(head + "\n" + "\n".join(json.dumps(r) for r in rows) + "\n")
    task = load_task(tmp_path / "fs.jsonl")
    for i in range(10):
        shots = fewshot_examples(task, i, seed=7)
        assert len(shots) == 3 and task.examples[i] not in shots
        assert shots == fewshot_examples(task, i, seed=7)

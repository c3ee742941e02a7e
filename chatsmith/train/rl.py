"""Reinforcement learning with GRPO (Shao et al. 2024, DeepSeekMath) on verifiable tasks.

Each step samples a group of answers per prompt with the engine (KV cache, batched, tools
running inside generation), scores them (an exact-answer check, plus optionally a reward
model), and normalises the rewards within each group into advantages: no value network.
The loss is PPO's clipped objective per generated token (Schulman et al. 2017), averaged
per answer, with an optional KL penalty to the reference model (the k3 estimator, as GRPO).
Only tokens the model sampled are trained; prompts and tool results are masked.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from chatsmith.checkpoint import load_checkpoint
from chatsmith.common.config import Config, RLConfig
from chatsmith.common.dist import dist_info
from chatsmith.common.errors import ChatsmithError
from chatsmith.common.log import MetricsLog, info, read_metrics
from chatsmith.data.chat.epochs import EpochOrder
from chatsmith.engine.sampling import SamplingParams
from chatsmith.eval.report_plots import plot_rl
from chatsmith.model.gpt import GPT
from chatsmith.tasks.common import Example, Task
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import encode_prompt
from chatsmith.train.guard import make_guard, run_guarded
from chatsmith.train.logprobs import token_logps
from chatsmith.train.loop import Stage, train
from chatsmith.train.lora import apply_lora, reference_of
from chatsmith.train.rollout import Sample, Sampler

Reward = Callable[[Example, list[Sample]], list[float]]


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """rewards (P, G) -> (r - mean) / (std + eps) within each prompt's group of G answers."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    return (rewards - mean) / (std + eps)


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate per token (N, T), mean over each answer's tokens, then over answers."""
    ratio = torch.exp(logp - old_logp)
    a = adv.unsqueeze(1)  # (N, 1)
    per_tok = -torch.min(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)
    stats: dict[str, float] = {}
    if ref_logp is not None and kl_coef > 0:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1  # k3: unbiased, always >= 0 (Schulman 2020, "Approximating KL")
        per_tok = per_tok + kl_coef * kl
        stats["kl"] = float((kl.detach() * mask).sum() / mask.sum().clamp(min=1))
    n_tok = mask.sum(1).clamp(min=1)
    loss = ((per_tok * mask).sum(1) / n_tok).mean()
    stats["clip_frac"] = float(
        (((ratio - 1).abs() > clip_eps).float() * mask).sum() / mask.sum().clamp(min=1)
    )
    return loss, stats


def pass_at(correct: torch.Tensor, k: int) -> float:
    """Share of prompts with at least one correct answer among the first k of the group: (P, G) bool."""
    return float(correct[:, :k].any(dim=1).float().mean())


class RolloutLoader:
    """next_batch() samples a step's groups with the current weights and returns them scored.

    The prompts are read as every stage reads rows (data/chat/epochs.py): one shuffled pass per
    epoch, rank r of W taking its own batch_size prompts a step, so `rl.epochs=1` asks each
    prompt once. Prompts and sampling seeds are functions of (seed, step, rank), so a resumed
    run draws the same rollouts as the interrupted one would have.
    """

    def __init__(
        self,
        sampler: Sampler,
        tok: BPETokenizer,
        problems: list[Example],
        reward: Reward,
        check: Callable[[Example, str], bool],
        cfg: RLConfig,
        seed: int,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.sampler, self.tok, self.problems, self.reward, self.check = sampler, tok, problems, reward, check
        self.cfg, self.seed, self.rank, self.world = cfg, seed, rank, world
        if not problems:
            raise ChatsmithError("no RL prompts to train on")
        self.order = EpochOrder(len(problems), seed)
        self.step = 0

    @property
    def rows_per_epoch(self) -> int:
        """Prompts in one pass over the data, for all ranks together."""
        return len(self.problems)

    @property
    def rows_per_batch(self) -> int:
        """Prompts one rank asks per next_batch()."""
        return self.cfg.batch_size

    def next_batch(self) -> dict[str, Any]:
        c = self.cfg
        rng = random.Random((self.seed * 1_000_003 + self.step) * 131 + self.rank)
        picked = [self.problems[i] for i in self.order.take(self.step, c.batch_size, self.rank, self.world)]
        self.step += 1
        params = SamplingParams(
            temperature=c.temperature,
            top_k=c.top_k,
            max_new_tokens=c.max_new_tokens,
            n=c.group_size,
            seed=rng.randrange(2**31),
        )
        groups = self.sampler.sample([encode_prompt(self.tok, ex.prompt) for ex in picked], params)
        rewards = torch.tensor([self.reward(ex, g) for ex, g in zip(picked, groups)], dtype=torch.float32)
        correct = torch.tensor([[self.check(ex, s.final_text) for s in g] for ex, g in zip(picked, groups)])
        adv = group_advantages(rewards).flatten()
        samples = [s for g in groups for s in g]
        # Groups whose answers all scored the same teach nothing (zero advantage): leave them out of
        # the backward pass unless a KL term needs every row (keep one row so every rank steps).
        keep = (
            [i for i in range(len(samples)) if adv[i] != 0] if c.kl_coef == 0 else list(range(len(samples)))
        )
        keep = keep or [0]
        x, y = pad_rows([samples[i] for i in keep], self.tok.bos_id)
        gen_tokens = sum(len(s.token_ids) for s in samples)
        return {
            "x": x,
            "y": y,
            "adv": adv[keep],
            "stats": {
                "reward": float(rewards.mean()),
                "pass@1": float(correct.float().mean()),
                f"pass@{min(c.pass_k, c.group_size)}": pass_at(correct, min(c.pass_k, c.group_size)),
                "gen_tokens": gen_tokens / len(samples),
                # Answers cut by max_new_tokens score as they stand (usually 0); counted so it shows.
                "truncated": sum(s.finish_reason == "length" for s in samples) / len(samples),
                "rows": len(keep),
            },
        }

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])


def pad_rows(samples: list[Sample], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (the sampled tokens only; -1 elsewhere) of whole rollouts, right-padded."""
    T = max(len(s.ids) for s in samples) - 1
    x = torch.full((len(samples), T), pad_id, dtype=torch.long)
    y = torch.full((len(samples), T), -1, dtype=torch.long)
    for i, s in enumerate(samples):
        ids = torch.tensor(s.ids)
        m = torch.tensor(s.mask[1:], dtype=torch.bool)
        x[i, : len(s.ids) - 1] = ids[:-1]
        y[i, : len(s.ids) - 1] = torch.where(m, ids[1:], torch.tensor(-1))
    return x, y


def make_grpo_step(cfg: RLConfig, device: torch.device, ref: GPT | None) -> Any:
    def step(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        x, y, adv = batch["x"].to(device), batch["y"].to(device), batch["adv"].to(device)
        mask = (y != -1).float()
        logp = token_logps(model(x), y)
        ref_logp = None
        if ref is not None and cfg.kl_coef > 0:
            with torch.no_grad():
                ref_logp = token_logps(ref(x), y)
        # One update per batch of rollouts: the sampling policy is the current one, so the ratio is
        # 1 in value and the clipped objective reduces to the policy gradient (as TRL with 1 iteration).
        loss, stats = grpo_loss(logp, logp.detach(), adv, mask, cfg.clip_eps, ref_logp, cfg.kl_coef)
        return loss, {**batch["stats"], **stats}

    return step


def accuracy(
    sampler: Sampler,
    tok: BPETokenizer,
    problems: list[Example],
    check: Callable[[Example, str], bool],
    max_new_tokens: int,
) -> float:
    """Greedy held-out accuracy (what a user gets at temperature 0)."""
    if not problems:
        return float("nan")
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    groups = sampler.sample([encode_prompt(tok, ex.prompt) for ex in problems], params)
    return sum(check(ex, g[0].final_text) for ex, g in zip(problems, groups)) / len(problems)


def run_rl(
    cfg: Config,
    init_dir: Path,
    out_dir: Path,
    train_problems: list[Example],
    val_problems: list[Example],
    task: Task,
    device: torch.device,
    dtype: torch.dtype,
    metrics: MetricsLog,
    rm_dir: Path | None = None,
    baseline_dirs: dict[str, Path] | None = None,
    resume: str | None = None,
) -> dict[str, Any]:
    """GRPO from the chat model in init_dir, rewarded by task's reward; returns held-out accuracy
    (task's check) before/after and the curves' file."""
    tc, check = cfg.rl, task.check
    if tc.group_size < 2:
        raise ChatsmithError(
            f"rl.group_size is {tc.group_size}; GRPO compares answers, so it needs at least 2"
        )
    model, tok, _ = load_checkpoint(init_dir, device)
    apply_lora(model, cfg.lora, init_dir, cfg.run.seed, tok)  # then the reference is the base, adapters off
    ref = reference_of(model) if tc.kl_coef > 0 else None
    sampler = Sampler(model, tok, device, dtype, max_batch=tc.batch_size * tc.group_size)
    eval_tokens = tc.max_new_tokens
    di = dist_info()
    try:
        baselines = baseline_accuracies(baseline_dirs or {}, val_problems, check, eval_tokens, device, dtype)
        summary: dict[str, Any] = {**baselines, "task": getattr(task, "name", "word_problems")}
        summary["accuracy_before"] = accuracy(sampler, tok, val_problems, check, eval_tokens)
        info(f"[rl] held-out {summary['task']} before RL: {100 * summary['accuracy_before']:.1f}%")
        metrics.write(step=0, val_accuracy=summary["accuracy_before"])
        reward = make_reward(tc, tok, task.reward, rm_dir, device)
        guard = make_guard(cfg, init_dir.parent, tok, tc.guard_tolerance, tc.seq_len)
        if guard is not None:
            guard.start(model, device, dtype)
            guard.remember({"val_accuracy": summary["accuracy_before"]})

        def evaluate() -> dict[str, float]:
            out = {"val_accuracy": accuracy(sampler, tok, val_problems, check, eval_tokens)}
            if guard is not None:
                out.update(guard.check(model, device, dtype))  # raises StopEarly past the tolerance
                guard.remember(out)
            return out

        loader = RolloutLoader(
            sampler, tok, train_problems, reward, check, tc, cfg.run.seed, di.rank, di.world_size
        )
        meta = {"init": str(init_dir), "kl_coef": tc.kl_coef}
        stage = Stage("rl", out_dir, loader, evaluate, meta, make_grpo_step(tc, device, ref))
        par = cfg.run.parallel
        fit = partial(train, model, tok, stage, tc, device, dtype, metrics, resume=resume, parallel=par)
        last = run_guarded(fit, "rl", guard, model, tok, out_dir, meta, tc.steps, metrics)
    finally:
        sampler.close()
    return rl_summary(summary, last, metrics, out_dir.parent / "rl.png")


def baseline_accuracies(
    dirs: dict[str, Path],
    problems: list[Example],
    check: Callable[[Example, str], bool],
    max_new_tokens: int,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, float]:
    """Greedy held-out accuracy of other checkpoints (e.g. the SFT model), for the report's comparison."""
    out: dict[str, float] = {}
    for name, path in dirs.items():
        bmodel, btok, _ = load_checkpoint(path, device)
        with Sampler(bmodel, btok, device, dtype, max_batch=64) as bs:
            out[f"accuracy_{name}"] = accuracy(bs, btok, problems, check, max_new_tokens)
    return out


def rl_summary(
    summary: dict[str, Any], last: dict[str, Any], metrics: MetricsLog, plot: Path
) -> dict[str, Any]:
    """Accuracy after RL, the last rollout figures and the curves' PNG (drawn by rank 0)."""
    summary["accuracy_after"] = last.get("val_accuracy", float("nan"))
    summary["seconds"] = last.get("seconds", 0.0)
    for k, v in last.items():
        if k in ("reward", "guard_rise", "early_stopped") or k.startswith("pass@"):
            summary[f"last_{k}"] = v
    if metrics.path is not None and dist_info().is_main:
        drawn = plot_rl(read_metrics(metrics.path), plot)
        summary["plot"] = str(drawn) if drawn else ""
    info(
        f"[rl] held-out {summary.get('task', 'word_problems')}: {100 * summary['accuracy_before']:.1f}% -> "
        f"{100 * summary['accuracy_after']:.1f}%"
    )
    return summary


def make_reward(
    cfg: RLConfig,
    tok: BPETokenizer,
    task_reward: Callable[[Example, str], float],
    rm_dir: Path | None,
    device: torch.device,
) -> Reward:
    """The task's reward (1 for a correct final answer, 0 otherwise), plus rm_weight x the reward
    model's score."""
    rm = None
    if cfg.rm_weight > 0:
        from chatsmith.train.rm import load_reward_model

        path = Path(cfg.rm_path) if cfg.rm_path else rm_dir
        if path is None:
            raise ChatsmithError(
                "rl.rm_weight > 0 needs a reward model: set --rl.rm_path=DIR (from `chatsmith rm`)"
            )
        rm, _ = load_reward_model(path, device)

    def reward(ex: Example, group: list[Sample]) -> list[float]:
        r = [task_reward(ex, s.final_text) for s in group]
        if rm is not None:
            answers = [[{"role": "assistant", "content": s.final_text}] for s in group]
            scores = rm.score_conversations(tok, [ex.prompt] * len(group), answers)
            r = [a + cfg.rm_weight * b for a, b in zip(r, scores)]
        return r

    return reward

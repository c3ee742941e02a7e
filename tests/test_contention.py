"""Steady on a busy machine (slow): with one busy-loop process beside them, `bench generate`'s
batch-1 decode and `bench train --preset demo` keep at least 40 % of their quiet rates, since
a process that starts beside a busy neighbour runs on the cores it leaves free
(common/cpu_share.py) instead of waiting, in every parallel region, for a thread that shares
the busy core. Both rates are printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatsmith.checkpoint import save_checkpoint
from chatsmith.common.config import make_config
from chatsmith.model.build import build_model, gpt_config

pytestmark = [pytest.mark.slow, pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores")]
SPIN = "import time\nt = time.time()\nwhile time.time() - t < 900: pass"


def bench(args: list[str], home: Path) -> dict:
    env = {**os.environ, "CHATSMITH_HOME": str(home)}
    env.pop("OMP_NUM_THREADS", None)
    cmd = [sys.executable, "-m", "chatsmith", "bench", *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def quiet_and_busy(args: list[str], home: Path) -> tuple[dict, dict]:
    quiet = bench(args, home)
    spin = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(0.5)
        busy = bench(args, home)
    finally:
        spin.kill()
        spin.wait()
    return quiet, busy


def test_generate_and_train_keep_40_percent_beside_a_busy_loop(tiny_tok, tmp_path: Path) -> None:
    cfg = make_config("demo", [])
    model = build_model(gpt_config(cfg.model, tiny_tok.vocab_size), seed=0)  # the demo's shapes
    save_checkpoint(tmp_path / "ckpt", model.eval(), tiny_tok, {"stage": "sft", "step": 1})
    gen = ["generate", "--model", str(tmp_path / "ckpt"), "--prompt-tokens", "32", "--new-tokens", "96"]
    gen += ["--repeats", "3", "--concurrency", "4", "--prefix-tokens", "64"]
    q, b = quiet_and_busy(gen, tmp_path)
    gq, gb = q["chatsmith"]["decode_tok_s"], b["chatsmith"]["decode_tok_s"]
    train = ["train", "--preset", "demo", "--steps", "12", "--baseline-steps", "3"]
    t_q, t_b = quiet_and_busy(train, tmp_path)
    tq, tb = t_q["tok_per_s"], t_b["tok_per_s"]
    print(json.dumps({"generate_batch1_tok_s": {"quiet": gq, "busy": gb, "kept": round(gb / gq, 3)},
                      "train_tok_s": {"quiet": tq, "busy": tb, "kept": round(tb / tq, 3)},
                      "threads": {"quiet": t_q["threads"], "busy": t_b["threads"]}}))  # fmt: skip
    assert gb >= 0.4 * gq and tb >= 0.4 * tq

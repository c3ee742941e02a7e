"""`python count_rows.py OUT VERB ARGS...`: run `chatsmith VERB ARGS...` and write, per rank, the
data rows the training loop was given (tests only; test_sft_stages_dist.py counts them).

Nothing is replaced: the real command, loaders and loop run; the loader's batches are read on
their way into the loop. A row is known by a "[row N]" tag in its text: SFT rows are decoded
whole (a packed row may hold several conversations), DPO and RM from the chosen half of each
batch, and RL from the prompts its loader sends to the sampler (held-out prompts carry no tag).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tree under test, as `python -m` would
from chatsmith.cli import main
from chatsmith.train import loop

TAG = re.compile(r"\[row (\d+)\]")


def tags(tok: Any, rows: Any) -> list[int]:
    return [int(t) for r in rows for t in TAG.findall(tok.decode([int(i) for i in r], skip_special=False))]


def record(out: Path, tok: Any, loader: Any) -> None:
    rank = int(os.environ.get("RANK", "0"))
    log = out / f"rank{rank}.jsonl"

    def write(seen: list[int]) -> None:
        with log.open("a") as f:
            f.write(json.dumps({"rank": rank, "rows": seen}) + "\n")

    if hasattr(loader, "sampler"):  # RL: the prompts asked, whatever their rollouts score
        sample = loader.sampler.sample

        def sampled(prompts: list[list[int]], params: Any) -> Any:
            seen = tags(tok, prompts)
            if seen:
                write(seen)
            return sample(prompts, params)

        loader.sampler.sample = sampled
        return
    next_batch = loader.next_batch

    def batch() -> Any:
        b = next_batch()
        x = b[0] if isinstance(b, tuple) else b["x"][: b["x"].size(0) // 2]
        write(tags(tok, x.tolist()))
        return b

    loader.next_batch = batch


if __name__ == "__main__":
    out_dir = Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    init = loop._Run.__init__

    def run_init(self: Any, stage: Any, *args: Any, **kw: Any) -> None:
        init(self, stage, *args, **kw)
        record(out_dir, self.tok, stage.loader)

    loop._Run.__init__ = run_init  # type: ignore[method-assign]
    sys.exit(main(sys.argv[2:]))

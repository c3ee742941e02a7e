"""The demo's data set: stdlib text (data.corpus), the synthetic task mix, and their token shards."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from chatsmith.common.config import Config
from chatsmith.common.errors import ChatsmithError
from chatsmith.data.corpus.stdlib_corpus import stdlib_documents
from chatsmith.data.corpus.text_files import read_documents
from chatsmith.data.tokens.folder import write_token_folder
from chatsmith.tasks.common import Example, word_list
from chatsmith.tasks.mixture import EVAL_TASKS, generators, mixture
from chatsmith.tokenizer.bpe import BPETokenizer
from chatsmith.tokenizer.chat_format import render


def _limit(docs: list[str], max_bytes: int) -> list[str]:
    out, n = [], 0
    for d in docs:
        if n >= max_bytes:
            break
        out.append(d)
        n += len(d.encode())
    return out


def is_val_doc(text: str, fraction: float) -> bool:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 10_000 < fraction * 10_000


class DemoData:
    """Builds (deterministically from the config) everything the demo trains and tests on."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        if cfg.data.corpus:
            self.docs = _limit(read_documents(cfg.data.corpus), int(cfg.data.corpus_mb * 1e6))
        else:
            self.docs = stdlib_documents(int(cfg.data.corpus_mb * 1e6), cfg.run.seed)
        if not self.docs:
            raise ChatsmithError("the demo corpus came out empty")
        self.words = word_list(self.docs)
        seed = cfg.run.seed
        self.chat_train = mixture(cfg.data.chat_train, seed + 1, "train", cfg.identity, self.words)
        self.chat_val = mixture(cfg.data.chat_val, seed + 2, "heldout", cfg.identity, self.words)

    def eval_examples(self, limit: int | None = None) -> list[Example]:
        gens = generators(self.cfg.identity, self.words)
        out: list[Example] = []
        for i, (task, field) in enumerate(EVAL_TASKS.items()):
            n = getattr(self.cfg.eval, field)
            n = min(n, limit) if limit else n
            rng = random.Random(self.cfg.run.seed * 7919 + i)
            out += [gens[task](rng, "heldout") for _ in range(n)]
        return out

    def tokenizer_texts(self) -> list[str]:
        budget = int(self.cfg.tokenizer.train_mb * 1e6)
        texts, n = [], 0
        for d in self.docs:
            texts.append(d)
            n += len(d.encode())
            if n >= budget:
                break
        # Conversations teach the tokenizer the chat format's text and some Chinese.
        texts += [render(ex.messages)[0] for ex in self.chat_train[:2000]]
        return texts

    def pretrain_docs(self) -> tuple[list[str], list[str]]:
        frac = self.cfg.data.val_fraction
        train = [d for d in self.docs if not is_val_doc(d, frac)]
        val = [d for d in self.docs if is_val_doc(d, frac)]
        # A share of rendered conversations, so the base model has seen the chat format
        # (a light version of nanochat's mid-training); held-out questions never enter.
        n_chat = int(self.cfg.data.pretrain_chat_fraction * len(train))
        train += [render(ex.messages)[0] for ex in self.chat_train[:n_chat]]
        # Interleave, so the stream does not end in a block of conversations.
        random.Random(self.cfg.run.seed).shuffle(train)
        return train, val

    def write_shards(self, tok: BPETokenizer, data_dir: Path) -> dict[str, Any]:
        """The pretraining documents as a token folder (the format `chatsmith data tokenize` writes),
        its held-out documents in a shard of their own; -> the folder's manifest."""
        train, val = self.pretrain_docs()
        manifest = write_token_folder(
            data_dir, tok, [("pretrain_train", "train", train), ("pretrain_val", "val", val)]
        )
        (data_dir / "words.json").write_text(json.dumps(self.words))
        return manifest

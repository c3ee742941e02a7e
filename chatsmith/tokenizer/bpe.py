"""Byte-level BPE: train, save/load `tokenizer.json` (Hugging Face format), encode fast."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from chatsmith.common.errors import ChatsmithError
from chatsmith.tokenizer.special import BOS, IM_END, REQUIRED_TOKENS, SPECIAL_TOKENS, SPLIT_PATTERN

# A model imported from elsewhere keeps its own chat settings beside tokenizer.json, in Hugging
# Face's files (chat template, special tokens, generation defaults), so export writes them back.
SIDE_FILES = {"config": "tokenizer_config.json", "generation": "generation_config.json"}


class BPETokenizer:
    """A thin wrapper over `tokenizers.Tokenizer` that knows our special tokens."""

    def __init__(
        self, tok: Tokenizer, config: dict[str, Any] | None = None, generation: dict[str, Any] | None = None
    ) -> None:
        self.tok = tok
        self.config = config  # the model's own tokenizer_config.json (None: chatsmith's ChatML)
        self.generation = generation  # the model's own generation_config.json
        missing = [s for s in REQUIRED_TOKENS if tok.token_to_id(s) is None]
        if missing:
            raise ChatsmithError(f"tokenizer lacks the special tokens {missing}")
        self.bos_id = tok.token_to_id(BOS)
        self.im_end_id = tok.token_to_id(IM_END)
        self._text_tok: Tokenizer | None = None

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str] | Iterable[list[str]], vocab_size: int) -> BPETokenizer:
        """Train on texts (or batches of texts) as they come: the trainer keeps counts of the
        pre-tokenized words, not the texts, so an iterator trains in bounded memory."""
        if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
            raise ChatsmithError(f"tokenizer.vocab_size must be above {256 + len(SPECIAL_TOKENS)}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
            min_frequency=2,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        p = Path(path)
        if p.is_dir():
            p = p / "tokenizer.json"
        if not p.is_file():
            raise ChatsmithError(f"no tokenizer at {p}")
        try:
            tk = Tokenizer.from_file(str(p))
        except Exception as e:  # the library raises plain Exceptions on bad JSON
            raise ChatsmithError(f"cannot read tokenizer {p}: {e}") from None
        side = {}
        for attr, name in SIDE_FILES.items():
            f = p.with_name(name)
            try:
                side[attr] = json.loads(f.read_text()) if f.is_file() else None
            except (OSError, json.JSONDecodeError) as e:
                raise ChatsmithError(f"cannot read {f} ({e})") from None
        return cls(tk, **side)

    def save(self, path: str | Path) -> None:
        """tokenizer.json, and beside it the model's own chat settings where it has them."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self.tok.save(str(p))
        for attr, name in SIDE_FILES.items():
            obj = getattr(self, attr)
            if obj is not None:
                p.with_name(name).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")

    def with_tokenizer(self, tok: Tokenizer) -> BPETokenizer:
        """Another vocabulary with this one's chat settings."""
        return BPETokenizer(tok, self.config, self.generation)

    # ---- use ----------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def fingerprint(self) -> str:
        """A short hash of the vocabulary and merges: checkpoints and shards record it."""
        return hashlib.sha256(self.tok.to_str().encode()).hexdigest()[:16]

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_with_controls(self, text: str, controls: list[tuple[int, int]]) -> list[int]:
        """Encode `text` where only the special tokens at the character spans `controls` are
        control ids; any other special-token string in it is encoded as plain text. For text
        with no stray special tokens this equals `encode(text)`: the library splits at
        special tokens before anything else, as this does."""
        return self.encode_with_controls_offsets(text, controls)[0]

    def encode_with_controls_offsets(
        self, text: str, controls: list[tuple[int, int]]
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """encode_with_controls, with each token's character span in `text` (for loss masks)."""
        starts: list[int] = []
        marks: list[tuple[int, int, int]] = []  # (id, start, end) of each control token
        at = 0
        for a, b in sorted(controls):
            i = self.tok.token_to_id(text[a:b])
            if i is None:  # a template word this vocabulary has no token for (an imported model
                continue  # without tool tokens): it stays in the text around it, as plain text
            starts.append(at)
            marks.append((i, a, b))
            at = b
        starts.append(at)
        ends = [m[1] for m in marks] + [len(text)]
        # encode_batch runs without the GIL, so a long prompt does not stall other threads.
        pieces = [text[s:e] for s, e in zip(starts, ends)]
        enc = self._as_text().encode_batch(pieces, add_special_tokens=False)
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        for k, e in enumerate(enc):
            ids += e.ids
            offsets += [(starts[k] + a, starts[k] + b) for a, b in e.offsets]
            if k < len(marks):
                ids.append(marks[k][0])
                offsets.append((marks[k][1], marks[k][2]))
        return ids, offsets

    def _as_text(self) -> Tokenizer:
        # A copy that reads special-token strings as text (the shared one stays unchanged,
        # so threads encoding with it see no flag flip).
        if self._text_tok is None:
            t = Tokenizer.from_str(self.tok.to_str())
            t.encode_special_tokens = True
            self._text_tok = t
        return self._text_tok

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Multi-threaded in the Rust library."""
        return [e.ids for e in self.tok.encode_batch_fast(texts, add_special_tokens=False)]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        e = self.tok.encode(text, add_special_tokens=False)
        return e.ids, e.offsets

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        return self.tok.decode(ids, skip_special_tokens=skip_special)

    def token_id(self, token: str) -> int:
        i = self.tok.token_to_id(token)
        if i is None:
            raise KeyError(token)
        return i

    def id_to_token(self, i: int) -> str:
        return self.tok.id_to_token(i)

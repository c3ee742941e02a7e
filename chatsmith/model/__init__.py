"""Layer 1: the network (gpt.py), its attention entry and metadata, rotary embeddings and the KV cache."""

from chatsmith.model.attention import AttnMeta
from chatsmith.model.gpt import GPT, GPTConfig
from chatsmith.model.kv_cache import SlotKVCache

__all__ = ["GPT", "AttnMeta", "GPTConfig", "SlotKVCache"]

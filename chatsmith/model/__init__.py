"""Layer 1: the network (gpt.py), rotary embeddings and the KV cache."""

from chatsmith.model.gpt import GPT, GPTConfig
from chatsmith.model.kv_cache import KVCache

__all__ = ["GPT", "GPTConfig", "KVCache"]

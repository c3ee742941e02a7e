"""Layer 3: sampling, generation with the KV cache, built-in tools."""

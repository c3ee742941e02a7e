"""Layer 1: byte-level BPE, special tokens and the chat format."""

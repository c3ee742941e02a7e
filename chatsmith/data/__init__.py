"""Layer 2: corpora (corpus/), token shards and loaders (tokens/), conversations and preferences (chat/)."""

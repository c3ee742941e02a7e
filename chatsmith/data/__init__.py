"""Layer 2: corpora, synthetic tasks, token shards and loaders."""

"""Token shards: tokenizing document shards, the shard format, and the loaders that read them."""

"""The corpus pipeline: raw sources -> document shards, cleaned, filtered and deduplicated."""

"""Conversations (TRL's JSONL format), preference pairs, and packed SFT rows."""

"""Layer 5: the OpenAI-compatible server (see the serving issue)."""

"""Layer 4: evaluation and the report."""

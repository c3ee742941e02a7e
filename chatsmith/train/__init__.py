"""Layer 5: the training loop and its stages."""

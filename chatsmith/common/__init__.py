"""Layer 0: configuration, devices, paths, logging, errors."""

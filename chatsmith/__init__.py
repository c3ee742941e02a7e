"""chatsmith: own a ChatGPT end to end."""

__version__ = "0.1.0"

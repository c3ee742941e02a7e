"""Layer 6: speed measurements (`chatsmith bench ...`); each prints JSON on its last line.

`generate`: batch-1 decoding with chatsmith's engine against transformers on the same weights.
"""

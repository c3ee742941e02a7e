"""Layer 6: speed measurements (`chatsmith bench ...`); each prints JSON on its last line.

`generate`: chatsmith's engine against transformers on the same weights (generate.py, with
workload.py, engine_side.py and hf_side.py); `train`: training throughput and MFU against an
fp32 eager AdamW baseline; `peak`: the device's matmul peak; cli.py: the `bench` verb.
"""

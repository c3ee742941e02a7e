"""chatsmith's CPU kernels: build.py (the C++ extension), ops.py and matmul.py (the ops),
train_attention.py (bf16 training attention), modules.py and prepare.py (the conversion)."""

"""Layer 5: Hugging Face and GGUF export and import (Qwen3, Llama and Qwen2 families)."""

from chatsmith.interop.entry import export_main, import_main
from chatsmith.interop.gguf_export import export_gguf
from chatsmith.interop.gguf_import import import_gguf
from chatsmith.interop.hf_config import export_refusals
from chatsmith.interop.hf_export import export_hf
from chatsmith.interop.hf_import import import_hf

__all__ = [
    "export_gguf",
    "export_hf",
    "export_main",
    "export_refusals",
    "import_gguf",
    "import_hf",
    "import_main",
]

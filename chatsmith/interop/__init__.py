"""Layer 5: Hugging Face export and import (Qwen3, Llama and Qwen2 families)."""

from chatsmith.interop.hf_config import export_refusals
from chatsmith.interop.hf_export import export_hf, export_main
from chatsmith.interop.hf_import import import_hf, import_main

__all__ = ["export_hf", "export_main", "export_refusals", "import_hf", "import_main"]

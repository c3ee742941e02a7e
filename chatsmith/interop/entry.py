"""`chatsmith import` and `chatsmith export`: the format decides which converter runs."""

from __future__ import annotations

from chatsmith.interop.gguf_export import export_gguf_main
from chatsmith.interop.gguf_import import import_gguf_main
from chatsmith.interop.hf_export import DEFAULT_MAX_SHARD_SIZE
from chatsmith.interop.hf_export import export_main as export_hf_main
from chatsmith.interop.hf_import import import_hf_main


def import_main(src: str, out_dir: str, add_tool_tokens: bool = False) -> None:
    """`chatsmith import DIR|FILE.gguf --out PATH [--add-tool-tokens]`."""
    if str(src).lower().endswith(".gguf"):
        import_gguf_main(src, out_dir, add_tool_tokens)
    else:
        import_hf_main(src, out_dir, add_tool_tokens)


def export_main(
    model_path: str,
    to: str,
    out: str,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    gguf_type: str = "f16",
) -> None:
    """`chatsmith export --model PATH --to hf DIR` or `--to gguf FILE [--type f16|bf16|q8_0]`."""
    if to == "gguf":
        export_gguf_main(model_path, out, gguf_type)
    else:
        export_hf_main(model_path, to, out, max_shard_size)

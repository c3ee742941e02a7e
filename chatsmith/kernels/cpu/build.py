"""Building and loading the C++ extension that holds chatsmith's CPU kernels.

One extension (csrc/decode_attention.cpp, csrc/small_matmul.cpp and csrc/int8_matmul.cpp)
holds the attention ops of the engine's compiled decode and prefill graphs and the
small-batch matmuls, bf16/float32 and int8-weight (ops.py and int8.py say what each
does). It is built on first use with torch's C++ extension machinery (the same compiler
inductor needs for the compiled step, with the vector flags inductor picks for this CPU)
and kept in torch's extension cache, so later processes load it in a
fraction of a second. `load()` reports whether it is there; without it everything runs
the plain PyTorch path. With CHATSMITH_KERNELS=0 it is never built nor loaded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from pathlib import Path

import torch

from chatsmith.common.log import info, warn
from chatsmith.kernels.switch import enabled

_FILES = ("decode_attention.cpp", "small_matmul.cpp", "int8_matmul.cpp")
SOURCES = [Path(__file__).with_name("csrc") / f for f in _FILES]
_lock = threading.Lock()
_state: dict[str, bool] = {}


def load() -> bool:
    """Build (once per machine) and load the extension; False, with the reason logged, when
    this machine cannot build it, and (silently) when the kernels are switched off."""
    if not enabled():
        return False
    with _lock:
        if "ok" not in _state:
            _state["ok"] = _build()
        return _state["ok"]


def ready() -> bool:
    """Whether the extension is loaded already (`load()` ran and succeeded); never builds."""
    return enabled() and _state.get("ok", False)


def _flags() -> tuple[list[str], str]:
    """The compiler flags for this CPU's vector instructions, and a tag naming them."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    isa = pick_vec_isa()
    flags = ["-O3", "-fopenmp", *(f"-D{m}" for m in isa.build_macro() if m), *isa.build_arch_flags().split()]
    tag = "_".join(str(isa).split()) or "scalar"
    if "avx512" in str(isa) and torch.cpu._is_avx512_bf16_supported():
        flags.append("-mavx512bf16")  # bf16 dot products: the kernels' bf16 paths (see the .cpp)
        tag += "_bf16"
    return flags, tag


def _build() -> bool:
    from torch.utils.cpp_extension import load as load_extension

    from chatsmith.kernels.cpu import ops

    if shutil.which("ninja") is None:  # torch builds with ninja; the pip package has one
        with contextlib.suppress(ImportError):
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    flags, tag = _flags()
    # The vector flags are part of the name: a cache shared by machines of different CPUs
    # must not hand one machine another's instructions.
    name = "chatsmith_cpu_kernels_" + tag
    t0 = time.perf_counter()
    try:
        # torch's OpenMP runtime is already loaded, so -fopenmp links the kernels to it and
        # at::parallel_for shares its threads.
        load_extension(
            name,
            [str(f) for f in SOURCES],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
        )
    except Exception as e:  # no compiler, no headers: the PyTorch path still works
        warn(f"the CPU kernels did not build ({type(e).__name__}: {e}); running PyTorch's ops instead")
        return False
    if (dt := time.perf_counter() - t0) > 2:  # a build, not a load from the cache
        info(f"built chatsmith's CPU kernels in {dt:.0f} s; later runs load them from torch's cache")
    ops.register_fakes()
    return True

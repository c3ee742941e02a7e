"""Building and loading the C++ extension that holds chatsmith's CPU kernels.

One extension (csrc/decode_attention.cpp, csrc/small_matmul.cpp with csrc/amx_matmul.cpp, and
csrc/int8_matmul.cpp)
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
from collections.abc import Iterator
from pathlib import Path

import torch

from chatsmith.common.log import info, warn
from chatsmith.kernels.switch import enabled

_FILES = ("decode_attention.cpp", "small_matmul.cpp", "amx_matmul.cpp", "int8_matmul.cpp")
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


def extension_name() -> str:
    """The extension's name in torch's cache. The vector flags are part of it: a cache shared by
    machines of different CPUs must not hand one machine another's instructions."""
    return "chatsmith_cpu_kernels_" + _flags()[1]


@contextlib.contextmanager
def _no_stale_lock(name: str) -> Iterator[None]:
    """Hold an OS lock on the build folder while torch builds or loads the extension, and
    clear a lock file that no live process holds.

    torch marks a build in progress with a plain file that it deletes when done; a build
    killed midway (Ctrl-C, kill -9 of a starting server) leaves the file, and every later
    process then waits for it forever. An flock is released by the OS when its holder dies,
    so whoever holds ours is the only possible builder, and a lock file found then is stale.
    """
    import fcntl

    from torch.utils.cpp_extension import _get_build_directory

    folder = Path(_get_build_directory(name, verbose=False))
    with open(folder / "chatsmith.flock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # waits while another live process builds
        stale = folder / "lock"
        if stale.exists():
            warn(f"removing {stale}, left by a build that was stopped midway")
            stale.unlink(missing_ok=True)
        yield


def _build() -> bool:
    from torch.utils.cpp_extension import load as load_extension

    from chatsmith.kernels.cpu import ops

    if shutil.which("ninja") is None:  # torch builds with ninja; the pip package has one
        with contextlib.suppress(ImportError):
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    flags, _ = _flags()
    name = extension_name()
    t0 = time.perf_counter()
    try:
        # torch's OpenMP runtime is already loaded, so -fopenmp links the kernels to it and
        # at::parallel_for shares its threads.
        with _no_stale_lock(name):
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

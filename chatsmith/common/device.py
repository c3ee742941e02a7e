"""Device and dtype selection: cuda > mps > cpu unless the config names one."""

from __future__ import annotations

import contextlib
import os

import torch

from chatsmith.common.cpu_share import busy_elsewhere, free_cores
from chatsmith.common.errors import ChatsmithError
from chatsmith.common.log import info


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise ChatsmithError(f"unknown device '{name}'; choose auto, cpu, cuda or mps")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ChatsmithError(f"device '{name}' was asked for but CUDA is not available")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matmul (AVX512-BF16 or AMX), where bf16 autocast
    is about twice as fast as float32; elsewhere bf16 is emulated and slower."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """The autocast dtype for matmuls; parameters stay float32."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu" and cpu_has_fast_bf16():
            return torch.bfloat16
        return torch.float32
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if name not in table:
        raise ChatsmithError(f"unknown dtype '{name}'; choose auto, float32 or bfloat16")
    return table[name]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_threads(n: int) -> int:
    """n > 0: that many intra-op threads. 0: the cores other processes leave free, up to
    torch's default (common/cpu_share.py says why); ranks under torchrun split the machine
    instead, since each would count the others as busy. Returns the threads set."""
    if n <= 0:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        cores = torch.get_num_threads()
        if local_world > 1 or "OMP_NUM_THREADS" in os.environ:
            return cores  # torchrun (or the user) chose already
        others = busy_elsewhere()
        n = free_cores(cores, others)
        if n < cores:
            info(f"other processes are using {others:.1f} of {cores} cores: running {n} thread(s)"
                 " (--threads or run.threads chooses)")
    torch.set_num_threads(n)
    return n


def device_name(device: torch.device) -> str:
    """A name for the hardware, used to key the measured peak."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            names = (line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
            model = next(names, "cpu")
    except OSError:
        model = "cpu"
    return f"{model} x{torch.get_num_threads()} threads"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 0, seconds: float = 1.0) -> float:
    """Measured FLOP/s of a large square matmul in `dtype`: the practical peak MFU is taken against.

    A vendor's datasheet figure is unreachable on CPUs (and varies with clocks), so the peak is
    what this machine actually does on the most favourable kernel, as `chatsmith bench peak` reports.
    """
    import time

    n = size or (8192 if device.type == "cuda" else 4096)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):  # warm up kernels, caches, clocks
        a @ b
    synchronize(device)
    reps, elapsed = 0, 0.0
    t0 = time.perf_counter()
    while elapsed < seconds:
        a @ b
        reps += 1
        if device.type != "cuda" or reps % 10 == 0:
            synchronize(device)
            elapsed = time.perf_counter() - t0
    synchronize(device)
    elapsed = time.perf_counter() - t0
    return 2 * n**3 * reps / elapsed


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory of this process: allocated CUDA memory, or the resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux
    except (ImportError, OSError):
        return 0.0

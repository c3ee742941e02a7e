"""`chatsmith bench peak`: the device's measured fp32 and bf16 matmul peak, the yardstick of MFU.

The figures are stored in $CHATSMITH_HOME/peak.json, keyed by device and dtype; training logs
report MFU against them (and measure a quick peak themselves when none is stored).
"""

from __future__ import annotations

import argparse
import json

import torch

from chatsmith.common.device import device_name, matmul_peak, pick_device, set_threads
from chatsmith.engine.memory import add_threads_flag
from chatsmith.train.speed import store_peak


def bench_peak(device_arg: str = "auto", size: int = 0, seconds: float = 3.0) -> dict[str, float | str]:
    device = pick_device(device_arg)
    out: dict[str, float | str] = {"device": device_name(device)}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        flops = matmul_peak(device, dtype, size, seconds)
        store_peak(device, dtype, flops)
        out[f"{name}_tflops"] = flops / 1e12
    return out


def bench_peak_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="chatsmith bench peak", description="fp32 and bf16 matmul peak of a device"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument(
        "--size", type=int, default=0, help="square matrix size (default 4096 on CPU, 8192 on CUDA)"
    )
    p.add_argument("--seconds", type=float, default=3.0, help="time per dtype")
    add_threads_flag(p)
    args = p.parse_args(argv)
    set_threads(args.threads)
    r = bench_peak(args.device, args.size, args.seconds)
    print(f"{r['device']}: fp32 {r['fp32_tflops']:.3f} TFLOP/s, bf16 {r['bf16_tflops']:.3f} TFLOP/s")
    print(json.dumps(r))
    return 0

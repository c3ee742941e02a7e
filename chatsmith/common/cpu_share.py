"""How many CPU threads to run when other processes share the cores.

An OpenMP team waits at the end of every parallel region for its slowest thread. With another
process busy on one of two cores, the thread that shares that core is descheduled for
milliseconds at a time and every region waits for it: a SmolLM2 batch-32 forward took 1.77 s
with 2 threads against 0.195 s with 1 on a busy 2-core VM. So a process that starts beside a
busy neighbour runs on the cores left free instead of on all of them, and its speed falls in
proportion to the CPU taken rather than collapsing. The choice is made once, at start-up
(compiled graphs fix their thread count when they are built); `--threads N` (or `run.threads`)
overrides it, and CHATSMITH_PIN=1 binds the threads to cores (OMP_PROC_BIND, OMP_PLACES).
"""

from __future__ import annotations

import os
import time

PIN_ENV = "CHATSMITH_PIN"


def _all_busy_jiffies() -> int:
    """Busy clock ticks of all CPUs since boot (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq + steal


def _own_jiffies() -> int:
    """Clock ticks this process (and its waited-for children) has used."""
    with open("/proc/self/stat") as f:
        after_name = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in after_name[11:15])  # utime, stime, cutime, cstime


def busy_elsewhere(seconds: float = 0.3) -> float:
    """Cores' worth of CPU that other processes used over the next `seconds`; 0.0 without /proc."""
    try:
        hz = os.sysconf("SC_CLK_TCK")
        a, own_a, t0 = _all_busy_jiffies(), _own_jiffies(), time.perf_counter()
        time.sleep(seconds)
        b, own_b, t1 = _all_busy_jiffies(), _own_jiffies(), time.perf_counter()
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, ((b - a) - (own_b - own_a)) / hz / (t1 - t0))


def free_cores(cores: int, others: float) -> int:
    """Threads to run on `cores` when other processes use `others` cores: the ones left free,
    rounded to the nearest (a neighbour at half a core or less is not worth a whole thread),
    at least one."""
    return max(1, min(cores, int(cores - others + 0.5)))


def pin_from_env() -> None:
    """With CHATSMITH_PIN=1, ask OpenMP to bind each thread to a core; before torch starts it."""
    if os.environ.get(PIN_ENV, "") in ("1", "true", "yes"):
        os.environ.setdefault("OMP_PROC_BIND", "close")
        os.environ.setdefault("OMP_PLACES", "cores")

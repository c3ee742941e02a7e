"""Running model-written programs: a subprocess with limits, in a throwaway folder.

Layers of protection (there is no root-less container here, so each one is a partial
guard and together they contain the usual accidents of generated code):
- a clean environment (nothing of ours, no secrets) and Python's isolated mode (-I);
- its own temporary folder as the working and home directory, deleted afterwards;
- rlimits: address space (memory), CPU seconds, processes, file size, no core dumps;
- an audit hook (PEP 578), installed before the sample runs, that refuses writes outside
  the folder, reading /proc (other processes' environments), starting processes,
  signals, sockets, loading native libraries and raising the limits again;
- a wall-clock timeout that kills the whole process group.
A sample passes only if it runs to the end and prints a random marker it was never shown.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

_RUNNER = r"""
import os, resource, sys

def _main():
    tmp, marker, mem, cpu = os.path.realpath(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    del sys.argv[1:]
    for lim, val in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_NPROC, 1),
                     (resource.RLIMIT_FSIZE, 16 << 20), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(lim, (val, val))
    src = open(os.path.join(tmp, "program.py")).read()
    os.remove(os.path.join(tmp, "runner.py"))
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    PATHS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.symlink",
             "os.link", "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move",
             "os.listxattr", "os.setxattr", "os.removexattr"}
    DENY = {"os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.system", "os.exec", "os.startfile",
            "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill", "resource.setrlimit",
            "resource.prlimit", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "socket.connect",
            "socket.bind", "socket.__new__", "os.chroot", "os.setuid", "os.putenv", "os.unsetenv",
            "sys.remote_exec", "mmap.__new__"}

    def inside(p):
        if isinstance(p, int):
            return True
        p = os.path.realpath(os.fsdecode(p))
        return p == tmp or p.startswith(tmp + os.sep)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            name = os.fsdecode(path)
            writing = bool(mode and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITE)
            if (writing and not inside(path)) or os.path.realpath(name).startswith(("/proc", "/sys")):
                raise PermissionError(f"sandbox: may not open {name!r}")
        elif event in PATHS:
            if not all(inside(a) for a in args if isinstance(a, (str, bytes, os.PathLike))):
                raise PermissionError(f"sandbox: {event} outside the sample's folder")
        elif event in DENY:
            raise PermissionError(f"sandbox: {event} is not allowed")

    sys.addaudithook(hook)
    exec(compile(src, "program.py", "exec"), {"__name__": "__main__"})
    sys.stdout.flush()
    sys.stdout.write("\n" + marker + "\n")
    sys.stdout.flush()

_main()
"""


@dataclass
class RunResult:
    passed: bool
    status: str  # passed | failed | timeout
    detail: str = ""  # the end of stderr, for the report


def run_program(program: str, timeout_s: float = 5.0, memory_mb: int = 1024) -> RunResult:
    """Run one Python program in the sandbox; never raises for anything the program does."""
    tmp = Path(tempfile.mkdtemp(prefix="chatsmith-sandbox-"))
    try:
        (tmp / "program.py").write_text(program)
        (tmp / "runner.py").write_text(_RUNNER)
        marker = secrets.token_hex(16)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(tmp), "PYTHONHASHSEED": "0"}
        cpu = int(timeout_s) + 1
        cmd = [sys.executable, "-I", "-B", str(tmp / "runner.py"), str(tmp), marker, str(memory_mb << 20)]
        with open(tmp / "stdout", "wb") as out, open(tmp / "stderr", "wb") as err:
            p = subprocess.Popen(
                [*cmd, str(cpu)],
                cwd=tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group, killed as a whole below
            )
            try:
                p.wait(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        stdout = _tail(tmp / "stdout")
        detail = _tail(tmp / "stderr")
        if timed_out:
            return RunResult(False, "timeout", f"no result within {timeout_s:g} s")
        ok = p.returncode == 0 and stdout.rstrip().endswith(marker)
        return RunResult(ok, "passed" if ok else "failed", detail)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _tail(path: Path, n: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - n))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def run_programs(
    programs: list[str], timeout_s: float = 5.0, memory_mb: int = 1024, workers: int = 2
) -> list[RunResult]:
    """Run programs concurrently (each in its own sandbox); results in the order given."""
    if not programs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda prog: run_program(prog, timeout_s, memory_mb), programs))

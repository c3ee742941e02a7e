"""A build of the CPU kernels killed midway leaves torch's lock file behind; the next process
must clear it and load the kernels, not wait for it forever (a server would stay 'loading')."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import needs_kernels
from torch.utils.cpp_extension import _get_build_directory

from chatsmith.kernels.cpu import build

pytestmark = needs_kernels
LOAD = "from chatsmith.kernels.cpu import build; print('loaded', build.load())"


def test_a_stale_lock_file_is_cleared_and_the_kernels_load(tmp_path: Path) -> None:
    assert build.load()  # built (or loaded) here first: the copy below needs no compiler
    name = build.extension_name()
    built = Path(_get_build_directory(name, verbose=False))
    cache = tmp_path / "ext"
    shutil.copytree(built, cache / name)
    (cache / name / "lock").touch()  # what a killed build leaves
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(cache)}
    r = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "loaded True" in r.stdout, r.stderr[-2000:]
    assert "left by a build that was stopped midway" in r.stderr
    assert not (cache / name / "lock").exists()

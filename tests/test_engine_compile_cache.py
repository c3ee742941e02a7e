"""Compiled graphs are cached under CHATSMITH_HOME (outliving /tmp), unless the user says where."""

from __future__ import annotations

import os

from torch._inductor.runtime.cache_dir_utils import default_cache_dir

from chatsmith.engine.decode import use_disk_cache


def test_inductor_cache_goes_under_chatsmith_home_unless_set(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CHATSMITH_HOME", str(tmp_path))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # what importing inductor sets
    use_disk_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "compile")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    use_disk_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")

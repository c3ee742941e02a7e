"""The one switch for chatsmith's kernels: CHATSMITH_KERNELS=0 turns them all off."""

from __future__ import annotations

import os

ENV = "CHATSMITH_KERNELS"


def enabled() -> bool:
    """Whether the kernels may be used: unless CHATSMITH_KERNELS is 0 (or off, false, no)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "off", "false", "no")

"""Per-key rate limits: a token bucket of `rpm` requests per minute, refilled continuously."""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)
        self._lock = threading.Lock()

    def check(self, key: str, rpm: int | None) -> float:
        """0 if the request may go ahead (and count it); else seconds until it may."""
        if not rpm or rpm <= 0:
            return 0.0
        now = self.clock()
        rate = rpm / 60.0
        with self._lock:
            tokens, last = self._buckets.get(key, (float(rpm), now))
            # A full minute's worth of requests may come as a burst, as OpenAI's limits allow.
            tokens = min(float(rpm), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))

"""Prometheus metrics, named after vLLM's where one exists, on a registry per app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_ITL = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self.registry = r = CollectorRegistry()
        self.ttft = Histogram(
            "chatsmith_time_to_first_token_seconds", "Time to first token", buckets=_LATENCY, registry=r
        )
        self.itl = Histogram(
            "chatsmith_inter_token_latency_seconds", "Time between two tokens", buckets=_ITL, registry=r
        )
        self.e2e = Histogram(
            "chatsmith_e2e_request_latency_seconds",
            "End-to-end request latency",
            buckets=_LATENCY,
            registry=r,
        )
        self.prompt_tokens = Counter("chatsmith_prompt_tokens", "Prompt tokens processed", registry=r)
        self.generation_tokens = Counter("chatsmith_generation_tokens", "Tokens generated", registry=r)
        self.requests = Counter(
            "chatsmith_requests", "Finished requests by HTTP status", ["endpoint", "status"], registry=r
        )
        running = Gauge("chatsmith_num_requests_running", "Requests being generated", registry=r)
        waiting = Gauge("chatsmith_num_requests_waiting", "Requests waiting for a slot", registry=r)
        # Read at scrape time, so the gauges are never stale.
        running.set_function(lambda: stats().get("running", 0))
        waiting.set_function(lambda: stats().get("waiting", 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Timing:
    """Time to first token, inter-token latency and end-to-end time of one request."""

    def __init__(self, metrics: Metrics, now: float) -> None:
        self.m, self.start, self.last, self.first = metrics, now, None, None
        self.finished = False

    def token(self, now: float) -> None:
        if self.last is None:
            self.first = now - self.start
            self.m.ttft.observe(self.first)
        else:
            self.m.itl.observe(now - self.last)
        self.last = now

    def done(self, now: float, prompt_tokens: int, completion_tokens: int) -> None:
        """Record the end once; a stream the client cancelled ends here with what it made."""
        if self.finished:
            return
        self.finished = True
        self.m.e2e.observe(now - self.start)
        self.m.prompt_tokens.inc(prompt_tokens)
        self.m.generation_tokens.inc(completion_tokens)

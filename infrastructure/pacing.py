"""Calls-per-second limits across every worker process: Dramatiq's window rate limiter,
on Redis in production and in memory on the embedded default."""

from __future__ import annotations

import math
import threading

from dramatiq.rate_limits import WindowRateLimiter
from dramatiq.rate_limits.backends import RedisBackend, StubBackend


class DramatiqPacer:
    def __init__(self, redis_url: str, namespace: str) -> None:
        if redis_url:
            import redis

            self.backend = RedisBackend(client=redis.Redis.from_url(redis_url))
        else:
            self.backend = StubBackend()
        self.namespace = namespace
        self._limiters: dict[tuple[str, int, int], WindowRateLimiter] = {}
        self._lock = threading.Lock()

    def try_acquire(self, key: str, per_second: float) -> bool:
        """Take one slot of ``per_second`` for ``key`` now; False when the pace is reached."""
        if per_second >= 1:
            limit, window = int(per_second), 1
        else:
            limit, window = 1, math.ceil(1 / per_second)
        with self._lock:
            limiter = self._limiters.get((key, limit, window))
            if limiter is None:
                limiter = WindowRateLimiter(self.backend, f"{self.namespace}:pace:{key}", limit=limit, window=window)
                self._limiters[(key, limit, window)] = limiter
        with limiter.acquire(raise_on_failure=False) as acquired:
            return bool(acquired)

"""One request budget per API key, shared by every mapping and thread.

A token bucket refilled at ``(rpm - burst) / 60`` tokens a second with room for ``burst`` tokens
never lets more than ``rpm`` requests through in any sliding 60-second window, which is what an
API counting "requests per minute" checks. A 429 pauses the whole bucket for its Retry-After:
the bucket is emptied and earns nothing until the pause ends, so callers that reserve during a pause
are spread out after it at the steady rate instead of all being released when it ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Budget:
    def __init__(
        self,
        requests_per_minute: int,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if requests_per_minute < 1:
            raise ValueError("requests_per_minute must be at least 1")
        self.rpm = requests_per_minute
        self.burst = max(
            1,
            min(
                burst if burst is not None else requests_per_minute // 60,
                requests_per_minute // 2 or 1,
            ),
        )
        self.rate = max(requests_per_minute - self.burst, 1) / 60.0
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(self.burst)
        self._last = clock()  # tokens are counted up to here; in the future while paused
        self._lock = threading.Lock()
        self.waited = 0.0  # total seconds callers spent waiting (metrics)
        self.taken = 0  # tokens reserved so far (the audit's share sees live traffic by it)

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
            self._last = now

    def reserve(self) -> float:
        """Take one token; return how long the caller must wait before using it."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens -= 1.0
            self.taken += 1
            wait = self._last - now  # > 0 only while paused
            if self._tokens < 0:
                wait += -self._tokens / self.rate
            self.waited += wait
            return wait

    def acquire(self, stop: threading.Event | None = None) -> float:
        """Block until a request may be sent; returns the seconds waited.

        Returns a negative number when ``stop`` was set during the wait: the slot was not
        reached, and the caller must not send (the budget is never exceeded, even on shutdown).
        """
        wait = self.reserve()
        if wait > 0:
            if stop is not None:
                if stop.wait(wait):
                    return -1.0
            else:
                self._sleep(wait)
        return wait

    def pause(self, seconds: float) -> None:
        """The API said 429: nobody sends for ``seconds``."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens = min(self._tokens, 0.0)
            self._last = max(self._last, now + seconds)

"""The audit's share of the API budget.

Audit reads go through the same token bucket as every other request (:class:`Budget`), so
together they never exceed ``requests_per_minute``. On top of that, while live traffic flows
(someone else took a token within the last ``idle_after`` seconds), the audit waits for its own
turn: at most ``share`` of the budget's rate. When nothing else runs, it uses the whole budget.
The audit sends one request at a time, so a live change waits behind at most one audit request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from connector.destination.budget import Budget

DEFAULT_SHARE = 0.2
IDLE_AFTER = 30.0  # seconds without other traffic: the audit may use the whole budget


class AuditShare:
    def __init__(
        self,
        budget: Budget,
        share: float = DEFAULT_SHARE,
        *,
        idle_after: float = IDLE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError("the audit's share of the budget must be above 0 and at most 1")
        self.budget = budget
        self.share = share
        self.idle_after = idle_after
        self.interval = 60.0 / (share * budget.rpm)  # seconds between audit requests when busy
        self._clock = clock
        self._mine = 0  # tokens the audit took
        self._others = budget.taken
        self._busy_at = float("-inf")
        self._next = clock()
        self._lock = threading.Lock()

    def busy(self) -> bool:
        """Whether other requests took tokens within the last ``idle_after`` seconds."""
        with self._lock:
            return self._observe(self._clock())

    def _observe(self, now: float) -> bool:
        others = self.budget.taken - self._mine
        if others != self._others:
            self._others, self._busy_at = others, now
        return now - self._busy_at < self.idle_after

    def reserve(self) -> float:
        """The audit's next turn: seconds to wait before asking the budget for a token."""
        with self._lock:
            now = self._clock()
            if self.share >= 1 or not self._observe(now):
                self._next = now
                return 0.0
            start = max(now, self._next)
            self._next = start + self.interval
            return start - now

    def taken(self, tokens: int) -> None:
        """The audit took ``tokens`` from the budget (one per request made, retries included)."""
        with self._lock:
            self._mine += tokens
            self._others = self.budget.taken - self._mine

    def acquire(self, stop: threading.Event) -> bool:
        """Wait for the audit's turn; False when ``stop`` was set meanwhile."""
        wait = self.reserve()
        return not (wait > 0 and stop.wait(wait))

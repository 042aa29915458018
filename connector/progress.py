"""A one-line progress display on an interactive terminal (rows done per mapping)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, *, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.done: dict[str, int] = {}
        self._last = 0.0
        self._started = time.monotonic()

    def update(self, mapping: str, rows: int) -> None:
        self.done[mapping] = self.done.get(mapping, 0) + rows
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.2:
            return
        self._last = now
        rate = self.done[mapping] / max(now - self._started, 1e-6)
        self.stream.write(f"\r{mapping}: {self.done[mapping]} rows ({rate:,.0f}/s)\x1b[K")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and self.done:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

"""How far a pass has come and how long it still takes.

* :class:`Progress` draws one bar per mapping on an interactive terminal during ``sync``: rows
  done / rows to do (from the pending-count query before the pass), percentage and an ETA.
* :class:`BackfillLog` is the service's variant: a pass running longer than a minute logs its
  progress once a minute (the total is counted only then, so short passes cost no extra query).

The ETA divides the rows left by a rate: the rate the pass has shown so far once it has run a few
seconds, never more than the API budget allows (requests per second x items per request);
before that, the budget's rate alone.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

log = logging.getLogger("connector.progress")

WARMUP = 3.0  # seconds of a pass before its own speed is trusted


def rows_per_second(done: int, elapsed: float, budget_rows_per_s: float | None) -> float | None:
    """The speed to expect: observed once warmed up, capped by what the API budget allows."""
    observed = done / elapsed if elapsed >= WARMUP and done > 0 else None
    if observed is None:
        return budget_rows_per_s
    if budget_rows_per_s is None:
        return observed
    return min(observed, budget_rows_per_s)


def eta_seconds(remaining: int, rate: float | None) -> float | None:
    if remaining <= 0:
        return 0.0
    if not rate or rate <= 0:
        return None
    return remaining / rate


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass
class _Bar:
    total: int | None
    budget_rate: float | None
    started: float = field(default_factory=time.monotonic)
    done: int = 0

    def line(self, name: str, width: int = 24) -> str:
        elapsed = time.monotonic() - self.started
        if self.total is None:
            return f"{name:<24} {self.done:>9,} rows  {elapsed:5.0f}s"
        total = max(self.total, self.done)
        frac = self.done / total if total else 1.0
        filled = int(frac * width)
        remaining = total - self.done
        eta = eta_seconds(remaining, rows_per_second(self.done, elapsed, self.budget_rate))
        return (
            f"{name:<24} [{'#' * filled}{'.' * (width - filled)}] {self.done:>9,}/{total:<9,} "
            f"{frac:4.0%}  ETA {fmt_duration(eta)}"
        )


class Progress:
    """Bars per mapping on a terminal; ``enabled=False`` draws nothing (logs/pipes stay clean)."""

    def __init__(self, *, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.bars: dict[str, _Bar] = {}
        self._current: str | None = None
        self._last = 0.0

    def start(self, mapping: str, total: int | None, budget_rate: float | None = None) -> None:
        """A pass of ``mapping`` begins with ``total`` rows to do (None: unknown); the budget
        rate is in rows per second (requests per second x batch size)."""
        self._end_line()
        self.bars[mapping] = _Bar(total, budget_rate)
        self._current = mapping
        self._draw(force=True)

    def update(self, mapping: str, rows: int) -> None:
        bar = self.bars.get(mapping)
        if bar is None:
            self.start(mapping, None)
            bar = self.bars[mapping]
        bar.done += rows
        self._current = mapping
        self._draw()

    def finish(self, mapping: str) -> None:
        if self._current == mapping:
            self._draw(force=True)
            self._end_line()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or self._current is None or (not force and now - self._last < 0.2):
            return
        self._last = now
        self.stream.write("\r" + self.bars[self._current].line(self._current) + "\x1b[K")
        self.stream.flush()

    def _end_line(self) -> None:
        if self.enabled and self._current is not None:
            self.stream.write("\n")
            self.stream.flush()
        self._current = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._end_line()


@dataclass
class _Pass:
    started: float
    done: int = 0
    total: int | None = None
    logged: float = 0.0


class BackfillLog:
    """Logs the progress of passes that run longer than ``every`` seconds, once per ``every``.

    ``remaining(mapping)`` counts the rows still to do (a query; called from the pass's own thread
    the first time the pass is logged); ``budget_rate(mapping)`` is the budget's rows per second.
    """

    def __init__(
        self,
        remaining: Callable[[str], int | None],
        budget_rate: Callable[[str], float | None],
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.remaining = remaining
        self.budget_rate = budget_rate
        self.every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._passes: dict[str, _Pass] = {}

    def begin(self, mapping: str) -> None:
        with self._lock:
            now = self._clock()
            self._passes[mapping] = _Pass(now, logged=now)

    def end(self, mapping: str) -> None:
        with self._lock:
            self._passes.pop(mapping, None)

    def update(self, mapping: str, rows: int) -> None:
        with self._lock:
            p = self._passes.get(mapping)
            if p is None:
                return
            p.done += rows
            now = self._clock()
            due = now - p.logged >= self.every
            if due:
                p.logged = now
            need_total = due and (p.total is None or p.done >= p.total)  # none yet or stale
        if not due:
            return
        if need_total:
            left = self.remaining(mapping)
            with self._lock:
                p.total = None if left is None else p.done + left
        log.info("%s", self.describe(mapping))

    def describe(self, mapping: str) -> str:
        with self._lock:
            p = self._passes.get(mapping)
            if p is None:
                return f"{mapping}: idle"
            elapsed = self._clock() - p.started
            rate = rows_per_second(p.done, elapsed, self.budget_rate(mapping))
            if p.total is None:
                return f"{mapping}: pass running for {fmt_duration(elapsed)}, {p.done:,} rows done"
            total = max(p.total, p.done)
            eta = eta_seconds(total - p.done, rate)
            return (
                f"{mapping}: backfill {p.done:,} of about {total:,} rows "
                f"({p.done / total if total else 1:.0%}) in {fmt_duration(elapsed)}, "
                f"ETA {fmt_duration(eta)}"
            )

    def active(self) -> list[str]:
        with self._lock:
            return [n for n, p in self._passes.items() if p.total is not None]

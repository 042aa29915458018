"""The long-running service: one APScheduler job per mapping, running in parallel.

* Every mapping runs a pass each poll interval on its own thread; they share the API budget, whose
  token bucket hands out request slots in arrival order, so a large backfill of one mapping
  cannot starve the others: a fresh change elsewhere waits for at most the few requests the
  backfill has in flight.
* Dependency order is kept where it matters — the first catch-up: a mapping waits until every
  mapping earlier in the API's order (categories → customers → addresses → products → variations
  → orders → carts) has completed a pass since start-up, so a variation is not sent before its
  product. A mapping that catches up wakes the ones waiting on it.
* SIGTERM/SIGINT set the stop event: batches in flight finish, cursors are saved, passes return
  "interrupted", the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

from apscheduler.executors.pool import ThreadPoolExecutor as JobPool
from apscheduler.schedulers.background import BackgroundScheduler

from connector.errors import FatalError
from connector.runtime import Runtime, log_pass
from connector.sync import PassResult

log = logging.getLogger("connector.service")

PassHook = Callable[[PassResult], None]


class Service:
    def __init__(self, runtime: Runtime, *, on_pass: PassHook | None = None) -> None:
        self.rt = runtime
        self.interval = runtime.config.sync.poll_interval
        self.on_pass = on_pass
        self.fatal: FatalError | None = None
        self.passes = 0
        self.caught_up: set[str] = set()
        self._lock = threading.Lock()
        self._sched: BackgroundScheduler | None = None

    @property
    def mappings(self) -> list[str]:
        return [m.name for m in self.rt.mappings if m.enabled]

    def waiting_on(self, name: str) -> list[str]:
        """Mappings earlier in the API order that have not completed a pass yet."""
        rank = self.rt.compiled[name].mapping.resource.rank
        with self._lock:
            return [
                m.name
                for m in self.rt.mappings
                if m.enabled and m.resource.rank < rank and m.name not in self.caught_up
            ]

    def run_pass(self, name: str) -> PassResult | None:
        """One pass of one mapping (the job body); None when it must wait for its dependencies."""
        if self.rt.stop.is_set():
            return None
        blockers = self.waiting_on(name)
        if blockers:
            log.debug("%s: waiting for %s to catch up first", name, ", ".join(blockers))
            return None
        try:
            result = self.rt.syncer(name).run_pass()
        except FatalError as exc:
            self.fatal = exc
            log.error("%s; stopping the service", exc)
            self.rt.stop.set()
            return None
        log_pass(result)
        with self._lock:
            self.passes += 1
            newly = result.outcome == "ok" and name not in self.caught_up
            if result.outcome == "ok":
                self.caught_up.add(name)
        if newly:
            self._wake_waiting()
        if self.on_pass is not None:
            self.on_pass(result)
        return result

    def _job(self, name: str) -> None:
        try:
            self.run_pass(name)
        except Exception:  # a bug must not kill the job silently
            log.exception("%s: unexpected error in a pass; the next pass retries", name)

    def _wake_waiting(self) -> None:
        sched = self._sched
        if sched is None:
            return
        now = datetime.now(UTC)
        for name in self.mappings:
            if name not in self.caught_up and not self.waiting_on(name):
                job = sched.get_job(name)
                if job is not None:
                    job.modify(next_run_time=now)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info(
            "received %s: finishing batches in flight, then stopping", signal.Signals(signum).name
        )
        self.rt.stop.set()

    def start(self) -> BackgroundScheduler:
        sched = BackgroundScheduler(
            timezone=UTC, executors={"default": JobPool(max_workers=max(1, len(self.mappings)))}
        )
        now = datetime.now(UTC)
        for name in self.mappings:
            sched.add_job(
                self._job,
                "interval",
                args=[name],
                seconds=self.interval,
                next_run_time=now,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                id=name,
                name=name,
            )
        self._sched = sched
        sched.start()
        return sched

    def run(self, *, tick: Callable[[], None] | None = None) -> int:
        """Run until stopped; ``tick`` is called about once a second from the main thread."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        names = ", ".join(self.mappings)
        log.info(
            "service started: %d mapping(s) every %.0fs: %s",
            len(self.mappings),
            self.interval,
            names,
        )
        sched = self.start()
        try:
            while not self.rt.stop.wait(1.0):
                if tick is not None:
                    tick()
        finally:
            sched.shutdown(wait=True)
        if self.fatal is not None:
            return self.fatal.exit_code
        log.info("service stopped cleanly after %d pass(es)", self.passes)
        return 0

"""The long-running service: APScheduler runs a pass of every mapping each poll interval.

SIGTERM/SIGINT set the stop event: the batch in flight finishes, its cursor is saved, the pass
returns "interrupted" and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler

from connector.errors import FatalError
from connector.runtime import Runtime

log = logging.getLogger("connector.service")


class Service:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.interval = runtime.config.sync.poll_interval
        self.fatal: FatalError | None = None
        self.passes = 0
        self._pass_lock = threading.Lock()

    def _pass(self) -> None:
        if self.rt.stop.is_set():
            return
        with self._pass_lock:
            try:
                self.rt.run_once()
            except FatalError as exc:
                self.fatal = exc
                log.error("%s; stopping the service", exc)
                self.rt.stop.set()
            except Exception:  # a bug must not kill the scheduler silently
                log.exception("unexpected error in a pass; the next pass retries")
            self.passes += 1

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info(
            "received %s: finishing the batch in flight, then stopping", signal.Signals(signum).name
        )
        self.rt.stop.set()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        sched = BackgroundScheduler(timezone=UTC)
        sched.add_job(
            self._pass,
            "interval",
            seconds=self.interval,
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            id="sync",
        )
        names = ", ".join(m.name for m in self.rt.mappings if m.enabled)
        log.info(
            "service started: %d mapping(s) every %.0fs: %s",
            len(self.rt.mappings),
            self.interval,
            names,
        )
        sched.start()
        try:
            while not self.rt.stop.wait(1.0):
                pass
        finally:
            sched.shutdown(wait=True)
            with self._pass_lock:
                pass
        if self.fatal is not None:
            return self.fatal.exit_code
        log.info("service stopped cleanly after %d pass(es)", self.passes)
        return 0

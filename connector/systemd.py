"""The systemd service protocol without extra dependencies: ``sd_notify`` and the watchdog.

* :class:`Notifier` sends ``READY=1``, ``STATUS=…``, ``WATCHDOG=1``, ``STOPPING=1`` as datagrams to
  ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). Without ``NOTIFY_SOCKET``
  (not started by systemd) every call is a no-op. A send that fails is logged once, never raised.
* :class:`Liveness` decides whether the service may ping the watchdog: every pass in progress must
  have made progress (a page read, an API answer) within ``pass_timeout``, and the scheduler must
  be starting jobs. A truly hung pass therefore stops the pings and systemd restarts the service
  after ``WatchdogSec`` — a long backfill that keeps moving does not.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger("connector.systemd")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if raw.startswith("@"):
            self.address = b"\0" + raw[1:].encode()
        elif raw.startswith("/"):
            self.address = raw
        elif raw:  # e.g. vsock: (virtual machines); systemd would wait for READY=1 in vain
            log.warning("NOTIFY_SOCKET=%s is not a Unix socket: cannot notify systemd", raw)
        self.watchdog_interval = _watchdog_seconds(env)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; True when it was delivered."""
        if self.address is None:
            return False
        payload = "\n".join(f.replace("\n", " ") for f in fields).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                self._sock.sendto(payload, self.address)
                return True
            except OSError as exc:
                if not self._warned:
                    self._warned = True
                    log.warning("cannot notify systemd through NOTIFY_SOCKET: %s", exc)
                return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        return self.send("RELOADING=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _watchdog_seconds(env: dict[str, str] | os._Environ[str]) -> float | None:
    """``WATCHDOG_USEC`` in seconds when it is meant for this process, else None."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1_000_000


class Liveness:
    """Tracks passes in progress; ``problem()`` says why the service must not ping the watchdog.

    ``pass_timeout``: a pass that made no progress for this long is hung. ``idle_limit``: when no
    job started and none ran for this long, the scheduler is stuck.
    """

    def __init__(
        self,
        pass_timeout: float,
        idle_limit: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pass_timeout = pass_timeout
        self.idle_limit = idle_limit
        self._clock = clock
        self._lock = threading.Lock()
        self._active: dict[str, float] = {}  # mapping -> last sign of progress
        self._last_job = clock()

    def job_started(self) -> None:
        with self._lock:
            self._last_job = self._clock()

    def begin(self, name: str) -> None:
        with self._lock:
            self._last_job = self._active[name] = self._clock()

    def progress(self, name: str) -> None:
        with self._lock:
            if name in self._active:
                self._active[name] = self._clock()

    def end(self, name: str) -> None:
        with self._lock:
            self._active.pop(name, None)
            self._last_job = self._clock()

    def running(self) -> list[str]:
        with self._lock:
            return sorted(self._active)

    def problem(self) -> str | None:
        """None when healthy; else a one-line reason (hung pass or stuck scheduler)."""
        with self._lock:
            now = self._clock()
            stuck = {n: now - t for n, t in self._active.items() if now - t > self.pass_timeout}
            if stuck:
                name, secs = max(stuck.items(), key=lambda kv: kv[1])
                return (
                    f"the pass of {name} made no progress for {secs:.0f}s "
                    f"(sync.pass_timeout {self.pass_timeout:.0f}s)"
                )
            if not self._active and now - self._last_job > self.idle_limit:
                return f"no pass started for {now - self._last_job:.0f}s: the scheduler is stuck"
        return None


class Watchdog:
    """Pings while healthy; says once (per episode) why it stopped pinging."""

    def __init__(self, notifier: Notifier, liveness: Liveness) -> None:
        self.notifier = notifier
        self.liveness = liveness
        self.problem: str | None = None

    def tick(self) -> None:
        problem = self.liveness.problem()
        if problem is None:
            if self.problem is not None:
                log.info("the service is making progress again")
            self.problem = None
            self.notifier.watchdog()
            return
        if problem.split(" for ")[0] != (self.problem or "").split(" for ")[0]:
            what = (
                "no longer pinging the systemd watchdog: systemd restarts the service"
                if self.notifier.watchdog_interval
                else "check the shop database and the API; restart the service if it stays stuck"
            )
            log.error("%s; %s", problem, what)
        self.problem = problem
        self.notifier.status(f"STUCK: {problem}")

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
* SIGHUP re-reads the config and the mapping files; when they validate (also against the shop
  database), the passes in flight stop after their current batch (cursors saved) and the jobs are
  rebuilt from the new files; otherwise the running ones stay and the log says why.
* systemd: ``READY=1`` once config, mappings, state database and shop database are good,
  ``STATUS=`` after each pass, ``WATCHDOG=1`` from the main loop while :class:`Liveness` sees no
  hung pass, ``STOPPING=1`` on shutdown (see :mod:`connector.systemd`).
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler

from connector import logsetup, timeutil
from connector._schedule import GridTrigger, SchedulingMixin
from connector.config import Config, load_config
from connector.errors import ConfigError, ConnectorError, FatalError, LockedError, MappingError
from connector.lock import InstanceLock
from connector.mapping import CompiledMapping, load_mappings
from connector.metrics import Metrics
from connector.progress import BackfillLog
from connector.runtime import Runtime, log_pass
from connector.source.reader import ShopReader
from connector.sync import PassResult
from connector.systemd import Liveness, Notifier, Watchdog

log = logging.getLogger("connector.service")

PassHook = Callable[[PassResult], None]
LOCK_CHECK_EVERY = 30.0
# seconds an idle pass's run row may wait to be written with others (at most half the poll
# interval): 12 mappings polled every 5 s end 2.4 idle passes a second, each a state
# transaction of its own otherwise
IDLE_ROWS_EVERY = 2.0


class Control:
    """What the signals asked for; shared by the successive services of one process, so a
    signal that arrives while a reload switches services is not lost."""

    def __init__(self) -> None:
        self.terminate = False
        self.reload = False


class Service(SchedulingMixin):
    """The service of a runtime's mappings; its jobs are in :mod:`connector._schedule`."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        on_pass: PassHook | None = None,
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
        lock: InstanceLock | None = None,
        caught_up: set[str] | None = None,
        control: Control | None = None,
    ) -> None:
        self.rt = runtime
        cfg = runtime.config
        self.interval = cfg.sync.poll_interval
        self.on_pass = on_pass
        self.notifier = notifier or Notifier({})
        self.metrics = metrics
        self.lock = lock
        self.fatal: FatalError | None = None
        self.passes = 0
        self.caught_up: set[str] = {n for n in caught_up or () if n in runtime.compiled}
        self.last: dict[str, PassResult] = {}
        self.control = control or Control()
        self.reload_config: Config | None = None
        self._last_name: str | None = None
        # no job for 3 intervals (+1 min) = the scheduler is stuck; without mappings, no jobs
        idle = 3 * self.interval + 60 if self.mappings else float("inf")
        self.liveness = Liveness(cfg.sync.pass_timeout, idle_limit=idle)
        self.backfill = BackfillLog(self._remaining, self._budget_rate)
        self._lock = threading.Lock()
        # a mapping's sync pass and its reconciliation never run at the same time
        self._busy: dict[str, threading.Lock] = {n: threading.Lock() for n in runtime.compiled}
        self._sched: BackgroundScheduler | None = None
        self._done = threading.Event()  # run() ended: helper threads stop
        self._rows: dict[str, int] = {}
        self._routes = [
            (re.compile(_route_regex(p)), m.name)
            for m in runtime.mappings
            for p in (m.resource.path, m.resource.delete_path)
            if p
        ]

    # --- a pass ----------------------------------------------------------------------------------

    def run_pass(self, name: str) -> PassResult | None:
        """One pass of one mapping (the job body); None when it must wait for its dependencies."""
        self.liveness.job_started()
        if self.rt.stop.is_set():
            return None
        blockers = self.waiting_on(name)
        if blockers:
            log.debug("%s: waiting for %s to catch up first", name, ", ".join(blockers))
            return None
        started = time.time()
        self.liveness.begin(name)
        self.backfill.begin(name)
        self._rows[name] = 0
        try:
            result = self.rt.syncer(name, self._progress).run_pass()
        except FatalError as exc:
            self.fatal = exc
            text = str(exc).rstrip()
            log.error(
                "%s%s The service stops (exit code %d).",
                text,
                "" if text.endswith(".") else ".",
                exc.exit_code,
            )
            self.rt.stop.set()
            return None
        finally:
            self.liveness.end(name)
            self.backfill.end(name)
        with self._lock:
            before = self.last.get(name)
        log_pass(result, before)
        if self.metrics is not None:
            lag = self.rt.config.source.safety_lag
            self.metrics.on_pass(result, started, self._rows.pop(name, 0), lag)
        with self._lock:
            self.passes += 1
            self.last[name] = result
            self._last_name = name
            newly = result.outcome == "ok" and name not in self.caught_up
            if result.outcome == "ok":
                self.caught_up.add(name)
        if newly:
            self._wake_waiting()
        self.notifier.status(self.summary())
        if self.on_pass is not None:
            self.on_pass(result)
        return result

    def _progress(self, name: str, rows: int) -> None:
        self.liveness.progress(name)
        self._rows[name] = self._rows.get(name, 0) + rows
        if self.metrics is not None:
            self.metrics.on_rows(name, rows)
        self.backfill.update(name, rows)

    def on_api_answer(self, path: str) -> None:
        """An API request ended (answered or not): the passes sending to ``path`` are alive."""
        for pattern, name in self._routes:
            if pattern.fullmatch(path):
                self.liveness.progress(name)

    def _remaining(self, name: str) -> int | None:
        from connector.status import rows_behind

        try:
            reader = self.rt.reader
            mapping = self.rt.compiled[name].mapping
            cursor = self.rt.store.get_cursor(name)
            return rows_behind(reader, mapping, cursor, reader.db_now_utc(), self.rt.config)
        except ConnectorError as exc:
            log.debug("%s: cannot count the rows left: %s", name, exc)
            return None

    def _budget_rate(self, name: str) -> float | None:
        client = self.rt.client
        if client is None:
            return None
        return client.budget.rate * self.rt.compiled[name].mapping.resource.batch_limit

    def cursor_time(self, name: str) -> float | None:
        """The saved cursor of ``name`` as Unix time, when it is a timestamp (for metrics)."""
        cursor = self.rt.store.get_cursor(name)
        value = None if cursor is None else cursor.value
        if isinstance(value, str):
            try:
                value = timeutil.parse_timestamp(value)
            except ValueError:
                return None
        if not isinstance(value, datetime):
            return None
        return timeutil.to_utc(value, self.rt.config.shop_tz).timestamp()

    def summary(self) -> str:
        """One line for ``systemctl status``: how the mappings are doing."""
        with self._lock:
            results = dict(self.last)
            last_name = self._last_name
        names = self.mappings
        ok = sum(1 for n in names if n in results and results[n].outcome == "ok")
        failed = [n for n in names if n in results and results[n].outcome == "failed"]
        text = f"{ok}/{len(names)} mappings ok"
        if failed:
            text += f"; failing: {', '.join(failed)}"
        backfills = self.backfill.active()
        if backfills:
            text += "; " + "; ".join(self.backfill.describe(n) for n in backfills)
        if last_name is not None:
            last = results[last_name]
            c = last.counts
            text += (
                f"; last pass {last.mapping}: {last.outcome} read={c.rows_read} "
                f"sent={c.items_sent} rejected={c.rejected} deleted={c.deleted}"
            )
        return text[:400]

    # --- the main loop ---------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            log.info("received SIGHUP: re-reading the config and mapping files")
            self.control.reload = True
            return
        log.info(
            "received %s: finishing batches in flight, then stopping", signal.Signals(signum).name
        )
        self.control.terminate = True
        self.rt.stop.set()

    def run(self, *, tick: Callable[[], None] | None = None) -> int:
        """Run until stopped (exit code) or until a valid reload is asked for (then -1 and
        ``reload_config`` is set); ``tick`` is called about once a second from the main thread."""
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        log.info(
            "service started: %d mapping(s) every %gs: %s",
            len(self.mappings),
            self.interval,
            ", ".join(self.mappings),
        )
        period = min(1.0, (self.notifier.watchdog_interval or 4.0) / 4)
        # a run row waits at most half a poll interval: ``health`` (3 intervals) stays true
        self.rt.store.idle_rows_every = min(IDLE_ROWS_EVERY, self.interval / 2)
        sched = self.start()
        watchdog = Watchdog(self.notifier, self.liveness)
        keeper = threading.Thread(target=self._keep_lock, name="instance-lock", daemon=True)
        if self.lock is not None:  # off the main loop: a dead server must not block the pings
            keeper.start()
        if self.control.terminate:
            self.rt.stop.set()
        try:
            while not self.rt.stop.wait(period):
                watchdog.tick()
                self._flush_idle_runs()
                if tick is not None:
                    tick()
                if self.control.reload and not self.control.terminate:
                    self.control.reload = False
                    self.reload_config = validate_reload(self.rt.config)
                    if self.reload_config is not None:
                        log.info("new configuration valid: stopping the passes to switch to it")
                        self.notifier.send("RELOADING=1", "STATUS=reloading the configuration")
                        self.rt.stop.set()
        finally:
            if self.reload_config is None or self.control.terminate:
                self.notifier.stopping()
            sched.shutdown(wait=True)
            self._flush_idle_runs(0.0)
            self._done.set()
            if keeper.is_alive():
                keeper.join(timeout=15)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.fatal is not None:
            return self.fatal.exit_code
        if self.reload_config is not None and not self.control.terminate:
            return -1
        log.info("service stopped cleanly after %d pass(es)", self.passes)
        return 0

    def _flush_idle_runs(self, older_than: float | None = None) -> None:
        """Idle passes' run rows wait up to ``store.idle_rows_every`` seconds to share a
        transaction (``StateStore.end_run``); write those that waited that long."""
        if older_than is None:
            older_than = self.rt.store.idle_rows_every
        try:
            self.rt.store.flush_idle_runs(older_than=older_than)
        except ConnectorError as exc:  # the passes report the state database's problems
            log.debug("writing idle run rows: %s", exc)

    def _keep_lock(self) -> None:
        """Keep the lock's connection alive and the lock held (see InstanceLock.check)."""
        assert self.lock is not None
        while not self._done.wait(LOCK_CHECK_EVERY) and not self.rt.stop.is_set():
            try:
                self.lock.check()
            except LockedError as exc:
                self.fatal = exc
                log.error("lost the instance lock: %s; stopping", exc)
                self.rt.stop.set()
            except Exception as exc:  # the server is away: passes fail meanwhile; try again
                log.warning("instance lock: cannot check it (%s); trying again", exc)


def validate_reload(current: Config) -> Config | None:
    """Read the config file and mapping files again and check them (against the shop database
    too); the new config when everything is valid, else None after logging why."""
    try:
        new = load_config(current.file)
        logsetup.REDACT.add(new.secret_values())
        if new.state_url() != current.state_url():
            raise ConfigError("state.url changed: restart the service to switch to it")
        new.api_key()
        mappings = load_mappings(new.mappings_path, list(new.sync.only) or None)
        for m in mappings:
            CompiledMapping(m, new.shop_tz, new.shopimind.id_data_source)
        with ShopReader(new.source_url(), connect_timeout=new.source.connect_timeout) as reader:
            problems = [p for m in mappings for p in reader.check(m)]
        errors = [p for p in problems if not p.warning]
        if errors:
            raise MappingError(errors)
    except ConnectorError as exc:
        log.error(
            "reload refused: %s\nthe running configuration and mappings stay in use; fix the "
            "files and send SIGHUP again (systemctl reload)",
            exc,
        )
        return None
    return new


def _route_regex(path: str) -> str:
    parts = re.split(r"(\{[^}]*\})", path)
    return "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)


__all__ = ["Control", "GridTrigger", "Service", "validate_reload"]

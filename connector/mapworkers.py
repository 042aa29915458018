"""Map a backfill's full pages in worker processes, so that mapping runs on every core.

A backfill spends most of its CPU mapping rows and hashing their JSON (measured on the benchmark
orders: about three quarters of the pass thread), and one interpreter runs that on one core at a
time. :class:`MapPool` hands full pages (``page_size`` rows, so a backfill or a burst; short
pages, such as an idle pass's lookback window, stay in the pass thread) to ``sync.map_workers``
worker processes, while the connector's own process keeps reading, batching, sending and
committing. Nothing about order or the cursor changes: each page's units come back through that
page's future, and the pass takes them page by page in cursor order.

* What a worker gets: the mapping as data (pickled once per compiled mapping; a worker compiles
  it on first sight and keeps it), the page's rows and child rows. What it returns: the page's
  units without the item objects (the canonical JSON is there; ``Unit.payload`` reads the item
  back from it when a rejection needs it).
* Workers are started on the first full page (``spawn``: a fresh interpreter, no inherited
  threads or connections), ignore SIGINT and SIGTERM (the connector's own process stops them
  once its pass has stopped), and are stopped after ``IDLE_AFTER`` seconds without work, so an
  idle service runs no worker at all.
* A worker that dies (killed, out of memory) fails the pass that needed it with a
  :class:`~connector.errors.SourceError`: nothing of its page was sent, the cursor stays, and
  the next pass starts new workers.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

from connector.errors import SourceError
from connector.mapping.compile import CompiledMapping
from connector.transform import Unit, transform_page

__all__ = ["IDLE_AFTER", "MapPool", "default_workers"]

log = logging.getLogger("connector")

IDLE_AFTER = 60.0  # seconds without a page to map before the workers are stopped
_tokens = itertools.count(1)


def default_workers() -> int:
    """``sync.map_workers`` when not set: one per core but one, at most 4; none on a single
    core. The connector's own process keeps a core busy (reading, batching, committing,
    sending). On a 2-core machine shared with the shop database, one worker made backfills
    5-27% faster (BENCHMARKS.md, figures 1 and 2; short runs of under ~15 s went both ways, a
    worker's start-up costs about a second of CPU)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min((cores or 1) - 1, 4))


class MapPool:
    """Worker processes that map full pages; thread-safe, shared by every mapping of a runtime.

    Whoever creates it closes it (:meth:`close`); passes bracket their use with :meth:`using`.
    """

    def __init__(self, workers: int, *, idle_after: float = IDLE_AFTER) -> None:
        self.workers = workers
        self.idle_after = idle_after
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._users = 0
        self._timer: threading.Timer | None = None
        self._closed = False
        self._specs: weakref.WeakKeyDictionary[CompiledMapping, tuple[int, bytes]] = (
            weakref.WeakKeyDictionary()
        )
        self.started = 0  # times workers were started (a test and the logs read it)
        self.unavailable: str | None = None  # why workers cannot run here, once known

    @contextmanager
    def using(self) -> Iterator[MapPool]:
        """A pass that may submit pages; the workers stop ``idle_after`` seconds after the last
        such pass ends."""
        with self._lock:
            self._users += 1
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        try:
            yield self
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._executor is not None and not self._closed:
                    self._timer = threading.Timer(self.idle_after, self._stop_if_idle)
                    self._timer.daemon = True
                    self._timer.start()

    def submit(
        self, compiled: CompiledMapping, rows: Sequence[dict[str, Any]], children: dict[str, Any]
    ) -> Future[list[Unit]] | None:
        """Map a page in a worker; the future's result is what :func:`transform_page` gives,
        items left out (take it with :meth:`units`). None when worker processes cannot run
        here at all (the page is then mapped in the pass thread)."""
        if self.unavailable is not None:
            return None
        token, blob = self._spec(compiled)
        try:
            return self._running().submit(_map_page, token, blob, list(rows), children)
        except (BrokenProcessPool, RuntimeError) as exc:  # broken, or shut down meanwhile
            self._discard()
            raise _died(compiled, exc) from None
        except (OSError, ImportError, NotImplementedError) as exc:
            # no process or no POSIX semaphore for us (a sandbox without /dev/shm, say): the
            # connector works as without workers, and says so once
            self.unavailable = f"{type(exc).__name__}: {exc}"
            log.warning(
                "mapping worker processes cannot start here (%s); pages are mapped in the "
                "connector's own process (set sync.map_workers = 0 to silence this)",
                self.unavailable,
            )
            self._discard(force=True)
            return None

    def units(self, compiled: CompiledMapping, future: Future[list[Unit]]) -> list[Unit]:
        """A mapped page's units; a dead worker becomes a :class:`SourceError` (the pass stops
        with the cursor where it was; the next page submitted starts new workers)."""
        try:
            return future.result()
        except BrokenProcessPool as exc:
            self._discard()
            raise _died(compiled, exc) from None

    def worker_pids(self) -> list[int]:
        """The running workers' process ids (for the memory benchmark)."""
        with self._lock:
            ex = self._executor
            procs = dict(getattr(ex, "_processes", None) or {}) if ex is not None else {}
        return [p.pid for p in procs.values() if p.pid is not None]

    def close(self) -> None:
        """Stop the workers (a page being mapped is finished first); the pool cannot be used
        again."""
        with self._lock:
            self._closed = True
            ex, self._executor = self._executor, None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if ex is not None:
            ex.shutdown(wait=True, cancel_futures=True)

    # --- inside -----------------------------------------------------------------------------

    def _spec(self, compiled: CompiledMapping) -> tuple[int, bytes]:
        with self._lock:
            found = self._specs.get(compiled)
            if found is None:
                data = (compiled.mapping, compiled.shop_tz, compiled.id_data_source)
                found = self._specs[compiled] = (next(_tokens), pickle.dumps(data, protocol=5))
            return found

    def _running(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("the mapping workers were closed")
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_worker_init,
                )
                self.started += 1
                log.debug("starting %d mapping worker processes", self.workers)
            return self._executor

    def _discard(self, *, force: bool = False) -> None:
        """Drop a broken executor (once: a newer one started meanwhile is kept)."""
        with self._lock:
            ex = self._executor
            if ex is None or not (force or getattr(ex, "_broken", False)):
                return
            self._executor = None
        if ex is not None:
            ex.shutdown(wait=False, cancel_futures=True)

    def _stop_if_idle(self) -> None:
        with self._lock:
            if self._users or self._executor is None:
                return
            ex, self._executor, self._timer = self._executor, None, None
        log.debug("stopping the mapping worker processes (idle)")
        ex.shutdown(wait=True)


def _died(compiled: CompiledMapping, exc: BaseException) -> SourceError:
    return SourceError(
        f"{compiled.mapping.file}: a mapping worker process ended unexpectedly ({exc}); nothing "
        "of this page was sent and the cursor stays. The next pass starts new workers; if this "
        "repeats, look for the kernel's out-of-memory killer in the journal, or set "
        "sync.map_workers = 0 to map in the connector's own process."
    )


# --- in the worker -------------------------------------------------------------------------------

_COMPILED: dict[int, CompiledMapping] = {}
_KEEP = 64  # compiled mappings a worker keeps (a reload compiles every mapping again)


def _worker_init() -> None:
    # Ctrl-C and systemd's SIGTERM reach the whole process group: the connector's own process
    # finishes its pass and then stops the workers; a worker killed first would fail the pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_orphaned, args=(os.getppid(),), daemon=True).start()


def _orphaned(parent: int) -> None:
    """Exit once the connector's process is gone (killed with SIGKILL, say): nothing else
    would ever tell a worker waiting for its next page."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _map_page(
    token: int, blob: bytes, rows: list[dict[str, Any]], children: dict[str, Any]
) -> list[Unit]:
    compiled = _COMPILED.get(token)
    if compiled is None:
        mapping, tz, id_data_source = pickle.loads(blob)
        if len(_COMPILED) >= _KEEP:
            _COMPILED.clear()
        compiled = _COMPILED[token] = CompiledMapping(mapping, tz, id_data_source)
    return transform_page(compiled, rows, children, keep_items=False)

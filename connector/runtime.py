"""Wiring: build the reader, client, budget and state store from a config, and close them.

``Runtime`` is what every command uses; it owns (creates and closes) the engines and the HTTP
client, and runs passes of the configured mappings in the API's dependency order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from connector._window import Window
from connector.config import Config
from connector.destination.budget import Budget
from connector.destination.client import ApiClient, RetryPolicy
from connector.mapping import CompiledMapping, Mapping, load_mappings
from connector.mapworkers import MapPool, default_workers
from connector.memory import limit_malloc_arenas
from connector.source.reader import ShopReader
from connector.source.statements import Statements
from connector.state.store import StateStore
from connector.sync import MappingSync, PassResult, ProgressFn
from connector.transform import Recent

log = logging.getLogger("connector")


def load_state(config: Config, *, check: bool = True) -> StateStore:
    store = StateStore(config.state_url())
    if check:
        try:
            store.ensure_current(hint=f"--config {config.file}")
        except Exception:
            store.close()
            raise
    return store


@dataclass
class Runtime:
    config: Config
    mappings: list[Mapping]
    store: StateStore
    reader: ShopReader
    client: ApiClient | None
    stop: threading.Event = field(default_factory=threading.Event)
    compiled: dict[str, CompiledMapping] = field(default_factory=dict)
    pool: ThreadPoolExecutor | None = None
    # worker processes that map full pages (None: mapped in the pass threads)
    map_pool: MapPool | None = None
    # custom data / events: definition ids and event types provisioned by this process
    provisioned: dict[str, str] = field(default_factory=dict)
    # each mapping's pass statements, built once (see sync.Statements)
    statements: dict[str, Statements] = field(default_factory=dict)
    # each mapping's rows of the last short pages, not mapped again when read unchanged
    recent: dict[str, Recent] = field(default_factory=dict)
    windows: dict[str, Window] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        config: Config,
        *,
        only: Sequence[str] | None = None,
        with_api: bool = True,
        transport: httpx.BaseTransport | None = None,
        stop: threading.Event | None = None,
        on_request: Callable[[str, int | None, float], None] | None = None,
    ) -> Runtime:
        """Load mappings, open the state store (schema checked), the shop DB and the API client."""
        limit_malloc_arenas()  # before any worker thread: see connector/memory.py
        mappings = load_mappings(config.mappings_path, list(only or config.sync.only) or None)
        stop = stop or threading.Event()
        store = load_state(config)
        reader = None
        try:
            reader = ShopReader(config.source_url(), connect_timeout=config.source.connect_timeout)
            client = None
            if with_api:
                sm = config.shopimind
                client = ApiClient(
                    sm.base_url,
                    config.api_key(),
                    budget=Budget(sm.requests_per_minute),
                    timeout=sm.timeout,
                    retry=RetryPolicy(sm.max_retries, sm.backoff_base, sm.backoff_cap),
                    transport=transport,
                    stop=stop,
                    on_request=on_request,
                )
        except BaseException:
            if reader is not None:
                reader.close()
            store.close()
            raise
        pool = ThreadPoolExecutor(
            max_workers=max(2, config.sync.max_in_flight * 2), thread_name_prefix="send"
        )
        workers = config.sync.map_workers
        workers = default_workers() if workers is None else workers
        map_pool = MapPool(workers) if workers > 0 else None
        rt = cls(config, mappings, store, reader, client, stop, pool=pool, map_pool=map_pool)
        for m in mappings:
            rt.compiled[m.name] = CompiledMapping(
                m, config.shop_tz, config.shopimind.id_data_source
            )
        return rt

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        if self.map_pool is not None:
            self.map_pool.close()
        if self.client is not None:
            self.client.close()
        self.reader.close()
        self.store.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def syncer(self, name: str, progress: ProgressFn | None = None) -> MappingSync:
        assert self.client is not None, "runtime opened without the API client"
        cls: type[MappingSync] = MappingSync
        extra: dict[str, Any] = {"map_pool": self.map_pool}
        if self.compiled[name].mapping.kind != "resource":  # custom data / events: own pass class
            from connector.events import pass_class

            cls, extra = pass_class(self, name)  # they map rows their own way: in this process
        return cls(
            self.compiled[name],
            reader=self.reader,
            client=self.client,
            store=self.store,
            shop_tz=self.config.shop_tz,
            safety_lag=self.config.source.safety_lag,
            page_size=self.config.sync.page_size,
            stop=self.stop,
            progress=progress,
            pool=self.pool,
            max_in_flight=self.config.sync.max_in_flight,
            statements=self.statements.setdefault(name, Statements()),
            recent=self.recent.setdefault(name, Recent()),
            window=self.windows.setdefault(name, Window()),
            **extra,
        )

    def run_once(self, progress: ProgressFn | None = None) -> list[PassResult]:
        """One pass of every enabled mapping, in dependency order."""
        results = []
        for m in self.mappings:
            if not m.enabled or self.stop.is_set():
                continue
            res = self.syncer(m.name, progress).run_pass()
            log_pass(res)
            results.append(res)
        return results


def log_pass(res: PassResult, before: PassResult | None = None) -> None:
    """One line per pass. Of consecutive passes that find nothing to do (``PassResult.idle``),
    only the first is logged at INFO, the others at DEBUG: 12 mappings at a 5 s poll would
    otherwise write 200,000 lines a day to the journal of an idle shop."""
    c = res.counts
    cursor = "-" if res.cursor is None else _short(res.cursor.value)
    line = (
        f"{res.mapping}: {res.outcome} read={c.rows_read} sent={c.items_sent} "
        f"accepted={c.accepted} "
        f"rejected={c.rejected} unchanged={c.unchanged} deleted={c.deleted} "
        f"requests={c.requests} took={res.seconds:.2f}s cursor={cursor}"
    )
    if res.outcome == "ok":
        quiet = res.idle and before is not None and before.idle
        log.log(logging.DEBUG if quiet else logging.INFO, line)
    elif res.outcome == "interrupted":
        log.warning(line)
    else:
        log.error("%s; cause: %s; the cursor was kept, the next pass retries", line, res.message)


def _short(value: object) -> str:
    return str(value)[:32]

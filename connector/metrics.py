"""Prometheus metrics of the service (``[metrics] listen``; off by default).

Counters (``_total``): rows read and items sent/accepted/rejected/deleted per mapping and
resource, passes per outcome, API requests per HTTP status (``error`` = no answer), API retries,
seconds spent waiting for the request budget. Gauges: cursor lag per mapping (how far behind the
shop ShopiMind may be: now minus the newer of the saved cursor and the start of the last
successful pass), time of the last successful pass. Histogram: pass duration per mapping.

Each :class:`Metrics` has its own registry, so a reload or a test never sees stale series.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from connector.audit.report import MappingAudit
from connector.destination.client import RETRY_STATUSES
from connector.sync import PassResult

log = logging.getLogger("connector.metrics")

NS = "shopimind_connector"
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, float("inf"))

# mapping -> epoch seconds (UTC) of the saved cursor, or None when not a time / no cursor
CursorTime = Callable[[str], float | None]


class _Live(Collector):
    """Values computed when scraped: cursor lag and the budget's waiting time."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterable[Any]:
        wait = CounterMetricFamily(
            f"{NS}_rate_limit_wait_seconds",
            "Seconds API requests waited for the shared request budget (requests_per_minute "
            "and 429 pauses)",
        )
        wait.add_metric([], self.m.budget_waited())
        yield wait
        lag = GaugeMetricFamily(
            f"{NS}_cursor_lag_seconds",
            "Seconds between now and the newest shop change known delivered for each mapping",
            labels=["mapping"],
        )
        now = time.time()
        for name in self.m.mappings():
            value = self.m.lag(name, now)
            if value is not None:
                lag.add_metric([name], value)
        yield lag


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        per = ["mapping", "resource"]
        self.rows_read = Counter(
            f"{NS}_rows_read", "Shop rows read", ["mapping", "resource"], registry=r
        )
        self.sent = Counter(f"{NS}_items_sent", "Items sent to the API", per, registry=r)
        self.accepted = Counter(f"{NS}_items_accepted", "Items the API accepted", per, registry=r)
        self.rejected = Counter(
            f"{NS}_items_rejected", "Items rejected (by the API or before sending)", per, registry=r
        )
        self.deleted = Counter(f"{NS}_items_deleted", "Items deleted on ShopiMind", per, registry=r)
        self.passes = Counter(
            f"{NS}_passes", "Passes by outcome", ["mapping", "outcome"], registry=r
        )
        self.requests = Counter(
            f"{NS}_api_requests", "API requests by HTTP status ('error': no answer)", ["status"],
            registry=r,
        )  # fmt: skip
        self.retries = Counter(
            f"{NS}_api_retries",
            "API requests that failed in a retriable way (408/429/5xx, timeout, connection)",
            registry=r,
        )
        self.last_ok = Gauge(
            f"{NS}_last_success_timestamp_seconds",
            "When the last successful pass of each mapping ended (Unix time)",
            ["mapping"],
            registry=r,
        )
        self.duration = Histogram(
            f"{NS}_pass_duration_seconds",
            "Duration of passes",
            ["mapping"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.audit = {
            kind: Gauge(
                f"{NS}_audit_{kind}",
                f"Records the last audit of each mapping found {what}",
                ["mapping"],
                registry=r,
            )
            for kind, what in (
                ("missing", "missing on ShopiMind (the shop implies them)"),
                ("stale", "stale on ShopiMind (fields differ from the shop's)"),
                ("ghost", "on ShopiMind that the shop does not imply"),
            )
        }
        r.register(_Live(self))
        self._lock = threading.Lock()
        self._resources: dict[str, str] = {}
        self._caught_up: dict[str, float] = {}  # mapping -> epoch of last ok pass start - lag
        self._cursor_time: CursorTime = lambda name: None
        self._budget: Callable[[], float] = lambda: 0.0
        self._budget_base = 0.0
        self._server: Any = None

    # --- wiring ----------------------------------------------------------------------------------

    def attach(
        self, resources: dict[str, str], cursor_time: CursorTime, budget: Callable[[], float]
    ) -> None:
        """Point the live values at a (new) runtime; budget waiting time keeps adding up."""
        with self._lock:
            self._budget_base += self._budget()
            self._budget = budget
            self._resources = dict(resources)
            self._cursor_time = cursor_time
            for name in list(self._caught_up):
                if name not in resources:
                    del self._caught_up[name]

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint in a daemon thread; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- inputs ----------------------------------------------------------------------------------

    def on_request(self, path: str, status: int | None, seconds: float) -> None:
        self.requests.labels("error" if status is None else str(status)).inc()
        if status is None or status in RETRY_STATUSES:
            self.retries.inc()

    def on_rows(self, mapping: str, rows: int) -> None:
        self.rows_read.labels(mapping, self._resource(mapping)).inc(rows)

    def on_pass(self, res: PassResult, started_epoch: float, rows_seen: int, lag: float) -> None:
        """A pass ended; ``rows_seen`` rows were already counted through :meth:`on_rows`."""
        name, c = res.mapping, res.counts
        labels = (name, self._resource(name))
        self.rows_read.labels(*labels).inc(max(c.rows_read - rows_seen, 0))
        self.sent.labels(*labels).inc(c.items_sent)
        self.accepted.labels(*labels).inc(c.accepted)
        self.rejected.labels(*labels).inc(c.rejected)
        self.deleted.labels(*labels).inc(c.deleted)
        self.passes.labels(name, res.outcome).inc()
        self.duration.labels(name).observe(res.seconds)
        if res.outcome == "ok":
            self.last_ok.labels(name).set(time.time())
            with self._lock:
                self._caught_up[name] = started_epoch - lag

    def on_audit(self, res: MappingAudit) -> None:
        """An audit of a mapping ended: its figures replace the previous ones."""
        if res.outcome != "ok":  # a failed or interrupted audit has not looked twice
            return
        self.audit["missing"].labels(res.mapping).set(len(res.missing))
        self.audit["stale"].labels(res.mapping).set(len(res.stale))
        self.audit["ghost"].labels(res.mapping).set(len(res.ghost))

    # --- live values -----------------------------------------------------------------------------

    def _resource(self, mapping: str) -> str:
        return self._resources.get(mapping, "")

    def mappings(self) -> list[str]:
        with self._lock:
            return list(self._resources)

    def budget_waited(self) -> float:
        with self._lock:
            return self._budget_base + self._budget()

    def lag(self, mapping: str, now: float) -> float | None:
        with self._lock:
            caught_up = self._caught_up.get(mapping)
            cursor_time = self._cursor_time
        try:
            cursor = cursor_time(mapping)
        except Exception:  # a scrape must not fail because the state DB is away
            cursor = None
        known = [t for t in (caught_up, cursor) if t is not None]
        if not known:
            return None
        return max(now - max(known), 0.0)

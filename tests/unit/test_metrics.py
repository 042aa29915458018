"""Metrics (Prometheus text over HTTP), the listen address, progress bars and backfill ETAs."""

from __future__ import annotations

import io
import logging
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from connector.config import parse_listen
from connector.metrics import Metrics
from connector.progress import BackfillLog, Progress, eta_seconds, fmt_duration, rows_per_second
from connector.state.model import RunCounts
from connector.sync import PassResult


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_listen_address_defaults_to_loopback() -> None:
    assert parse_listen("9464") == ("127.0.0.1", 9464)
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    for bad in ("", "host:", "localhost:http", "1.2.3.4:70000", ":9464"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_listen(bad)


def _result(name: str, outcome: str = "ok", seconds: float = 2.0, **counts: int) -> PassResult:
    return PassResult(name, outcome, RunCounts(**counts), seconds=seconds)


def test_counters_gauges_and_histogram_over_http() -> None:
    m = Metrics()
    waited = [1.5]
    m.attach(
        {"customers": "customers", "orders": "orders"},
        lambda name: time.time() - 600 if name == "orders" else None,
        lambda: waited[0],
    )
    for status in (200, 200, 429, None, 503, 400):
        m.on_request("/v1/customers", status, 0.01)
    m.on_rows("customers", 500)  # seen during the pass
    started = time.time() - 3
    m.on_pass(
        _result("customers", rows_read=520, items_sent=40, accepted=38, rejected=2, deleted=1),
        started,
        500,
        2.0,
    )
    m.on_pass(_result("orders", "failed", seconds=40.0, rows_read=7), started, 0, 2.0)
    port = m.serve("127.0.0.1", 0)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        m.close()
    s = samples(text)
    ns = "shopimind_connector_"
    cust = (("mapping", "customers"), ("resource", "customers"))
    assert s[(ns + "rows_read_total", cust)] == 520  # 500 live + 20 at the end, not 1020
    assert s[(ns + "items_sent_total", cust)] == 40
    assert s[(ns + "items_accepted_total", cust)] == 38
    assert s[(ns + "items_rejected_total", cust)] == 2
    assert s[(ns + "items_deleted_total", cust)] == 1
    assert s[(ns + "api_requests_total", (("status", "200"),))] == 2
    assert s[(ns + "api_requests_total", (("status", "error"),))] == 1
    assert s[(ns + "api_retries_total", ())] == 3  # 429, no answer, 503 (not the 400)
    assert s[(ns + "rate_limit_wait_seconds_total", ())] == 1.5
    assert s[(ns + "passes_total", (("mapping", "orders"), ("outcome", "failed")))] == 1
    assert (
        abs(s[(ns + "last_success_timestamp_seconds", (("mapping", "customers"),))] - time.time())
        < 60
    )
    assert (ns + "last_success_timestamp_seconds", (("mapping", "orders"),)) not in s
    # customers caught up at its pass start minus the safety lag; orders only has its cursor
    assert 4 <= s[(ns + "cursor_lag_seconds", (("mapping", "customers"),))] < 60
    assert 599 <= s[(ns + "cursor_lag_seconds", (("mapping", "orders"),))] < 660
    hist = (("le", "60.0"), ("mapping", "orders"))
    assert s[(ns + "pass_duration_seconds_bucket", hist)] == 1
    assert s[(ns + "pass_duration_seconds_bucket", (("le", "30.0"), ("mapping", "orders")))] == 0
    assert s[(ns + "pass_duration_seconds_count", (("mapping", "customers"),))] == 1


def test_budget_wait_adds_up_across_reloads_and_lag_survives_a_broken_state_db() -> None:
    m = Metrics()
    m.attach({"a": "customers"}, lambda n: None, lambda: 2.0)
    m.attach({"a": "customers"}, _broken, lambda: 0.5)  # a reload: a new budget starts at 0
    assert m.budget_waited() == 2.5
    assert m.lag("a", time.time()) is None  # no cursor known, and the scrape did not fail


def _broken(name: str) -> float | None:
    raise RuntimeError("state database away")


def test_eta_from_the_budget_then_from_the_observed_speed() -> None:
    # 600 requests/min x 50 items = 500 rows/s at most; before warm-up that is the estimate
    assert rows_per_second(10, 1.0, 500.0) == 500.0
    assert rows_per_second(600, 6.0, 500.0) == 100.0  # slower than the budget: observed
    assert rows_per_second(6000, 6.0, 500.0) == 500.0  # never faster than the budget
    assert rows_per_second(0, 10.0, None) is None
    assert eta_seconds(1000, 100.0) == 10.0
    assert eta_seconds(0, None) == 0.0
    assert eta_seconds(5, None) is None
    assert [fmt_duration(x) for x in (None, 9.6, 75, 3 * 3600 + 120)] == [
        "?",
        "10s",
        "1m15s",
        "3h02m",
    ]


def test_progress_bars_per_mapping_on_a_terminal() -> None:
    out = io.StringIO()
    with Progress(enabled=True, stream=out) as p:
        p.start("customers", 1000, budget_rate=100.0)
        p.update("customers", 250)
        time.sleep(0.21)
        p.update("customers", 250)
        p.finish("customers")
        p.start("orders", 0)
        p.finish("orders")
    text = out.getvalue()
    lines = [x.split("\r")[-1] for x in text.split("\n") if x]
    assert lines[0].startswith("customers") and "500/1,000" in lines[0] and "50%" in lines[0]
    assert "ETA 5s" in lines[0]  # 500 rows left at the budget's 100 rows/s
    assert lines[1].startswith("orders") and "100%" in lines[1] and "ETA 0s" in lines[1]
    quiet = io.StringIO()
    with Progress(enabled=False, stream=quiet) as p:
        p.start("customers", 10)
        p.update("customers", 10)
    assert quiet.getvalue() == ""


def test_backfill_log_once_a_minute_with_a_single_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    counted: list[str] = []

    def remaining(name: str) -> int:
        counted.append(name)
        return 9000

    bf = BackfillLog(remaining, lambda n: 100.0, every=60.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="connector.progress")
    bf.begin("orders")
    for _ in range(30):  # 1000 rows every 4 s for 2 minutes
        now[0] += 4
        bf.update("orders", 1000)
    bf.end("orders")
    logs = [r.message for r in caplog.records]
    assert len(logs) == 2  # at 60 s and 120 s
    assert logs[0].startswith("orders: backfill 15,000 of about 24,000 rows (62%)")
    assert "ETA 1m30s" in logs[0]  # 9,000 left at the budget's 100 rows/s (observed is 250)
    # the estimate ran out (the table grew): counted again, not shown as 100 %
    assert counted == ["orders", "orders"]
    assert logs[1].startswith("orders: backfill 30,000 of about 39,000 rows (77%)")
    assert bf.describe("orders") == "orders: idle"

"""The ShopiMind HTTP client against ``httpx.MockTransport`` handlers: no network, no real waits."""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from connector import __version__
from connector.destination.budget import Budget
from connector.destination.client import (
    MAX_RETRY_AFTER,
    RETRY_STATUSES,
    ApiClient,
    RetryPolicy,
    parse_retry_after,
)
from connector.errors import AuthError, ConnectorError, DeliveryError

KEY = "spm-SECRET-key-7f3a9c"
BASE = "https://api.example.test/v1"
Handler = Callable[[httpx.Request], httpx.Response]


class RecordingStop(threading.Event):
    """A stop event whose ``wait`` records the timeout and returns at once (unless set)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return self.is_set()


class Recorder:
    """Wraps a handler; keeps every request it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    @property
    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]


def envelope(sent: int, rejected: list[Any] | None = None, status: int = 200) -> httpx.Response:
    rejected = rejected or []
    return httpx.Response(
        status,
        json={
            "statusCode": status,
            "sent_count": sent,
            "rejected_count": len(rejected),
            "rejected_items": rejected,
        },
    )


def ok(request: httpx.Request) -> httpx.Response:
    return envelope(len(json.loads(request.content)) if request.content else 0)


def fast_budget(clock: Callable[[], float] = time.monotonic) -> Budget:
    return Budget(600_000, burst=100_000, clock=clock)


@pytest.fixture
def make() -> Iterator[Callable[..., tuple[ApiClient, Recorder]]]:
    clients: list[ApiClient] = []

    def factory(
        handler: Handler,
        *,
        retries: int = 3,
        stop: threading.Event | None = None,
        budget: Budget | None = None,
        retry: RetryPolicy | None = None,
        on_request: Callable[[str, int | None, float], None] | None = None,
    ) -> tuple[ApiClient, Recorder]:
        rec = Recorder(handler)
        client = ApiClient(
            BASE,
            KEY,
            budget=budget or fast_budget(),
            retry=retry or RetryPolicy(max_retries=retries, base=0.001, cap=0.01),
            transport=httpx.MockTransport(rec),
            stop=stop if stop is not None else RecordingStop(),
            on_request=on_request,
        )
        clients.append(client)
        return client, rec

    yield factory
    for c in clients:
        c.close()


def items(n: int) -> list[dict[str, Any]]:
    return [{"customer_id": i, "email": f"c{i}@example.test"} for i in range(n)]


# --- headers and body ---------------------------------------------------------------------------


def test_key_user_agent_and_json_array_on_every_request(make: Any) -> None:
    client, rec = make(ok)
    batch = items(3)
    res = client.send_items("/customers", batch)
    client.send_items("/orders", items(1))
    client.delete_ids("/customers/bulk-delete", "customer_ids", [1, 2])
    client.request("GET", "/customers", params={"page": 2})

    assert len(rec.requests) == 4
    for r in rec.requests:
        assert r.headers["spm-api-key"] == KEY
        assert r.headers["user-agent"] == f"shopimind-connector/{__version__}"
        assert r.headers["accept"] == "application/json"
    first = rec.requests[0]
    assert first.method == "POST"
    assert str(first.url) == f"{BASE}/customers"
    assert first.headers["content-type"] == "application/json"
    assert json.loads(first.content) == batch
    assert rec.bodies[1] == items(1)
    assert rec.bodies[2] == {"customer_ids": [1, 2]}
    assert rec.requests[3].url.params["page"] == "2"
    assert rec.requests[3].content == b""
    assert res.sent_count == 3 and res.rejected == [] and res.requests == 1
    assert res.statuses == {200: 1}


def test_on_request_reports_path_status_and_duration(make: Any) -> None:
    seen: list[tuple[str, int | None, float]] = []
    calls = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        calls[0] += 1
        if calls[0] == 1:
            raise httpx.ConnectError("refused", request=request)
        if calls[0] == 2:
            return httpx.Response(503)
        return ok(request)

    client, _ = make(handler, on_request=lambda *a: seen.append(a))
    client.send_items("/customers", items(2))
    assert [(p, s) for p, s, _ in seen] == [
        ("/customers", None),
        ("/customers", 503),
        ("/customers", 200),
    ]
    assert all(d >= 0 for _, _, d in seen)


# --- the key never leaks ------------------------------------------------------------------------


def _raise(exc_type: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type(f"failed talking to {request.url}", request=request)

    return handler


@pytest.mark.parametrize(
    "handler",
    [
        lambda r: httpx.Response(401, json={"statusCode": 401, "message": "Unauthorized"}),
        lambda r: httpx.Response(403, json={"statusCode": 403, "message": "Forbidden"}),
        lambda r: httpx.Response(500, json={"statusCode": 500, "message": "boom"}),
        lambda r: httpx.Response(404, text="not here"),
        _raise(httpx.ConnectError),
        _raise(httpx.ReadTimeout),
    ],
    ids=["401", "403", "500", "404", "connect", "timeout"],
)
def test_api_key_never_in_errors_or_logs(
    make: Any, handler: Handler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, rec = make(handler, retries=2)
    with pytest.raises(ConnectorError) as info:
        client.send_items("/customers", items(2))
    exc = info.value
    assert rec.requests and rec.requests[0].headers["spm-api-key"] == KEY  # it was sent
    text = "".join(traceback.format_exception(exc))
    assert KEY not in str(exc) and KEY not in repr(exc) and KEY not in text
    assert KEY not in caplog.text
    for record in caplog.records:
        assert KEY not in record.getMessage()
    if len(rec.requests) > 1:  # retried: the retries were logged (so the check above saw them)
        assert any("retry" in r.getMessage() for r in caplog.records)


# --- authentication -----------------------------------------------------------------------------


def test_401_is_auth_error_missing_or_invalid_not_retried(make: Any) -> None:
    client, rec = make(lambda r: httpx.Response(401), retries=5)
    with pytest.raises(AuthError) as info:
        client.send_items("/customers", items(1))
    assert "missing or invalid" in str(info.value)
    assert "401" in str(info.value)
    assert info.value.exit_code == 1
    assert len(rec.requests) == 1


def test_403_is_auth_error_not_allowed_not_retried(make: Any) -> None:
    client, rec = make(lambda r: httpx.Response(403), retries=5)
    with pytest.raises(AuthError) as info:
        client.delete_ids("/customers/bulk-delete", "customer_ids", [1])
    assert "not allowed" in str(info.value)
    assert "403" in str(info.value)
    assert len(rec.requests) == 1


# --- retries ------------------------------------------------------------------------------------


def failing_then_ok(failures: list[Any]) -> Handler:
    """Answer each entry of ``failures`` in turn (a status or an exception type), then 200."""
    queue = list(failures)

    def handler(request: httpx.Request) -> httpx.Response:
        if queue:
            what = queue.pop(0)
            if isinstance(what, int):
                return httpx.Response(what, text="try again")
            raise what("nope", request=request)
        return ok(request)

    return handler


@pytest.mark.parametrize("cause", [*sorted(RETRY_STATUSES), httpx.ConnectError, httpx.ReadTimeout])
def test_retried_then_success(make: Any, cause: Any) -> None:
    stop = RecordingStop()
    client, rec = make(failing_then_ok([cause, cause]), retries=3, stop=stop)
    res = client.send_items("/customers", items(4))
    assert len(rec.requests) == 3
    assert rec.bodies == [items(4)] * 3  # the same batch replayed
    assert res.sent_count == 4 and res.rejected == []
    assert res.requests == 1  # one logical request, retried inside
    assert len(stop.waits) >= 2  # a backoff before each retry


def test_sorted_retry_statuses_are_the_documented_ones() -> None:
    assert sorted(RETRY_STATUSES) == [408, 429, 500, 502, 503, 504]


@pytest.mark.parametrize(
    ("cause", "words"),
    [
        (503, "HTTP 503"),
        (429, "HTTP 429"),
        (httpx.ConnectError, "ConnectError"),
        (httpx.ReadTimeout, "timed out"),
    ],
)
def test_gives_up_after_max_retries(make: Any, cause: Any, words: str) -> None:
    client, rec = make(failing_then_ok([cause] * 10), retries=2)
    with pytest.raises(DeliveryError) as info:
        client.send_items("/customers", items(1), what="customers batch 1")
    msg = str(info.value)
    assert len(rec.requests) == 3  # first try + 2 retries
    assert words in msg
    assert "gave up after 3 attempts" in msg
    assert msg.startswith("customers batch 1:")


def test_give_up_message_names_the_last_cause(make: Any) -> None:
    client, rec = make(failing_then_ok([500, httpx.ConnectError, httpx.ReadTimeout]), retries=2)
    with pytest.raises(DeliveryError) as info:
        client.send_items("/customers", items(1))
    assert len(rec.requests) == 3
    assert "timed out" in str(info.value)
    assert "HTTP 500" not in str(info.value)


def test_zero_retries_means_one_attempt(make: Any) -> None:
    client, rec = make(failing_then_ok([502]), retries=0)
    with pytest.raises(DeliveryError, match="gave up after 1 attempt"):
        client.send_items("/customers", items(1))
    assert len(rec.requests) == 1


@pytest.mark.parametrize("status", [404, 409])
def test_404_409_not_retried(make: Any, status: int) -> None:
    client, rec = make(lambda r: httpx.Response(status, json={"message": "nope"}), retries=5)
    with pytest.raises(DeliveryError) as info:
        client.send_items("/customers", items(2))
    assert str(status) in str(info.value)
    assert len(rec.requests) == 1
    # request() itself hands the final response back without raising
    resp = client.request("POST", "/events", {"name": "x"})
    assert resp.status_code == status
    assert len(rec.requests) == 2


def test_delete_ids_errors(make: Any) -> None:
    client, rec = make(lambda r: httpx.Response(404, text="gone"))
    with pytest.raises(DeliveryError, match="404"):
        client.delete_ids("/vouchers/bulk-delete", "voucher_ids", ["a"])
    client, rec = make(failing_then_ok([500] * 5), retries=1)
    with pytest.raises(DeliveryError, match="HTTP 500"):
        client.delete_ids("/vouchers/bulk-delete", "voucher_ids", ["a"])
    assert len(rec.requests) == 2


def test_undecodable_answer_is_a_delivery_error(make: Any) -> None:
    """A corrupt compressed body raises httpx.DecodingError, which must not escape."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip")

    client, rec = make(handler, retries=1)
    with pytest.raises(DeliveryError, match="DecodingError"):
        client.send_items("/customers", items(1))
    assert len(rec.requests) == 2


# --- Retry-After and the budget -----------------------------------------------------------------


def test_retry_after_seconds_is_the_delay(make: Any) -> None:
    stop = RecordingStop()

    def handler(request: httpx.Request) -> httpx.Response:
        if len(rec.requests) == 1:
            return httpx.Response(503, headers={"Retry-After": "7"})
        return ok(request)

    client, rec = make(handler, stop=stop)
    client.send_items("/customers", items(1))
    assert stop.waits == [7.0]
    assert len(rec.requests) == 2


def test_retry_after_http_date_is_the_delay(make: Any) -> None:
    stop = RecordingStop()
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=40), usegmt=True)

    def handler(request: httpx.Request) -> httpx.Response:
        if len(rec.requests) == 1:
            return httpx.Response(502, headers={"Retry-After": when})
        return ok(request)

    client, rec = make(handler, stop=stop)
    client.send_items("/customers", items(1))
    assert len(stop.waits) == 1
    assert stop.waits[0] == pytest.approx(40, abs=2)


def test_retry_after_is_capped(make: Any) -> None:
    stop = RecordingStop()

    def handler(request: httpx.Request) -> httpx.Response:
        if len(rec.requests) == 1:
            return httpx.Response(503, headers={"Retry-After": "86400"})
        return ok(request)

    client, rec = make(handler, stop=stop)
    client.send_items("/customers", items(1))
    assert stop.waits == [MAX_RETRY_AFTER]


def test_429_pauses_the_budget_for_retry_after(make: Any) -> None:
    now = [100.0]
    budget = Budget(600, clock=lambda: now[0])
    stop = RecordingStop()

    def handler(request: httpx.Request) -> httpx.Response:
        if len(rec.requests) == 1:
            return httpx.Response(429, headers={"Retry-After": "12"})
        return ok(request)

    client, rec = make(handler, budget=budget, stop=stop)
    client.send_items("/customers", items(1))
    assert len(rec.requests) == 2
    assert stop.waits[0] == 12.0  # the backoff before the retry
    # the retry itself had to wait for the paused budget (the fake clock did not move)...
    assert stop.waits[1] is not None and stop.waits[1] >= 12.0
    # ...and so does whoever comes next
    assert budget.reserve() >= 12.0


def test_429_without_retry_after_still_pauses_the_budget(make: Any) -> None:
    now = [0.0]
    budget = Budget(600, clock=lambda: now[0])
    client, _ = make(
        failing_then_ok([429]),
        budget=budget,
        retry=RetryPolicy(max_retries=2, base=2.0, cap=10.0),
    )
    client.send_items("/customers", items(1))
    assert budget.reserve() >= 2.0


def test_429_budget_pause_is_capped_like_the_delay(make: Any) -> None:
    now = [0.0]
    budget = Budget(600, clock=lambda: now[0])
    client, _ = make(
        lambda r: httpx.Response(429, headers={"Retry-After": "86400"}),
        budget=budget,
        retries=0,
    )
    with pytest.raises(DeliveryError, match="HTTP 429"):
        client.send_items("/customers", items(1))
    wait = budget.reserve()
    assert MAX_RETRY_AFTER <= wait <= MAX_RETRY_AFTER + 1


def test_503_does_not_pause_the_budget(make: Any) -> None:
    now = [0.0]
    budget = Budget(600, clock=lambda: now[0])
    client, _ = make(
        lambda r: httpx.Response(503, headers={"Retry-After": "30"}), budget=budget, retries=0
    )
    with pytest.raises(DeliveryError):
        client.send_items("/customers", items(1))
    assert budget.reserve() == 0.0


@pytest.fixture
def new_york_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    future = datetime.now(UTC) + timedelta(seconds=90)
    got = parse_retry_after(email.utils.format_datetime(future, usegmt=True))
    assert got == pytest.approx(90, abs=2)
    # the obsolete RFC 850 form is still an HTTP-date
    rfc850 = future.strftime("%A, %d-%b-%y %H:%M:%S GMT")
    assert parse_retry_after(rfc850) == pytest.approx(90, abs=2)


def test_parse_retry_after_asctime_is_utc(new_york_tz: None) -> None:
    """HTTP-dates are always UTC, even the asctime form that carries no zone."""
    future = datetime.now(UTC) + timedelta(seconds=60)
    asctime = future.strftime("%a %b ") + f"{future.day:2d}" + future.strftime(" %H:%M:%S %Y")
    assert parse_retry_after(asctime) == pytest.approx(60, abs=2)


# --- backoff ------------------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    policy = RetryPolicy(max_retries=10, base=1.0, cap=1000.0)
    for attempt in range(1, 6):
        floor = 2.0 ** (attempt - 1)
        samples = [policy.delay(attempt) for _ in range(500)]
        jitter = [s - floor for s in samples]
        assert min(jitter) >= 0.0
        assert max(jitter) < 0.5
        assert max(jitter) - min(jitter) > 0.25  # there is jitter
    # each attempt waits longer than any jitter of the previous one
    assert min(policy.delay(3) for _ in range(200)) > max(policy.delay(2) for _ in range(200))


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(max_retries=10, base=1.0, cap=5.0)
    assert [policy.delay(a) for a in (4, 5, 8, 10)] == [5.0] * 4
    assert policy.delay(3) < 5.0  # 4 + jitter[0, 0.5)


def test_retry_after_overrides_backoff() -> None:
    policy = RetryPolicy(max_retries=3, base=1.0, cap=5.0)
    assert policy.delay(1, 20.0) == 20.0  # not bound by the backoff cap...
    assert policy.delay(1, 10_000.0) == MAX_RETRY_AFTER  # ...but by MAX_RETRY_AFTER
    assert policy.delay(4, 0.0) == 0.0
    assert policy.delay(2, -1.0) == 0.0


# --- oversized batches --------------------------------------------------------------------------


def max_size(limit: int, bad: set[int] | None = None) -> Handler:
    """A 400 without rejected_items for an array longer than ``limit`` or holding a bad id."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if len(body) > limit or any(i["customer_id"] in (bad or set()) for i in body):
            return httpx.Response(400, json={"statusCode": 400, "message": "Bad Request"})
        return envelope(len(body))

    return handler


def test_oversized_batch_is_split_until_accepted(make: Any) -> None:
    client, rec = make(max_size(3))
    batch = items(10)
    res = client.send_items("/customers", batch)
    ok_bodies = [b for b in rec.bodies if len(b) <= 3]
    assert [i for b in ok_bodies for i in b] == batch  # all, once each, in order
    assert all(len(b) <= 3 for b in ok_bodies)
    assert res.sent_count == 10
    assert res.rejected == []
    assert res.requests == len(rec.requests) == 7  # 10 -> 5+5 -> (2+3)+(2+3)
    assert res.statuses == {400: 3, 200: 4}


def test_single_item_still_400_is_rejected_with_its_index(make: Any) -> None:
    client, rec = make(max_size(3, bad={7}))
    batch = items(10)
    res = client.send_items("/customers", batch)
    accepted = [
        i for b in rec.bodies if len(b) <= 3 and all(x["customer_id"] != 7 for x in b) for i in b
    ]
    assert accepted == [i for i in batch if i["customer_id"] != 7]  # once each, in order
    assert [batch[7]] in rec.bodies  # narrowed down to the culprit alone
    assert res.sent_count == 9
    assert len(res.rejected) == 1
    index, entry = res.rejected[0]
    assert index == 7
    assert entry["status"] == 400


def test_rejected_index_is_offset_by_the_split(make: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if len(body) > 3:
            return httpx.Response(413, text="Payload Too Large")
        bad = [
            {"index": n, "errors": ["email invalid"]}
            for n, i in enumerate(body)
            if i["customer_id"] in (1, 4)
        ]
        return envelope(len(body) - len(bad), bad)

    client, _ = make(handler)
    res = client.send_items("/customers", items(6))
    assert [i for i, _ in res.rejected] == [1, 4]
    assert res.sent_count == 4


# --- rejected items -----------------------------------------------------------------------------


def test_rejected_items_mapping(make: Any) -> None:
    batch = items(5)
    entries = [
        {"index": 3, "errors": ["bad email"]},
        {"item": batch[1], "errors": ["missing lang"]},
        {"errors": ["something"]},
        {"index": 99, "item": {"customer_id": 1234}},
        "free text",
    ]

    client, _ = make(lambda r: envelope(2, entries))
    res = client.send_items("/customers", batch)
    assert res.rejected == [
        (3, entries[0]),
        (1, entries[1]),
        (-1, entries[2]),
        (-1, entries[3]),
        (-1, entries[4]),
    ]
    assert res.sent_count == 2  # the envelope's figure, not len(batch) - len(rejected)


def test_rejected_index_out_of_range_falls_back_to_the_embedded_item(make: Any) -> None:
    batch = items(3)
    entries = [{"index": 7, "payload": batch[2]}, {"index": True, "item": batch[0]}]
    client, _ = make(lambda r: envelope(1, entries))
    res = client.send_items("/customers", batch)
    assert [i for i, _ in res.rejected] == [2, 0]


def test_sent_count_falls_back_when_missing(make: Any) -> None:
    batch = items(4)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"rejected_items": [{"index": 0}]})

    client, _ = make(handler)
    res = client.send_items("/customers", batch)
    assert res.sent_count == 3
    assert res.rejected == [(0, {"index": 0})]


def test_400_with_every_item_rejected_is_not_an_exception(make: Any) -> None:
    batch = items(3)
    entries = [{"index": i, "item": it, "errors": ["invalid"]} for i, it in enumerate(batch)]
    client, rec = make(lambda r: envelope(0, entries, status=400))
    res = client.send_items("/customers", batch)
    assert len(rec.requests) == 1  # not split: the API told us what was wrong
    assert res.sent_count == 0
    assert res.rejected == [(i, e) for i, e in enumerate(entries)]
    assert res.statuses == {400: 1}


# --- bad answers and stopping -------------------------------------------------------------------


def test_200_that_is_not_json_is_a_delivery_error(make: Any) -> None:
    client, _ = make(lambda r: httpx.Response(200, text="<html>maintenance</html>"))
    with pytest.raises(DeliveryError, match="envelope") as info:
        client.send_items("/customers", items(2))
    assert "maintenance" in str(info.value)


def test_200_json_that_is_not_an_envelope_is_a_delivery_error(make: Any) -> None:
    client, _ = make(lambda r: httpx.Response(200, json=[1, 2, 3]))
    with pytest.raises(DeliveryError, match="envelope"):
        client.send_items("/customers", items(2))


def test_stop_during_backoff_ends_quickly(make: Any) -> None:
    stop = threading.Event()
    client, rec = make(
        lambda r: httpx.Response(503),
        stop=stop,
        retry=RetryPolicy(max_retries=5, base=30.0, cap=30.0),
    )
    timer = threading.Timer(0.1, stop.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryError, match="stopping") as info:
            client.send_items("/customers", items(1))
    finally:
        timer.cancel()
    assert time.monotonic() - started < 2.0
    assert len(rec.requests) == 1
    assert "HTTP 503" in str(info.value)


def test_already_stopping_does_not_retry(make: Any) -> None:
    stop = threading.Event()
    stop.set()
    client, rec = make(lambda r: httpx.Response(500), stop=stop, retries=5)
    with pytest.raises(DeliveryError, match="stopping"):
        client.send_items("/customers", items(1))
    assert len(rec.requests) == 1


def test_real_backoff_is_short_with_small_policy(make: Any) -> None:
    client, rec = make(failing_then_ok([500, 500, 500]), stop=threading.Event(), retries=3)
    started = time.monotonic()
    res = client.send_items("/customers", items(1))
    assert res.sent_count == 1
    assert len(rec.requests) == 4
    assert time.monotonic() - started < 1.0


def test_stop_during_budget_wait_sends_nothing() -> None:
    import threading

    from connector.destination.budget import Budget
    from connector.destination.client import ApiClient, RetryPolicy

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"statusCode": 200, "sent_count": 1, "rejected_items": []})

    stop = threading.Event()
    budget = Budget(2, burst=1)  # one free slot, then 60 s until the next
    client = ApiClient(
        "http://api.test",
        "k" * 24,
        budget=budget,
        retry=RetryPolicy(0, 0.001, 0.001),
        transport=httpx.MockTransport(handler),
        stop=stop,
    )
    client.send_items("/v1/customers", [{"a": 1}])
    threading.Timer(0.05, stop.set).start()
    with pytest.raises(DeliveryError, match="not sent, the connector is stopping"):
        client.send_items("/v1/customers", [{"a": 2}])
    assert len(seen) == 1
    client.close()


def test_pre_encoded_items_are_sent_as_given_and_split_alike(make: Any) -> None:
    """Items already encoded (the payload hash's canonical JSON) are joined into the body, not
    encoded again: the API gets the same JSON array, split the same way on an oversized batch."""
    client, rec = make(max_size(3))
    batch = items(10)
    texts = [json.dumps(i, sort_keys=True, separators=(",", ":")).encode() for i in batch]
    res = client.send_items("/customers", batch, encoded=texts)
    ok_bodies = [b for b in rec.bodies if len(b) <= 3]
    assert [i for b in ok_bodies for i in b] == batch  # all, once each, in order
    assert res.sent_count == 10 and res.requests == 7
    first = rec.requests[0]
    assert first.content == b"[" + b",".join(texts) + b"]"  # the texts, byte for byte
    assert first.headers["content-type"] == "application/json"
    with pytest.raises(ValueError, match="one encoded text per item"):
        client.send_items("/customers", batch, encoded=texts[:3])

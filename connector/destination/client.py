"""The ShopiMind HTTP client: budget, retries, envelopes; httpx errors end here.

``send_items`` posts one batch and returns what the API accepted and rejected. A batch is retried
on 408/429/5xx and transport errors with capped exponential backoff and jitter (Retry-After wins);
a 400 without ``rejected_items`` on a batch of several items is split in halves (oversized batch).
401/403 raise ``AuthError`` (the key is never printed); retries exhausted raise ``DeliveryError``.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import httpx

from connector import __version__
from connector.destination.budget import Budget
from connector.errors import AuthError, DeliveryError

log = logging.getLogger("connector.api")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# The only answer that certainly means "not processed": 429 refuses a request before processing
# it. 408, 503 and the other 5xx may come from a gateway after the API acted (the reference
# says nothing either way), so a caller that must not replay treats them as ambiguous.
NOT_PROCESSED = frozenset({429})
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class AmbiguousDelivery(DeliveryError):
    """The request may have been processed (sent, no answer; or 408/5xx)."""


MAX_RETRY_AFTER = 300.0


@dataclass
class BatchResult:
    """What the API did with one batch (possibly sent as several requests after splits)."""

    sent_count: int = 0
    rejected: list[tuple[int, Any]] = field(default_factory=list)  # (index in batch, entry)
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    base: float = 1.0
    cap: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
        return min(self.base * 2.0 ** (attempt - 1) + random.uniform(0, self.base / 2), self.cap)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # the asctime form carries no zone; HTTP-dates are always UTC
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - time.time(), 0.0)


class ApiClient:
    """Thread-safe; whoever creates it closes it."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        budget: Budget,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        stop: threading.Event | None = None,
        on_request: Callable[[str, int | None, float], None] | None = None,
    ) -> None:
        self.budget = budget
        self.retry = retry or RetryPolicy()
        self.stop = stop or threading.Event()
        self.on_request = on_request
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={
                "spm-api-key": api_key,
                "Accept": "application/json",
                "User-Agent": f"shopimind-connector/{__version__}",
            },
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            # keep as many connections alive as requests may be in flight (default: 20)
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        self.base_url = base_url.rstrip("/")
        self.latency = 0.0  # moving average of answer times, seconds (sizes the send pipeline)

    def in_flight_target(self, cap: int) -> int:
        """How many requests to keep in flight so the budget, not the round trip, limits speed:
        requests per second x answer time, with headroom; at least 1, at most ``cap``."""
        want = self.budget.rate * max(self.latency, 0.01) * 1.5 + 1
        return max(1, min(cap, int(want + 0.999)))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one request with retries -------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        what: str = "",
        replay_ambiguous: bool = True,
        attempts: list[int] | None = None,
    ) -> httpx.Response:
        """Send with budget and retries; returns the final response (any non-retried status).

        With ``replay_ambiguous=False`` an attempt that may have been processed (sent but no
        answer, or 500/502/504) is not retried: ``AmbiguousDelivery`` is raised instead. Attempts
        that certainly were not processed (no connection made; 429) are retried anyway; 408 and
        every 5xx are ambiguous.
        ``attempts``, when given, gets one element appended per request made. ``content``: a
        body already encoded as JSON (instead of ``body``).
        """
        what = what or f"{method} {path}"
        if content is not None:  # already JSON: httpx sets the type only for ``json=``
            headers = {**(headers or {}), "Content-Type": "application/json"}
        attempt = 0
        while True:
            if self.budget.acquire(self.stop) < 0:
                raise DeliveryError(f"{what}: not sent, the connector is stopping")
            started = time.monotonic()
            if attempts is not None:
                attempts.append(1)
            status: int | None = None
            retry_after: float | None = None
            ambiguous = True
            try:
                resp = self._http.request(
                    method, path, content=content, json=body, params=params, headers=headers
                )
                status = resp.status_code
            except NOT_SENT as exc:
                cause, ambiguous = f"connection failed ({type(exc).__name__}), not sent", False
            except httpx.TimeoutException as exc:
                cause = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                cause = f"connection failed ({type(exc).__name__}: {exc})"
            except httpx.RequestError as exc:  # e.g. DecodingError: a corrupt answer
                cause = f"unreadable answer ({type(exc).__name__}: {exc})"
            finally:
                took = time.monotonic() - started
                self.latency = took if self.latency == 0.0 else 0.8 * self.latency + 0.2 * took
                if self.on_request:
                    self.on_request(path, status, took)
            if status is not None:
                if status in (401, 403):
                    raise AuthError(_auth_message(status, self.base_url))
                if status not in RETRY_STATUSES:
                    return resp
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                if status == 429:  # same cap as the delay below
                    self.budget.pause(self.retry.delay(attempt + 1, retry_after))
                cause = f"HTTP {status}"
                ambiguous = status not in NOT_PROCESSED
            if ambiguous and not replay_ambiguous:
                raise AmbiguousDelivery(f"{what}: {cause}; it may or may not have been processed")
            attempt += 1
            if attempt > self.retry.max_retries or self.stop.is_set():
                raise DeliveryError(
                    f"{what}: {cause}; gave up after {attempt} attempt{'s' if attempt > 1 else ''}"
                    + (" (stopping)" if self.stop.is_set() else "")
                )
            delay = self.retry.delay(attempt, retry_after)
            log.warning(
                "%s: %s; retry %d/%d in %.1fs", what, cause, attempt, self.retry.max_retries, delay
            )
            if self.stop.wait(delay):
                raise DeliveryError(
                    f"{what}: {cause}; not retried because the connector is stopping"
                )

    # --- bulk writes ----------------------------------------------------------------------------

    def send_items(
        self,
        path: str,
        items: Sequence[Any],
        *,
        what: str = "",
        encoded: Sequence[bytes] | None = None,
    ) -> BatchResult:
        """POST a JSON array; split on an oversized-batch 400; collect rejected entries.

        ``encoded``, when given, holds each item's JSON already encoded (UTF-8): the body is
        joined from them instead of encoding the items again."""
        result = BatchResult()
        texts = list(encoded) if encoded is not None else None
        if texts is not None and len(texts) != len(items):
            raise ValueError("send_items: one encoded text per item")
        items = items if texts is not None else list(items)
        self._send(path, items, texts, 0, result, what or path)
        return result

    def _send(
        self,
        path: str,
        items: Sequence[Any],  # read only on a rejection or a split when ``texts`` are given
        texts: list[bytes] | None,
        offset: int,
        result: BatchResult,
        what: str,
    ) -> None:
        if texts is None:
            resp = self.request("POST", path, items, what=what)
        else:
            resp = self.request("POST", path, content=b"[" + b",".join(texts) + b"]", what=what)
        result.requests += 1
        result.statuses[resp.status_code] = result.statuses.get(resp.status_code, 0) + 1
        body = _json(resp)
        if resp.status_code in (400, 413, 422) and not _has_rejections(body):
            if len(items) > 1:
                half = len(items) // 2
                log.warning(
                    "%s: HTTP %d on %d items; splitting the batch",
                    what,
                    resp.status_code,
                    len(items),
                )
                lo, hi = (texts[:half], texts[half:]) if texts is not None else (None, None)
                self._send(path, items[:half], lo, offset, result, what)
                self._send(path, items[half:], hi, offset + half, result, what)
                return
            result.rejected.append((offset, {"status": resp.status_code, "body": body}))
            return
        if resp.status_code >= 400 and not _has_rejections(body):
            raise DeliveryError(f"{what}: unexpected HTTP {resp.status_code}: {_excerpt(body)}")
        if not isinstance(body, dict):
            raise DeliveryError(f"{what}: the answer is not the bulk envelope: {_excerpt(body)}")
        entries = body.get("rejected_items") or []
        matched = _match_rejections(entries, items)
        for idx, entry in matched:
            result.rejected.append((offset + idx if idx is not None else -1, entry))
        sent = body.get("sent_count")
        result.sent_count += int(sent) if isinstance(sent, int) else len(items) - len(matched)

    def delete_ids(self, path: str, body_key: str, ids: Sequence[Any], *, what: str = "") -> None:
        resp = self.request("POST", path, {body_key: list(ids)}, what=what or path)
        if resp.status_code >= 400:
            raise DeliveryError(f"{what or path}: HTTP {resp.status_code}: {_excerpt(_json(resp))}")


def _auth_message(status: int, base_url: str) -> str:
    if status == 401:
        return (
            f"ShopiMind ({base_url}) answered 401 Unauthorized: the API key is missing or invalid. "
            "Check the key set through shopimind.api_key_env / api_key_file / the 'api_key' "
            "credential (the key itself is not shown)."
        )
    return (
        f"ShopiMind ({base_url}) answered 403 Forbidden: this API key is not allowed to write this "
        "resource (integration inactive or key without write access)."
    )


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return resp.text[:500]


def _excerpt(body: Any) -> str:
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return text[:300]


def _has_rejections(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and isinstance(body.get("rejected_items"), list)
        and bool(body["rejected_items"])
    )


def _match_rejections(entries: list[Any], items: Sequence[Any]) -> list[tuple[int | None, Any]]:
    """Pair each rejected entry with the index of the item it names.

    The entry's key names are not documented, so: an integer ``index`` (or ``idx``/``position``)
    in range wins; else an entry that embeds an item equal to one we sent; else unmatched.
    """
    out: list[tuple[int | None, Any]] = []
    for entry in entries:
        idx: int | None = None
        if isinstance(entry, dict):
            for k in ("index", "idx", "position"):
                v = entry.get(k)
                if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(items):
                    idx = v
                    break
            if idx is None:
                for k in ("item", "payload", "data", "object"):
                    if k in entry and entry[k] in items:
                        idx = items.index(entry[k])
                        break
        out.append((idx, entry))
    return out

"""Reading back what ShopiMind holds: the documented list routes, page by page in their
pagination envelope (API reference §1.4, §1.7), and single reads where they exist.

Every request waits for the audit's share of the budget (:mod:`connector.audit.share`), then goes
through the connector's :class:`ApiClient` (budget, retries, 401 handling). Answers that are not
the documented envelope raise :class:`DeliveryError` with the route and an excerpt.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from connector.audit.compare import Item, id_text
from connector.audit.share import AuditShare
from connector.destination.client import ApiClient
from connector.errors import DeliveryError
from connector.registry import LIST_LIMIT, READ_ROUTES, Resource


class Interrupted(DeliveryError):
    """The connector is stopping: the audit stops before its next read."""


class ReadBack:
    def __init__(
        self,
        client: ApiClient,
        share: AuditShare,
        resource: Resource,
        stop: threading.Event,
        limit: int = LIST_LIMIT,
    ) -> None:
        self.client = client
        self.share = share
        self.resource = resource
        self.routes = READ_ROUTES[resource.name]
        self.stop = stop
        self.limit = limit
        self.requests = 0

    def _get(self, path: str, params: dict[str, Any] | None, what: str) -> httpx.Response:
        if not self.share.acquire(self.stop):
            raise Interrupted(f"{what}: not sent, the connector is stopping")
        attempts: list[int] = []
        try:
            return self.client.request("GET", path, params=params, what=what, attempts=attempts)
        finally:
            self.share.taken(len(attempts))
            self.requests += len(attempts)

    def page(self, offset: int) -> tuple[list[Item], int, bool]:
        """The records after ``offset``, the total the API counts, and whether more follow."""
        path = self.routes.list_path
        what = f"GET {path}?offset={offset}"
        resp = self._get(path, {"limit": self.limit, "offset": offset}, what)
        body = _body(resp, what)
        data, meta = body.get("data"), body.get("meta")
        pagination = meta.get("pagination") if isinstance(meta, dict) else None
        if not isinstance(data, list) or not isinstance(pagination, dict):
            raise DeliveryError(f"{what}: not the list envelope (data + meta.pagination)")
        total = pagination.get("total_items")
        more = pagination.get("has_next_page")
        records: list[Item] = [r for r in data if isinstance(r, dict)]
        total = total if isinstance(total, int) else offset + len(records)
        return records, total, bool(more) if isinstance(more, bool) else len(records) > 0

    def pages(self, first: tuple[list[Item], int, bool] | None = None) -> Iterator[list[Item]]:
        """Every record, a page at a time (``first``: the first page, already read)."""
        records, _total, more = first or self.page(0)
        offset = 0
        while True:
            yield records
            offset += len(records)
            if not more or not records:
                return
            records, _total, more = self.page(offset)

    @property
    def can_get(self) -> bool:
        return self.routes.get_path is not None

    def get(self, item: Item) -> Item | None:
        """The record with the key of ``item`` (single read), or None when ShopiMind has none."""
        assert self.routes.get_path is not None
        values = {k: quote(id_text(item.get(k)), safe="") for k in self.resource.key}
        path = self.routes.get_path.format(**values)
        resp = self._get(path, None, f"GET {path}")
        if resp.status_code == 404:
            return None
        data = _body(resp, f"GET {path}").get("data")
        if not isinstance(data, dict):
            raise DeliveryError(f"GET {path}: not the single-record envelope (data)")
        return data


def _body(resp: httpx.Response, what: str) -> dict[str, Any]:
    if resp.status_code != 200:
        raise DeliveryError(f"{what}: HTTP {resp.status_code}: {resp.text[:300]}")
    try:
        body = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DeliveryError(f"{what}: the answer is not JSON: {resp.text[:300]}") from None
    if not isinstance(body, dict):
        raise DeliveryError(f"{what}: the answer is not a JSON object: {resp.text[:300]}")
    return body

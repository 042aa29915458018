"""The sandbox's routes: a table of (method, path pattern, handler), built from the registry.

Adding a route is one ``Route`` entry: ``Route("POST", "/v1/things/{thing_id}/bulk", handler,
resource)``; the handler receives a ``Request`` (parsed JSON body, path parameters, query, the
route's resource) and returns a ``Reply``. ``API_ROUTES`` are the ``/v1/`` routes (API key, rate
limit, faults and request log apply); ``CONTROL_ROUTES`` drive the sandbox itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from connector import registry
from connector.registry import Resource
from connector.sandbox import custom, triggers
from connector.sandbox.custom import CustomState
from connector.sandbox.store import (
    Faults,
    JSONObject,
    RateLimiter,
    Rejected,
    Store,
    WriteResult,
    id_text,
)

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

# Body keys the API tolerates next to the ids of a bulk delete (the SDK injects ``label_source``).
_DELETE_EXTRA_KEYS = frozenset({"label_source", "source_label"})

NO_BODY: Any = object()  # ``Request.json`` when the body was not valid JSON


def reason(status: int) -> str:
    return _REASONS.get(status, "Error")


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    body = {"statusCode": status, "message": message, "error": reason(status)}
    return Reply(status, body, headers or {})


@dataclass
class Context:
    """Everything a handler may touch: the state and the fault/limit machinery."""

    store: Store
    faults: Faults
    limiter: RateLimiter
    custom: CustomState = field(default_factory=CustomState)  # definitions, records, events

    def reset(self) -> None:
        """Forget records, deletions, the request log, faults and rate-limit windows."""
        self.store.reset()
        self.custom.reset()
        self.faults.clear()
        self.limiter.reset()


@dataclass
class Request:
    ctx: Context
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, list[str]]
    json: Any  # parsed body; None when empty; NO_BODY when not valid JSON
    resource: Resource | None


Handler = Callable[[Request], Reply]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str  # "/v1/customers/{customer_id}/addresses/bulk-delete"
    handler: Handler
    resource: Resource | None = None
    resource_label: str | None = None  # name logged for routes without a registry resource
    regex: re.Pattern[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        parts = re.split(r"\{(\w+)\}", self.pattern)
        rx = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
        object.__setattr__(self, "regex", re.compile(rx))

    @property
    def label(self) -> str | None:
        return self.resource.name if self.resource is not None else self.resource_label


def match(routes: Sequence[Route], method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    for route in routes:
        if route.method == method:
            m = route.regex.fullmatch(path)
            if m:
                return route, {k: unquote(v) for k, v in m.groupdict().items()}
    return None


def bulk_reply(result: WriteResult) -> Reply:
    status = 400 if result.sent == 0 and result.rejected else 200
    return Reply(
        status,
        {
            "statusCode": status,
            "sent_count": result.sent,
            "rejected_count": len(result.rejected),
            "rejected_items": [r.as_json() for r in result.rejected],
        },
    )


# --- /v1/ handlers ------------------------------------------------------------------------------


def _items(req: Request) -> list[object] | Reply:
    """The body as an array of items within the resource's batch limit, or a 400 reply."""
    assert req.resource is not None
    body = req.json
    if body is NO_BODY:
        return error(400, "body is not valid JSON")
    if not isinstance(body, list):
        return error(400, "body must be an array")
    if not body:
        return error(400, "body must be a non-empty array")
    limit = req.resource.batch_limit
    if len(body) > limit:
        return error(
            400,
            f"body holds {len(body)} items; at most {limit} items per call for "
            f"{req.resource.name} (batch limit {limit})",
        )
    if req.params:  # a placeholder in the route path wins over the same field in the items
        body = [{**it, **req.params} if isinstance(it, dict) else it for it in body]
    return list(body)


def upsert(req: Request) -> Reply:
    """POST on a resource's path: upsert by key; invalid items come back in ``rejected_items``."""
    items = _items(req)
    if isinstance(items, Reply):
        return items
    assert req.resource is not None
    return bulk_reply(req.ctx.store.upsert(req.resource, items))


def update(req: Request) -> Reply:
    """PUT on a resource's path: partial update of existing records (unknown keys rejected)."""
    items = _items(req)
    if isinstance(items, Reply):
        return items
    assert req.resource is not None
    return bulk_reply(req.ctx.store.update(req.resource, items))


def bulk_delete(req: Request) -> Reply:
    """POST on a resource's bulk-delete path with ``{"<entity>_ids": [...]}`` (max 20 ids)."""
    r = req.resource
    assert r is not None and r.delete_body_key is not None
    key = r.delete_body_key
    body = req.json
    if body is NO_BODY:
        return error(400, "body is not valid JSON")
    if not isinstance(body, dict):
        return error(400, f'body must be an object {{"{key}": [...]}}')
    extra = sorted(k for k in body if k != key and k not in _DELETE_EXTRA_KEYS)
    if extra:
        return error(400, f"unknown body field(s): {', '.join(extra)}; expected {key!r}")
    ids = body.get(key)
    if not isinstance(ids, list):
        return error(400, f"{key} must be an array of ids")
    if not ids:
        return error(400, f"{key} must be a non-empty array")
    if len(ids) > r.delete_limit:
        return error(400, f"{key} holds {len(ids)} ids; at most {r.delete_limit} per call")
    result = WriteResult()
    valid: list[str] = []
    for i, v in enumerate(ids):
        if (isinstance(v, str) and v) or (isinstance(v, int) and not isinstance(v, bool)):
            valid.append(id_text(v))
        else:
            result.rejected.append(
                Rejected(i, v, [f"{key}[{i}]: must be an id (string or integer), got {v!r}"])
            )
    if valid:
        req.ctx.store.delete(r, valid, req.params)
    result.sent = len(valid)
    return bulk_reply(result)


_CONTACT_LOOKUPS = ("id_customer_shop", "contact_data_email")


def contact(req: Request) -> Reply:
    """GET /v1/contacts?id_customer_shop=...|contact_data_email=... (derived from customers)."""
    given = [(k, v[0]) for k, v in req.query.items() if k in _CONTACT_LOOKUPS and v]
    if len(given) != 1:
        return error(400, "give exactly one of id_customer_shop, contact_data_email")
    name, value = given[0]
    if name == "id_customer_shop":
        found = req.ctx.store.find_customers("customer_id", value)
    else:
        found = req.ctx.store.find_customers("email", value, casefold=True)
    if not found:
        return Reply(404, {"statusCode": 404, "message": "Contact not found"})
    # Several customers may share one email; the contact follows the latest updated one.
    c = max(found, key=lambda it: str(it.get("updated_at") or ""))
    data = {
        "id_customer_shop": id_text(c.get("customer_id")),
        "contact_data_email": c.get("email"),
        "contact_first_name": c.get("first_name"),
        "contact_last_name": c.get("last_name"),
        "contact_lang": c.get("lang"),
        "optin_data_email": c.get("is_opt_in"),
        "created_at": c.get("created_at"),
        "updated_at": c.get("updated_at"),
    }
    return Reply(200, {"statusCode": 200, "data": data})


def _int_param(req: Request, name: str, default: int) -> int:
    values = req.query.get(name)
    if not values:
        return default
    try:
        value = int(values[0])
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {values[0]!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value


def list_records(req: Request) -> Reply:
    """GET on a resource's list route: ``limit`` (default 10; above 100 falls back to 10, as
    observed on the API) records after ``offset`` in creation order, in the list envelope."""
    assert req.resource is not None
    try:
        limit = _int_param(req, "limit", 10)
        offset = _int_param(req, "offset", 0)
    except ValueError as exc:
        return error(400, str(exc))
    if limit == 0 or limit > 100:
        limit = 10
    data, total = req.ctx.store.page(req.resource.name, offset, limit)
    pages = -(-total // limit)
    current = offset // limit + 1
    more = offset + len(data) < total
    pagination = {
        "total_items": total,
        "items_per_page": limit,
        "total_pages": pages,
        "current_page": current,
        "offset": offset,
        "has_previous_page": offset > 0,
        "has_next_page": more,
        "next_page": current + 1 if more else None,
        "previous_page": current - 1 if offset > 0 else None,
    }
    meta = {"pagination": pagination, "generated_at": iso_now()}
    return Reply(200, {"statusCode": 200, "data": data, "meta": meta})


def get_record(req: Request) -> Reply:
    """GET on a resource's single-read route: the record whose key is in the path, or 404."""
    r = req.resource
    assert r is not None
    found = req.ctx.store.find(r, "|".join(req.params.get(k, "") for k in r.key))
    if found is None:
        return Reply(404, {"statusCode": 404, "message": f"{r.name} record not found"})
    return Reply(200, {"statusCode": 200, "data": found})


def iso_now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _api_routes() -> list[Route]:
    routes: list[Route] = []
    for r in registry.RESOURCES.values():
        if r.kind != "entity":
            continue  # custom data and events: _custom_routes()
        routes.append(Route("POST", r.path, upsert, r))
        routes.append(Route("PUT", r.path, update, r))
        if r.delete_path is not None and r.delete_body_key is not None:
            routes.append(Route("POST", r.delete_path, bulk_delete, r))
    for name, read in registry.READ_ROUTES.items():
        r = registry.RESOURCES[name]
        routes.append(Route("GET", read.list_path, list_records, r))
        if read.get_path is not None:
            routes.append(Route("GET", read.get_path, get_record, r))
    routes.append(Route("GET", "/v1/contacts", contact, resource_label="contacts"))
    routes += _custom_routes()
    return routes


def _adapt(fn: custom.CustomHandler) -> Handler:
    """A handler of ``sandbox.custom``/``sandbox.triggers`` as a route handler."""

    def handler(req: Request) -> Reply:
        if req.json is NO_BODY:
            return error(400, "body is not valid JSON")
        status, body = fn(req.ctx.custom, req.params, req.query, req.json)
        return Reply(status, body)

    handler.__doc__ = fn.__doc__
    return handler


def _custom_routes() -> list[Route]:
    """Custom data definitions and records, event types and triggers (``sandbox.custom``)."""
    defs, one = "/v1/custom-data-definitions", "/v1/custom-data-definitions/{id_definition}"
    recs = "/v1/custom-data-records/{id_definition}"
    table: list[tuple[str, str, custom.CustomHandler, str]] = [
        ("POST", defs, custom.definition_create, "custom-data-definitions"),
        ("GET", defs, custom.definition_list, "custom-data-definitions"),
        ("GET", one, custom.definition_get, "custom-data-definitions"),
        ("PATCH", one + "/extend", custom.definition_extend, "custom-data-definitions"),
        ("PATCH", one + "/activate", custom.definition_activate, "custom-data-definitions"),
        ("PATCH", one + "/deactivate", custom.definition_deactivate, "custom-data-definitions"),
        ("DELETE", one, custom.definition_delete, "custom-data-definitions"),
        ("POST", recs, custom.records_upsert, "custom-data-records"),
        ("GET", recs, custom.records_list, "custom-data-records"),
        ("POST", recs + "/bulk-delete", custom.records_delete, "custom-data-records"),
        ("POST", "/v1/events", triggers.event_create, "events"),
        ("GET", "/v1/events", triggers.event_list, "events"),
        ("POST", "/v1/events/trigger/{code_name}", triggers.trigger, "events-trigger"),
    ]
    return [Route(m, path, _adapt(fn), resource_label=label) for m, path, fn, label in table]


API_ROUTES: list[Route] = _api_routes()


# --- /_sandbox/ control handlers ----------------------------------------------------------------


def _known(name: str) -> Resource | Reply:
    r = registry.RESOURCES.get(name)
    if r is None:
        return error(404, f"unknown resource {name!r}")
    return r


def ctl_records(req: Request) -> Reply:
    r = _known(req.params["resource"])
    return r if isinstance(r, Reply) else Reply(200, req.ctx.store.records(r.name))


def ctl_deleted(req: Request) -> Reply:
    r = _known(req.params["resource"])
    return r if isinstance(r, Reply) else Reply(200, sorted(req.ctx.store.deleted(r.name)))


def ctl_requests(req: Request) -> Reply:
    return Reply(200, [asdict(x) for x in req.ctx.store.requests()])


def ctl_stats(req: Request) -> Reply:
    return Reply(200, req.ctx.store.stats())


def _opt_int(body: JSONObject, name: str) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{name} must be an integer")
    return v


def ctl_faults(req: Request) -> Reply:
    """``{"status": 503, "count": 2, "path_prefix": ..., "retry_after": ..., "applied": bool}``,
    ``{"delay": 0.3, "count": ...}`` or ``{"clear": true}``."""
    body = req.json
    if not isinstance(body, dict):
        return error(400, "body must be a JSON object")
    faults = req.ctx.faults
    try:
        if body.get("clear") is True:
            faults.clear()
        elif "delay" in body:
            delay = body["delay"]
            if isinstance(delay, bool) or not isinstance(delay, (int, float)):
                raise ValueError("delay must be a number of seconds")
            faults.inject_delay(float(delay), _opt_int(body, "count"))
        elif "status" in body:
            status = _opt_int(body, "status")
            prefix = body.get("path_prefix")
            if prefix is not None and not isinstance(prefix, str):
                raise ValueError("path_prefix must be a string")
            count = _opt_int(body, "count")
            faults.inject(
                status if status is not None else 503,
                count if count is not None else 2,
                prefix,
                _opt_int(body, "retry_after"),
                body.get("applied") is True,
            )
        else:
            raise ValueError('expected "status", "delay" or "clear"')
    except ValueError as exc:
        return error(400, str(exc))
    return Reply(200, {"ok": True})


def ctl_drop(req: Request) -> Reply:
    """``{"share": 0.2, "seed": 1}``: accept that share of upserted items without storing them."""
    body = req.json
    if not isinstance(body, dict):
        return error(400, "body must be a JSON object")
    share, seed = body.get("share"), body.get("seed", 0)
    if isinstance(share, bool) or not isinstance(share, (int, float)):
        return error(400, "share must be a number between 0 and 1")
    if isinstance(seed, bool) or not isinstance(seed, int):
        return error(400, "seed must be an integer")
    try:
        req.ctx.store.drop(float(share), seed)
    except ValueError as exc:
        return error(400, str(exc))
    return Reply(200, {"ok": True})


def ctl_dropped(req: Request) -> Reply:
    r = _known(req.params["resource"])
    return r if isinstance(r, Reply) else Reply(200, sorted(req.ctx.store.dropped(r.name)))


def ctl_reset(req: Request) -> Reply:
    req.ctx.reset()
    return Reply(200, {"ok": True})


CONTROL_ROUTES: list[Route] = [
    Route("GET", "/_sandbox/records/{resource}", ctl_records),
    Route("GET", "/_sandbox/deleted/{resource}", ctl_deleted),
    Route("GET", "/_sandbox/dropped/{resource}", ctl_dropped),
    Route("POST", "/_sandbox/drop", ctl_drop),
    Route("GET", "/_sandbox/requests", ctl_requests),
    Route("GET", "/_sandbox/stats", ctl_stats),
    Route("POST", "/_sandbox/faults", ctl_faults),
    Route("POST", "/_sandbox/reset", ctl_reset),
]

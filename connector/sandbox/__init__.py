"""A local stand-in for the ShopiMind v1 REST API, served on loopback with the standard library.

Used by the demo, the end-to-end tests and the benchmarks::

    from connector.sandbox import Sandbox

    with Sandbox(api_keys={"test-key-0123456789abcdef"}, requests_per_minute=600) as sb:
        ...  # point the connector at sb.url; inspect sb.records("customers"), sb.requests

What it imitates (rules from ``/work/shared/shopimind-api.md`` and ``connector.registry``):

* ``spm-api-key`` header checked on every ``/v1/`` route (401 otherwise); a sliding 60 s
  window of ``requests_per_minute`` requests per key (429 with ``Retry-After`` beyond).
* For every entity resource of the registry: ``POST path`` = upsert by key, ``PUT path`` =
  partial update of existing keys, ``POST delete_path`` = bulk delete of up to 20 ids (unknown
  ids skipped, localized resources lose all language rows). Bodies: a JSON array up to the
  resource's batch limit; each item is validated with ``registry.check_item``; the answer is
  ``{"statusCode", "sent_count", "rejected_count", "rejected_items": [{"index", "item",
  "errors"}]}`` — 200, or 400 when every item is invalid.
* The documented read routes (``registry.READ_ROUTES``): ``GET`` list routes answer the list
  envelope (``data`` + ``meta.pagination``) with ``limit`` (default 10, above 100 falls back to
  10) and ``offset``, in creation order; single reads (customers, orders by id) answer
  ``{"statusCode", "data"}`` or 404. Records carry ShopiMind's own ``id`` besides what was sent.
* ``GET /v1/contacts?id_customer_shop=...`` or ``?contact_data_email=...``: a contact derived
  from the stored customers.
* Control routes without key or rate limit: ``GET /_sandbox/records/{resource}``,
  ``/_sandbox/deleted/{resource}``, ``/_sandbox/requests``, ``/_sandbox/stats``;
  ``/_sandbox/dropped/{resource}``; ``POST /_sandbox/drop`` (``{"share": 0.2, "seed": 1}``:
  accept that share of upserted items without storing them, as a queue losing them would);
  ``POST /_sandbox/faults`` (``{"status": 503, "count": 2}``, ``{"delay": 0.3}``,
  ``{"clear": true}``) and ``POST /_sandbox/reset``.

Differences from the real API, on purpose: writes apply immediately (the API queues them), and
referential integrity is not enforced (a variation whose ``product_id`` names no stored product is
accepted). Key values are compared as strings (``42`` == ``"42"``).
"""

from connector.sandbox.server import Sandbox, serve
from connector.sandbox.store import RequestLog

__all__ = ["RequestLog", "Sandbox", "serve"]

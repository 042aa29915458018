"""The API's documented read routes of the registry's resources (API reference §2, §1.4, §1.7).

``list_path`` answers the list envelope (``data`` + ``meta.pagination``) with ``limit``/``offset``;
``get_path``, where documented, reads one record by its key (``{"statusCode", "data"}``, 404 when
unknown). Resources without an entry here have no documented list route (variations, images,
newsletter subscribers) or only one per parent (addresses): the audit skips them and says so.

Read it through :mod:`connector.registry`, which re-exports :data:`READ_ROUTES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

LIST_LIMIT = 100  # records per list request: larger values are not documented (§1.7)


@dataclass(frozen=True)
class ReadRoutes:
    list_path: str
    get_path: str | None = None  # "/v1/customers/{customer_id}": placeholders are key fields


READ_ROUTES: Mapping[str, ReadRoutes] = {
    "customers": ReadRoutes("/v1/customers", "/v1/customers/{customer_id}"),
    "customers_groups": ReadRoutes("/v1/customers-groups"),
    "orders": ReadRoutes("/v1/orders", "/v1/orders/id/{order_id}"),
    "orders_statuses": ReadRoutes("/v1/orders-statuses"),
    "orders_carriers": ReadRoutes("/v1/orders-carriers"),
    "products": ReadRoutes("/v1/products"),
    "products_categories": ReadRoutes("/v1/products-categories"),
    "products_manufacturers": ReadRoutes("/v1/products-manufacturers"),
    "vouchers": ReadRoutes("/v1/vouchers"),
}

"""The sandbox's read routes (list envelope with pagination, single reads) and the controls the
audit's tests use: silent drops, and records edited, removed or added behind the connector."""

from __future__ import annotations

import httpx
import pytest

from connector.audit.compare import api_key, differences, normalize
from connector.registry import RESOURCES
from tests.unit.test_sandbox import KEY, api, customer, product, sb  # noqa: F401

__all__ = ["api", "sb"]


def test_list_route_pages_in_the_documented_envelope(api: httpx.Client) -> None:
    items = [customer(f"c{i}") for i in range(25)]
    assert api.post("/v1/customers", json=items[:20]).status_code == 200
    assert api.post("/v1/customers", json=items[20:]).status_code == 200
    first = api.get("/v1/customers", params={"limit": 10}).json()
    p = first["meta"]["pagination"]
    assert (p["total_items"], p["items_per_page"], p["total_pages"]) == (25, 10, 3)
    assert (p["current_page"], p["offset"], p["has_next_page"], p["next_page"]) == (1, 0, True, 2)
    assert p["has_previous_page"] is False and p["previous_page"] is None
    assert first["meta"]["generated_at"].endswith("Z")
    assert [r["customer_id"] for r in first["data"]] == [f"c{i}" for i in range(10)]
    last = api.get("/v1/customers", params={"limit": 10, "offset": 20}).json()
    assert [r["customer_id"] for r in last["data"]] == [f"c{i}" for i in range(20, 25)]
    assert last["meta"]["pagination"]["has_next_page"] is False
    assert last["meta"]["pagination"]["previous_page"] == 2
    assert len(api.get("/v1/customers").json()["data"]) == 10  # default limit
    assert len(api.get("/v1/customers", params={"limit": 500}).json()["data"]) == 10
    assert api.get("/v1/customers", params={"offset": "x"}).status_code == 400
    ids = {r["id"] for r in first["data"]}  # ShopiMind's own id, besides what was sent
    assert len(ids) == 10


def test_single_reads_and_404(api: httpx.Client) -> None:
    api.post("/v1/customers", json=[customer("000123")])
    got = api.get("/v1/customers/000123").json()
    assert got["statusCode"] == 200 and got["data"]["customer_id"] == "000123"
    assert api.get("/v1/customers/123").status_code == 404  # ids stay exact strings
    assert api.get("/v1/orders/id/nope").status_code == 404
    assert api.get("/v1/customers", headers={"spm-api-key": "x" * 30}).status_code == 401


def test_drop_accepts_without_storing_and_names_the_keys(api: httpx.Client, sb: object) -> None:
    from connector.sandbox import Sandbox

    assert isinstance(sb, Sandbox)
    sb.drop(0.5, seed=1)
    body = api.post("/v1/customers", json=[customer(f"d{i}") for i in range(40)]).json()
    assert body["sent_count"] == 40 and body["rejected_count"] == 0  # all "accepted"
    dropped = sb.dropped("customers")
    assert 5 < len(dropped) < 35
    assert set(sb.records("customers")) == {f"d{i}" for i in range(40)} - dropped
    sb.drop(0.0)
    api.post("/v1/customers", json=[customer(k) for k in sorted(dropped)[:20]])
    assert len(sb.dropped("customers")) == len(dropped) - 20  # stored at last
    with pytest.raises(ValueError):
        sb.drop(2.0)
    ctl = httpx.post(f"{sb.url}/_sandbox/drop", json={"share": 1, "seed": 3})
    assert ctl.status_code == 200
    api.post("/v1/customers", json=[customer("lost")])
    assert "lost" in httpx.get(f"{sb.url}/_sandbox/dropped/customers").json()


def test_edit_remove_add_behind_the_connector(api: httpx.Client, sb: object) -> None:
    from connector.sandbox import Sandbox

    assert isinstance(sb, Sandbox)
    api.post("/v1/products", json=[product(7, "fr"), product(7, "en")])
    sb.edit("products", "7|fr", name="Edited")
    sb.remove("products", "7|en")
    key = sb.add("products", product(8, "de"))
    assert key == "8|de"
    data = {r["product_id"]: r for r in api.get("/v1/products").json()["data"]}
    assert data[7]["name"] == "Edited" and set(data) == {7, 8}
    with pytest.raises(KeyError):
        sb.remove("products", "7|en")
    # the bulk delete still finds the added record by its id
    api.post("/v1/products/bulk-delete", json={"product_ids": [8]})
    assert set(sb.records("products")) == {"7|fr"}


def test_compare_by_the_api_types() -> None:
    orders, customers = RESOURCES["orders"], RESOURCES["customers"]
    assert api_key(RESOURCES["products"], {"product_id": 42, "lang": "fr"}) == "42|fr"
    assert normalize(10.5, orders.field("amount")) == normalize("10.50", orders.field("amount"))
    assert normalize(10.501, orders.field("amount")) == normalize(10.5, orders.field("amount"))
    assert normalize(10.51, orders.field("amount")) != normalize(10.5, orders.field("amount"))
    created = customers.field("created_at")
    assert normalize("2026-05-07T08:00:00.000Z", created) == normalize(
        "2026-05-07T10:00:00+02:00", created
    )
    groups = customers.field("group_ids")
    assert normalize([3, "1", 2], groups) == normalize(["2", 3, 1], groups)
    assert normalize("000123", customers.field("customer_id")) != normalize(
        123, customers.field("customer_id")
    )
    lines = [{"product_id": 1, "price": 2, "quantity": 1}, {"product_id": 2, "price": 3.1}]
    moved = [{"product_id": "2", "price": 3.10}, {"product_id": 1, "price": 2.0, "quantity": 1}]
    diff = differences(orders, {"products": lines, "amount": 5}, {"products": moved}, ["products"])
    assert diff == {}
    diff = differences(orders, {"amount": 5, "id": 1}, {"amount": 6, "id": 2}, ["amount"])
    assert diff == {"amount": {"expected": 5, "actual": 6}}

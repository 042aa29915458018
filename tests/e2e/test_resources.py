"""Every writable resource end to end with its example mapping: the demo shop in a real database,
one sync, and what the sandbox holds checked field by field against the shop with our own SQL.
Also: one item per language, relationships from the shop's foreign keys (arrays included), a
translation changed alone, and an update of unmapped columns that sends nothing.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Env, make_env, shop_now

ALL = [
    "customers_groups",
    "orders_carriers",
    "orders_statuses",
    "products_categories",
    "products_manufacturers",
    "customers",
    "newsletter_subscribers",
    "customers_addresses",
    "products",
    "products_images",
    "products_variations",
    "vouchers",
    "orders",
    "carts",
]


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    with make_env(db_url, tmp_path) as e:
        assert e.cli("db", "upgrade").code == 0
        yield e


def use(env: Env, names: list[str], **sections: dict[str, object]) -> None:
    """Only these example mappings; the connector's own budget as high as the sandbox's."""
    env.use_mappings(names)
    env.write_config(shopimind={"requests_per_minute": 6000}, **sections)


def money(v: object) -> float:
    return float(Decimal(str(v)).quantize(Decimal("0.01")))


def ids(values: object) -> str:
    return str(values)


def opt_id(v: object) -> str | None:
    return None if v is None else str(v)


def num(v: object) -> int:
    return int(str(v))


def flag(v: object) -> bool:
    return bool(int(str(v)))


def posted(env: Env, path: str) -> int:
    return sum(r.item_count for r in env.sandbox.requests if r.method == "POST" and r.path == path)


def test_every_resource_end_to_end(env: Env) -> None:
    use(env, ALL)
    res = env.cli("sync")
    assert res.code == 0, res.text
    for name in ALL:
        assert name in res.out
    sb = env.sandbox
    assert all(r.status == 200 for r in sb.requests)
    assert env.cli("rejected", "list").out.strip() == "no open rejected items"

    # customers, with group_ids (an array) from the customer's group
    rows = env.sql(
        "SELECT id, email, first_name, optin, group_id, lang FROM customers "
        "WHERE deleted_at IS NULL"
    )
    got = sb.records("customers")
    assert set(got) == {ids(r["id"]) for r in rows}
    for r in rows:
        item = got[ids(r["id"])]
        assert item["email"] == str(r["email"]).strip().lower()
        assert item["first_name"] == r["first_name"]
        assert item["is_opt_in"] is (r["optin"] == "Y")
        assert item["group_ids"] == [str(r["group_id"])]
        assert item["lang"] == r["lang"]

    rows = env.sql(
        "SELECT id, customer_id, city, country_iso, line1 FROM addresses WHERE deleted_at IS NULL"
    )
    got = sb.records("customers_addresses")
    assert set(got) == {ids(r["id"]) for r in rows}
    for r in rows:
        item = got[ids(r["id"])]
        assert item["customer_id"] == str(r["customer_id"])
        assert (item["city"], item["address_line_1"]) == (r["city"], r["line1"])
        assert item["country"] == str(r["country_iso"]).upper()

    for resource, table, parent, column in (
        ("customers_groups", "customer_group_translations", "group_id", "name"),
        ("orders_statuses", "order_status_translations", "status_id", "name"),
        ("vouchers", "voucher_translations", "voucher_id", "description"),
    ):
        rows = env.sql(f"SELECT {parent} AS id, lang, {column} AS v FROM {table}")
        got = sb.records(resource)
        assert set(got) == {f"{r['id']}|{r['lang']}" for r in rows}, resource
        for r in rows:
            assert got[f"{r['id']}|{r['lang']}"][column] == r["v"], resource
    for r in env.sql("SELECT id, deleted FROM order_statuses"):
        assert sb.records("orders_statuses")[f"{r['id']}|fr"]["is_deleted"] is flag(r["deleted"])
    for r in env.sql("SELECT v.id, v.code, v.type, v.value, v.customer_id FROM vouchers v"):
        item = sb.records("vouchers")[f"{r['id']}|fr"]
        kind = {"F": "free_shipping", "A": "amount_reduction", "P": "percentage_reduction"}
        assert (item["code"], item["type_voucher"]) == (r["code"], kind[str(r["type"])])
        assert item["value"] == (None if r["value"] is None else money(r["value"]))
        assert item["customer_id"] == opt_id(r["customer_id"])

    for resource, table in (
        ("orders_carriers", "carriers"),
        ("products_manufacturers", "manufacturers"),
    ):
        rows = env.sql(f"SELECT id, name, active FROM {table}")
        got = sb.records(resource)
        assert {k: (v["name"], v["is_active"]) for k, v in got.items()} == {
            ids(r["id"]): (r["name"], flag(r["active"])) for r in rows
        }, resource

    rows = env.sql(
        "SELECT c.id, t.lang, t.name, c.parent_id FROM categories c "
        "JOIN category_translations t ON t.category_id = c.id"
    )
    got = sb.records("products_categories")
    assert set(got) == {f"{r['id']}|{r['lang']}" for r in rows}
    for r in rows:
        item = got[f"{r['id']}|{r['lang']}"]
        assert item["name"] == r["name"]
        assert item["parent_category_id"] == (
            None if r["parent_id"] is None else num(r["parent_id"])
        )

    rows = env.sql("SELECT email, subscribed FROM newsletter_subscriptions")
    got = sb.records("newsletter_subscribers")
    assert {k: v["is_subscribed"] for k, v in got.items()} == {
        str(r["email"]).strip().lower(): flag(r["subscribed"]) for r in rows
    }

    check_products(env)
    check_orders_and_carts(env)


def check_products(env: Env) -> None:
    sb = env.sandbox
    links: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for r in env.sql("SELECT product_id, category_id, position FROM product_categories"):
        links[num(r["product_id"])].append((num(r["position"]), num(r["category_id"])))
    rows = env.sql(
        "SELECT p.id, t.lang, t.name, t.slug, p.price_incl, p.manufacturer_id, p.stock "
        "FROM products p JOIN product_translations t ON t.product_id = p.id "
        "WHERE p.deleted_at IS NULL"
    )
    got = sb.records("products")
    assert set(got) == {f"{r['id']}|{r['lang']}" for r in rows}
    for r in rows:
        item = got[f"{r['id']}|{r['lang']}"]
        assert (item["name"], item["lang"]) == (r["name"], r["lang"])
        assert item["price"] == money(r["price_incl"])
        assert item["quantity_remaining"] == num(r["stock"])
        assert item["manufacturer_id"] == opt_id(r["manufacturer_id"])
        assert item["category_ids"] == [c for _, c in sorted(links[num(r["id"])])]
        assert item["link"].endswith(f"/{r['lang']}/p/{r['id']}-{r['slug']}")

    rows = env.sql(
        "SELECT v.id, v.product_id, t.lang, t.name, v.label, v.price_incl FROM product_variations v"
        " JOIN products p ON p.id = v.product_id"
        " JOIN product_translations t ON t.product_id = v.product_id WHERE p.deleted_at IS NULL"
    )
    got = sb.records("products_variations")
    assert rows and set(got) == {f"{r['product_id']}|{r['id']}|{r['lang']}" for r in rows}
    for r in rows:
        item = got[f"{r['product_id']}|{r['id']}|{r['lang']}"]
        assert item["name"] == f"{r['name']} - {r['label']}"
        assert item["price"] == money(r["price_incl"])

    rows = env.sql(
        "SELECT i.id, i.product_id, t.lang, i.url, i.variation_id, i.is_cover"
        " FROM product_images i JOIN products p ON p.id = i.product_id"
        " JOIN product_translations t ON t.product_id = i.product_id WHERE p.deleted_at IS NULL"
    )
    got = sb.records("products_images")
    assert set(got) == {f"{r['product_id']}|{r['id']}|{r['lang']}" for r in rows}
    for r in rows:
        item = got[f"{r['product_id']}|{r['id']}|{r['lang']}"]
        assert item["url"] == r["url"]
        assert item["variation_id"] == (
            None if r["variation_id"] is None else num(r["variation_id"])
        )
        assert item["is_default"] is flag(r["is_cover"])


def lines_of(env: Env, table: str, parent: str) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for r in env.sql(
        f"SELECT {parent} AS parent, product_id, variation_id, qty, unit_price_incl FROM {table}"
        " ORDER BY id"
    ):
        variation = None if r["variation_id"] is None else num(r["variation_id"])
        out[ids(r["parent"])].append(
            (num(r["product_id"]), variation, num(r["qty"]), money(r["unit_price_incl"]))
        )
    return out


def check_orders_and_carts(env: Env) -> None:
    sb = env.sandbox
    lines = lines_of(env, "order_lines", "order_id")
    rows = env.sql(
        "SELECT id, status_id, carrier_id, delivery_address_id, invoice_address_id, customer_id,"
        " cart_id, total_incl, reference FROM orders"
    )
    got = sb.records("orders")
    assert set(got) == {ids(r["id"]) for r in rows}
    for r in rows:
        item = got[ids(r["id"])]
        assert item["status_id"] == str(r["status_id"])
        assert item["carrier_id"] == str(r["carrier_id"])
        assert item["address_delivery_id"] == str(r["delivery_address_id"])
        assert item["address_invoice_id"] == str(r["invoice_address_id"])
        assert item["customer"]["customer_id"] == str(r["customer_id"])
        assert item["cart_id"] == str(r["cart_id"])
        assert (item["amount"], item["reference"]) == (money(r["total_incl"]), r["reference"])
        sent = [
            (p["product_id"], p["product_variation_id"], p["quantity"], p["price"])
            for p in item["products"]
        ]
        assert sent == lines[ids(r["id"])]
    # every status, carrier and address an order names was sent too
    assert {o["status_id"] + "|fr" for o in got.values()} <= set(sb.records("orders_statuses"))
    assert {o["carrier_id"] for o in got.values()} <= set(sb.records("orders_carriers"))

    lines = lines_of(env, "cart_lines", "cart_id")
    rows = env.sql(
        "SELECT ca.id, ca.customer_id, ca.order_id, c.email FROM carts ca"
        " JOIN customers c ON c.id = ca.customer_id"
    )
    got = sb.records("carts")
    assert set(got) == {ids(r["id"]) for r in rows}
    for r in rows:
        item = got[ids(r["id"])]
        assert item["customer"] == {
            "customer_id": str(r["customer_id"]),
            "email": str(r["email"]).strip().lower(),
        }
        assert item.get("order_id") == opt_id(r["order_id"])
        sent = [
            (p["product_id"], p["product_variation_id"], p["quantity"], p["price"])
            for p in item["products"]
        ]
        assert sent == lines[ids(r["id"])]
        assert item["amount"] == money(sum(q * p for _, _, q, p in lines[ids(r["id"])]))


def test_languages_categories_and_a_translation_changed_alone(env: Env) -> None:
    use(env, ["products"])
    assert env.cli("sync").code == 0
    (pid,) = [
        r["product_id"]
        for r in env.sql(
            "SELECT product_id FROM product_categories pc JOIN products p ON p.id = pc.product_id"
            " WHERE p.deleted_at IS NULL GROUP BY product_id HAVING COUNT(*) >= 2"
            " ORDER BY product_id"
        )[:1]
    ]
    got = env.sandbox.records("products")
    fr, en = got[f"{pid}|fr"], got[f"{pid}|en"]
    names = {
        r["lang"]: r["name"]
        for r in env.sql("SELECT lang, name FROM product_translations WHERE product_id = :p", p=pid)
    }
    assert (fr["name"], en["name"]) == (names["fr"], names["en"]) and names["fr"] != names["en"]
    assert len(fr["category_ids"]) >= 2 and fr["category_ids"] == en["category_ids"]
    assert fr["price"] == en["price"] and fr["description"] != en["description"]

    time.sleep(0.01)
    before = len(env.sandbox.requests)
    env.execute(
        "UPDATE product_translations SET name = :n, updated_at = :now"
        " WHERE product_id = :p AND lang = 'en'",
        n="Renamed in English only",
        now=shop_now(),
        p=pid,
    )
    res = env.cli("sync")
    assert res.code == 0, res.text
    new = env.sandbox.requests[before:]
    assert [(r.path, r.item_count) for r in new] == [("/v1/products", 1)]
    got = env.sandbox.records("products")
    assert got[f"{pid}|en"]["name"] == "Renamed in English only"
    assert got[f"{pid}|fr"] == fr


def test_an_update_of_unmapped_columns_sends_nothing(env: Env) -> None:
    """Rows re-read because their cursor moved, whose item did not change, are not sent again.
    (Images, variations and addresses carry no timestamp, so a touched row maps to the same
    item.)"""
    names = ["customers_addresses", "products_images", "products_variations"]
    use(env, names)
    assert env.cli("sync").code == 0
    assert posted(env, "/v1/products/images/bulk") > 0  # the first pass did send
    before = len(env.sandbox.requests)
    time.sleep(0.01)
    now = shop_now()
    # tax_rate is not mapped; the product's updated_at is part of its images' and variations'
    # watermark; addresses saved without a change
    env.execute("UPDATE products SET tax_rate = tax_rate + 1, updated_at = :now", now=now)
    env.execute("UPDATE addresses SET updated_at = :now WHERE id <= 5", now=now)
    res = env.cli("sync")
    assert res.code == 0, res.text
    assert env.sandbox.requests[before:] == []
    runs = {r["mapping"]: r["last_run"] for r in json.loads(env.cli("status", "--json").out)}
    images = len(
        env.sql(
            "SELECT i.id FROM product_images i JOIN product_translations t"
            " ON t.product_id = i.product_id"
        )
    )
    assert runs["products_images"]["rows_read"] >= images
    assert runs["customers_addresses"]["rows_read"] >= 5
    for name in names:
        assert runs[name]["items_sent"] == 0 and runs[name]["unchanged"] > 0, name

"""The core pipeline end to end: shop database → mapping files → sandbox over HTTP.

Runs on SQLite always and on PostgreSQL / MariaDB when their URLs are configured.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.harness import KEY, Env, make_env, shop_now

CORE = ["customers", "products_categories", "products", "orders"]


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    with make_env(db_url, tmp_path) as e:
        assert e.cli("db", "upgrade").code == 0
        yield e


def _money(v: object) -> float:
    return float(Decimal(str(v)).quantize(Decimal("0.01")))


def assert_core_matches_shop(env: Env) -> None:
    """What the sandbox holds equals what the shop database says (checked with our own SQL)."""
    sb = env.sandbox
    customers = env.sql(
        "SELECT id, email, first_name, last_name FROM customers WHERE deleted_at IS NULL"
    )
    got = sb.records("customers")
    assert set(got) == {str(c["id"]) for c in customers}
    for c in customers:
        item = got[str(c["id"])]
        assert item["email"] == str(c["email"]).strip().lower()
        assert (item["first_name"], item["last_name"]) == (c["first_name"], c["last_name"])

    cats = env.sql("SELECT category_id, lang, name FROM category_translations")
    got = sb.records("products_categories")
    assert set(got) == {f"{c['category_id']}|{c['lang']}" for c in cats}
    for c in cats:
        assert got[f"{c['category_id']}|{c['lang']}"]["name"] == c["name"]

    prods = env.sql(
        "SELECT p.id, t.lang, t.name, p.price_incl FROM products p "
        "JOIN product_translations t ON t.product_id = p.id WHERE p.deleted_at IS NULL"
    )
    links = env.sql("SELECT product_id, category_id FROM product_categories")
    got = sb.records("products")
    assert {f"{p['id']}|{p['lang']}" for p in prods} <= set(got)
    for p in prods:
        item = got[f"{p['id']}|{p['lang']}"]
        assert item["name"] == p["name"]
        assert item["price"] == _money(p["price_incl"])
        assert sorted(item["category_ids"]) == sorted(
            int(str(x["category_id"])) for x in links if x["product_id"] == p["id"]
        )

    orders = env.sql("SELECT id, total_incl, customer_id FROM orders")
    lines = env.sql("SELECT order_id, product_id, qty FROM order_lines")
    got = sb.records("orders")
    assert set(got) == {str(o["id"]) for o in orders}
    for o in orders:
        item = got[str(o["id"])]
        assert item["amount"] == _money(o["total_incl"])
        assert item["customer"]["customer_id"] == str(o["customer_id"])
        mine = sorted(
            (int(str(x["product_id"])), int(str(x["qty"])))
            for x in lines
            if x["order_id"] == o["id"]
        )
        assert sorted((p["product_id"], p["quantity"]) for p in item["products"]) == mine


def test_full_sync_then_only_changes(env: Env) -> None:
    env.use_mappings(CORE)
    first = env.cli("sync")
    assert first.code == 0, first.text
    assert "customers" in first.out and "orders" in first.out
    assert_core_matches_shop(env)
    # every request respected the batch limits
    for r in env.sandbox.requests:
        assert r.item_count <= 100
    n_before = len(env.sandbox.requests)

    # nothing changed: nothing is sent
    again = env.cli("sync")
    assert again.code == 0, again.text
    assert len(env.sandbox.requests) == n_before

    time.sleep(0.05)
    from connector.demo import shop

    changed = shop.mutate(env.engine, now=shop_now())
    env.sandbox.reset()
    second = env.cli("sync")
    assert second.code == 0, second.text
    sent = {
        name: {k for k in env.sandbox.records(name)} for name in ("customers", "orders", "products")
    }
    assert sent["customers"] == {str(i) for i in changed["customers"]}
    expected_orders = {str(i) for i in changed.get("orders", [])}
    assert sent["orders"] == expected_orders
    # the repriced product (both languages) and the retitled translation; not the others
    repriced_or_retitled = {str(i) for i in changed.get("products", [])} | {
        str(pid) for pid, _lang in changed.get("product_translations", [])
    }
    assert {k.split("|")[0] for k in sent["products"]} <= repriced_or_retitled
    assert sent["products"], "the changed product was not re-sent"
    # items sent == rows changed: the second pass sent only what changed
    posted = sum(
        r.item_count
        for r in env.sandbox.requests
        if r.method == "POST" and "bulk-delete" not in r.path
    )
    assert posted == sum(len(v) for v in sent.values()) + 0 * len(
        env.sandbox.records("products_categories")
    )


def test_preview_touches_neither_api_nor_cursor(env: Env) -> None:
    env.use_mappings(["orders"])
    res = env.cli("preview", "orders", "--limit", "3")
    assert res.code == 0, res.text
    items = json.loads(res.out)
    assert len(items) == 3
    assert {"order_id", "customer", "products", "amount"} <= set(items[0])
    assert items[0]["created_at"].endswith("Z")
    assert env.sandbox.requests == []
    status = env.cli("status", "--json")
    assert json.loads(status.out)[0]["cursor"] is None


def test_status_and_reset(env: Env) -> None:
    env.use_mappings(["customers"])
    assert env.cli("sync").code == 0
    rows = json.loads(env.cli("status", "--json").out)
    (st,) = rows
    assert st["mapping"] == "customers"
    assert st["cursor"].endswith("Z")
    assert st["rows_behind"] == 0
    assert st["rejected"] == 0
    assert st["last_run"]["outcome"] == "ok"
    total = len(env.sql("SELECT id FROM customers WHERE deleted_at IS NULL"))
    assert st["known_sent"] == total

    env.sandbox.reset()
    res = env.cli("reset", "customers")
    assert res.code == 0 and "cursor reset to the start" in res.out
    assert json.loads(env.cli("status", "--json").out)[0]["rows_behind"] > 0
    assert env.cli("sync").code == 0
    assert len(env.sandbox.records("customers")) == total  # re-sent although nothing changed


def test_state_database_behind_is_refused(env: Env, tmp_path: Path) -> None:
    env.write_config(state={"url": f"sqlite:///{tmp_path / 'fresh-state.sqlite'}"})
    for cmd in (["sync"], ["status"], ["rejected", "list"]):
        res = env.cli(*cmd)
        assert res.code == 2, (cmd, res.text)
        assert "db upgrade" in res.err
    assert env.sandbox.requests == []


def test_service_run_and_sigterm(env: Env) -> None:
    import signal
    import subprocess
    import sys

    env.use_mappings(["customers", "products_categories"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector.cli", "run", "--config", str(env.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        total = len(env.sql("SELECT id FROM customers WHERE deleted_at IS NULL"))
        while time.monotonic() < deadline and len(env.sandbox.records("customers")) < total:
            time.sleep(0.1)
        assert len(env.sandbox.records("customers")) == total
        # a change while the service runs is picked up by a later pass
        env.execute(
            "UPDATE customers SET first_name = 'Zoé', updated_at = :now WHERE id = 1",
            now=shop_now(),
        )
        while (
            time.monotonic() < deadline
            and env.sandbox.records("customers")["1"]["first_name"] != "Zoé"
        ):
            time.sleep(0.1)
        assert env.sandbox.records("customers")["1"]["first_name"] == "Zoé"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped cleanly" in err
    assert KEY not in out + err

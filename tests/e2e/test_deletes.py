"""Deletes end to end: soft deletes (a deleted flag: sync bulk-deletes the row) and hard deletes
(rows removed outright: `reconcile` finds and deletes them), with the guards that keep a failed
or partial read of the shop from deleting anything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from connector.config import load_config
from connector.demo import shop
from connector.errors import SourceError
from connector.reconcile import reconcile_mapping
from connector.runtime import Runtime
from connector.state.model import Accepted, key_json
from connector.state.store import StateStore
from tests.e2e.harness import Env, make_env, shop_now
from tests.e2e.test_resources import ALL, use

LEGACY = """
resource = "orders_carriers"

[source]
table = "legacy_carriers"
key = ["id"]
cursor = "updated_at"

[fields]
carrier_id = "id"
name = "name"
is_active = "active"
created_at = "updated_at"
updated_at = "updated_at"
"""
DELETE_PATH = "/v1/orders-carriers/bulk-delete"
ALL_DELETABLE = [
    "customers",
    "customers_addresses",
    "products",
    "products_variations",
    "products_images",
    "orders",
]


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    with make_env(db_url, tmp_path) as e:
        assert e.cli("db", "upgrade").code == 0
        yield e


def status(env: Env) -> dict[str, dict[str, object]]:
    res = env.cli("status", "--json")
    assert res.code == 0, res.text
    return {r["mapping"]: r for r in json.loads(res.out)}


def deletes(env: Env, since: int = 0) -> list[tuple[str, int]]:
    return [
        (r.path, r.item_count)
        for r in env.sandbox.requests[since:]
        if r.path.endswith("/bulk-delete")
    ]


def test_demo_soft_deletes_by_sync_and_hard_deletes_by_reconcile(env: Env) -> None:
    use(env, ALL)
    assert env.cli("sync").code == 0
    sb = env.sandbox
    # the first sync deleted rows that were already soft-deleted (never known as deleted here:
    # one idempotent call each, once); only what happens after mutate() matters below
    old = {name: set(sb.deleted(name)) for name in ALL_DELETABLE}
    old_products = env.sql(
        "SELECT COUNT(*) AS n FROM products p JOIN product_translations t"
        " ON t.product_id = p.id WHERE p.deleted_at IS NOT NULL"
    )[0]["n"]
    old_customers = env.sql("SELECT COUNT(*) AS n FROM customers WHERE deleted_at IS NOT NULL")
    old_customers = old_customers[0]["n"]
    assert env.cli("sync").code == 0
    assert {name: set(sb.deleted(name)) for name in ALL_DELETABLE} == old  # not again
    time.sleep(0.05)
    changed = shop.mutate(env.engine, now=shop_now())

    def fresh(name: str) -> set[str]:
        return sb.deleted(name) - old[name]

    n = len(sb.requests)
    res = env.cli("sync")
    assert res.code == 0, res.text

    # soft deletes, by sync: a product (both languages, one id) with its variations and images
    # (nested routes per product), and an address (nested route per customer)
    (removed,) = [
        r["id"]
        for r in env.sql("SELECT id FROM products WHERE deleted_at IS NOT NULL")
        if r["id"] in changed["products"]
    ]
    assert str(removed) in fresh("products")
    assert not [k for k in sb.records("products") if k.startswith(f"{removed}|")]
    of_removed = "SELECT id FROM {} WHERE product_id = :p"
    variations = {r["id"] for r in env.sql(of_removed.format("product_variations"), p=removed)}
    images = {r["id"] for r in env.sql(of_removed.format("product_images"), p=removed)}
    assert variations and images
    assert fresh("products_variations") == {f"{removed}|{v}" for v in variations}
    assert fresh("products_images") == {f"{removed}|{i}" for i in images}
    (addr,) = env.sql(
        "SELECT id, customer_id FROM addresses WHERE deleted_at IS NOT NULL AND id IN "
        f"({', '.join(str(a) for a in changed['addresses'])})"
    )
    assert fresh("customers_addresses") == {str(addr["id"])}
    assert sorted(deletes(env, n)) == sorted(
        [
            ("/v1/products/bulk-delete", 1),
            (f"/v1/products/{removed}/variations/bulk-delete", len(variations)),
            (f"/v1/products/{removed}/images/bulk-delete", len(images)),
            (f"/v1/customers/{addr['customer_id']}/addresses/bulk-delete", 1),
        ]
    )
    assert all(r.status == 200 for r in sb.requests[n:])
    # hard deletes are not seen by sync
    assert not fresh("customers") and not fresh("orders")

    n = len(sb.requests)
    res = env.cli("reconcile")
    assert res.code == 0, res.text
    assert "carts" in res.out and "no bulk delete" in res.out
    (pid,) = changed["deleted:products"]
    (cid,) = changed["deleted:customers"]
    assert str(pid) in fresh("products") and str(cid) in fresh("customers")
    assert fresh("orders") == {str(o) for o in changed["deleted:orders"]}
    assert fresh("customers_addresses") == {
        str(a) for a in [addr["id"], *changed["deleted:addresses"]]
    }
    assert {f"{pid}|{i}" for i in changed["deleted:product_images"]} <= fresh("products_images")
    assert all(r.status == 200 for r in sb.requests[n:])
    assert (f"/v1/customers/{cid}/addresses/bulk-delete", len(changed["deleted:addresses"])) in (
        deletes(env, n)
    )

    # what ShopiMind holds is what the shop holds
    live = env.sql("SELECT id FROM customers WHERE deleted_at IS NULL")
    assert set(sb.records("customers")) == {str(r["id"]) for r in live}
    assert set(sb.records("orders")) == {str(r["id"]) for r in env.sql("SELECT id FROM orders")}
    live = env.sql(
        "SELECT p.id, t.lang FROM products p JOIN product_translations t ON t.product_id = p.id"
        " WHERE p.deleted_at IS NULL"
    )
    assert set(sb.records("products")) == {f"{r['id']}|{r['lang']}" for r in live}
    live = env.sql("SELECT id FROM addresses WHERE deleted_at IS NULL")
    assert set(sb.records("customers_addresses")) == {str(r["id"]) for r in live}

    st = status(env)
    # two more products (soft, hard), two languages each
    assert st["products"]["known_deleted"] == int(str(old_products)) + 4
    assert st["customers"]["known_deleted"] == int(str(old_customers)) + 1
    assert st["orders"]["known_deleted"] == len(changed["deleted:orders"])
    assert all(row["known_pending"] == 0 for row in st.values())
    assert st["orders"]["last_reconcile"]["outcome"] == "ok"

    # nothing deleted is sent or deleted again
    n = len(sb.requests)
    assert env.cli("sync").code == 0
    assert env.cli("reconcile").code == 0
    assert sb.requests[n:] == []


def test_soft_deletes_in_batches_of_twenty_grouped_by_parent(env: Env) -> None:
    use(env, ["customers", "customers_addresses", "products"])
    owner = env.sql("SELECT MIN(id) AS id FROM customers WHERE deleted_at IS NULL")[0]["id"]
    now = shop_now() - timedelta(minutes=30)
    first = int(env.sql("SELECT MAX(id) AS id FROM addresses")[0]["id"]) + 1
    for i in range(first, first + 22):
        env.execute(
            "INSERT INTO addresses (id, customer_id, first_name, last_name, line1, postcode, city,"
            " country_iso, active, created_at, updated_at) VALUES (:i, :c, 'A', 'B', 'x', '1',"
            " 'Y', 'FR', 1, :now, :now)",
            i=i,
            c=owner,
            now=now,
        )
    assert env.cli("sync").code == 0
    before = {n: set(env.sandbox.deleted(n)) for n in ("products", "customers_addresses")}
    known_before = status(env)["products"]["known_deleted"]
    addresses_before = status(env)["customers_addresses"]["known_deleted"]
    others = [
        r["id"]
        for r in env.sql(
            "SELECT MIN(id) AS id FROM addresses WHERE deleted_at IS NULL AND customer_id <> :c"
            " GROUP BY customer_id ORDER BY customer_id",
            c=owner,
        )[:3]
    ]
    products = [r["id"] for r in env.sql("SELECT id FROM products WHERE deleted_at IS NULL")][:25]
    assert len(products) == 25
    time.sleep(0.01)
    now = shop_now()
    gone = [*range(first, first + 22), *others]
    env.execute(
        f"UPDATE addresses SET deleted_at = :now, active = 0, updated_at = :now"
        f" WHERE id IN ({', '.join(map(str, gone))})",
        now=now,
    )
    env.execute(
        f"UPDATE products SET deleted_at = :now, updated_at = :now"
        f" WHERE id IN ({', '.join(map(str, products))})",
        now=now,
    )
    n = len(env.sandbox.requests)
    res = env.cli("sync")
    assert res.code == 0, res.text
    calls = deletes(env, n)
    assert all(r.status == 200 for r in env.sandbox.requests[n:])  # bodies as the API wants
    assert all(count <= 20 for _, count in calls)
    assert sum(c for p, c in calls if p == "/v1/products/bulk-delete") == 25
    mine = f"/v1/customers/{owner}/addresses/bulk-delete"
    assert sorted(c for p, c in calls if p == mine) == [2, 20]
    assert sum(c for p, c in calls if "/addresses/" in p and p != mine) == 3
    assert env.sandbox.deleted("products") - before["products"] == {str(p) for p in products}
    assert env.sandbox.deleted("customers_addresses") - before["customers_addresses"] == {
        str(a) for a in gone
    }
    st = status(env)
    assert st["products"]["known_deleted"] == int(str(known_before)) + 50
    assert st["customers_addresses"]["known_deleted"] == int(str(addresses_before)) + 25

    n = len(env.sandbox.requests)
    assert env.cli("sync").code == 0
    assert env.sandbox.requests[n:] == []  # not re-sent, not deleted twice


def legacy_env(env: Env, rows: int = 1000) -> sa.Table:
    """A table of ``rows`` carriers with integer ids 1..rows, mapped alone, page size 50."""
    md = sa.MetaData()
    table = sa.Table(
        "legacy_carriers",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("active", sa.SmallInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    md.create_all(env.engine)
    at = (shop_now() - timedelta(hours=1)).replace(microsecond=0)
    with env.engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {"id": i, "name": f"Carrier {i}", "active": 1, "updated_at": at}
                for i in range(1, rows + 1)
            ],
        )
    folder = env.tmp / "legacy-mappings"
    folder.mkdir()
    (folder / "legacy_carriers.toml").write_text(LEGACY, encoding="utf-8")
    env.mappings = folder
    env.write_config(sync={"page_size": 50}, shopimind={"requests_per_minute": 6000})
    res = env.cli("sync")
    assert res.code == 0, res.text
    assert len(env.sandbox.records("orders_carriers")) == rows
    return table


def test_reconcile_integer_keys_dry_run_guard_and_empty_read(env: Env) -> None:
    table = legacy_env(env)
    sb = env.sandbox
    gone = [1, 2, 9, 10, 11, 99, 100, 101, 500, 999, 1000]
    with env.engine.begin() as conn:
        conn.execute(table.delete().where(table.c.id.in_(gone)))

    n = len(sb.requests)
    res = env.cli("reconcile", "--dry-run")
    assert res.code == 0, res.text
    assert "dry-run" in res.out and "would delete up to 11" in res.out
    assert sb.requests[n:] == []
    assert status(env)["legacy_carriers"]["known_sent"] == 1000

    res = env.cli("reconcile")
    assert res.code == 0, res.text
    assert sb.deleted("orders_carriers") == {str(i) for i in gone}
    assert set(sb.records("orders_carriers")) == {str(i) for i in range(1, 1001)} - {
        str(i) for i in gone
    }
    assert [c for _, c in deletes(env, n)] == [11]
    st = status(env)["legacy_carriers"]
    assert (st["known_sent"], st["known_deleted"], st["known_pending"]) == (989, 11, 0)
    n = len(sb.requests)
    assert env.cli("reconcile").code == 0
    assert sb.requests[n:] == []

    # a read returning far fewer rows (here: 691 of 989 really gone) deletes nothing
    with env.engine.begin() as conn:
        conn.execute(table.delete().where(table.c.id <= 700))
    res = env.cli("reconcile")
    assert res.code == 1
    assert (
        "refused" in res.out
        and "nothing was deleted" in res.out
        and "691 of 989 known records (70%)" in res.out
    )
    assert sb.requests[n:] == []
    st = status(env)["legacy_carriers"]
    assert (st["known_sent"], st["known_pending"]) == (989, 0)
    assert st["last_reconcile"]["outcome"] == "refused"
    assert "last reconcile (refused)" in env.cli("status").out

    # an empty read deletes nothing either
    with env.engine.begin() as conn:
        conn.execute(table.delete())
    res = env.cli("reconcile")
    assert res.code == 1 and "none of the 989 keys" in res.out
    assert sb.requests[n:] == []

    # the operator may allow it: then every id goes, 20 a call
    res = env.cli("reconcile", "--max-delete-share", "1")
    assert res.code == 0, res.text
    calls = deletes(env, n)
    assert len(calls) == 50 and max(c for _, c in calls) == 20 and sum(c for _, c in calls) == 989
    assert sb.records("orders_carriers") == {}


def test_reconcile_read_failing_halfway_deletes_nothing(env: Env) -> None:
    table = legacy_env(env, rows=300)
    sb = env.sandbox
    with env.engine.begin() as conn:
        conn.execute(table.delete().where(table.c.id.in_([3, 30, 300])))
    n = len(sb.requests)
    with Runtime.open(load_config(env.config)) as rt:
        real = rt.reader.fetch
        calls = []

        def flaky(stmt: sa.Executable, what: str = "query") -> list[dict[str, object]]:
            calls.append(what)
            if len(calls) == 3:
                raise SourceError("shop database: connection lost (simulated)")
            return real(stmt, what)

        rt.reader.fetch = flaky  # type: ignore[method-assign]
        res = reconcile_mapping(rt, "legacy_carriers")
        assert res.outcome == "failed"
        assert res.message is not None and "nothing was deleted" in res.message
        assert "connection lost" in res.message and res.known == 100
        assert sb.requests[n:] == []
        st = rt.store.status(["legacy_carriers"])[0]
        assert (st.known_sent, st.known_pending, st.known_deleted) == (300, 0, 0)

        # the API failing while deleting leaves the rest pending, shown by status
        sb.inject(500, count=100, path_prefix=DELETE_PATH)
        rt.reader.fetch = real  # type: ignore[method-assign]
        res = reconcile_mapping(rt, "legacy_carriers")
        assert res.outcome == "failed" and res.pending == 3 and res.deleted == 0
    st = status(env)["legacy_carriers"]
    assert (st["known_sent"], st["known_pending"]) == (297, 3)
    head, line = env.cli("status").out.splitlines()[:2]
    assert head.split()[-3:] == ["sent", "deleted", "pending"]
    assert line.split()[-3:] == ["297", "0", "3"]
    sb.clear_faults()
    res = env.cli("reconcile")
    assert res.code == 0, res.text
    assert sb.deleted("orders_carriers") == {"3", "30", "300"}
    st = status(env)["legacy_carriers"]
    assert (st["known_sent"], st["known_pending"], st["known_deleted"]) == (297, 0, 3)


def test_a_row_back_before_the_delete_is_kept(env: Env) -> None:
    """Between the comparison and the delete, a candidate that reappears in the shop is kept.
    Records sent under an earlier source.key (another shape) are left alone."""
    table = legacy_env(env, rows=60)
    with env.engine.begin() as conn:
        conn.execute(table.delete().where(table.c.id.in_([5, 6])))
    old = [key_json((i, "x")) for i in (5, 6, 7)]
    with StateStore(f"sqlite:///{env.tmp / 'state.sqlite'}") as store:
        accepted = [Accepted(k, "h") for k in old]
        store.commit_batch("legacy_carriers", accepted=accepted, rejects=[], cursor=None)
    with Runtime.open(load_config(env.config)) as rt:
        real = rt.reader.fetch

        def reinsert(stmt: sa.Executable, what: str = "query") -> list[dict[str, object]]:
            if "again" in what and not env.sql("SELECT id FROM legacy_carriers WHERE id = 5"):
                env.execute(
                    "INSERT INTO legacy_carriers (id, name, active, updated_at)"
                    " VALUES (5, 'Carrier 5', 1, :t)",
                    t=shop_now(),
                )
            return real(stmt, what)

        rt.reader.fetch = reinsert  # type: ignore[method-assign]
        res = reconcile_mapping(rt, "legacy_carriers")
    assert res.outcome == "ok", res.message
    assert (res.known, res.missing, res.back, res.deleted, res.stale) == (63, 2, 1, 1, 3)
    assert res.message is not None and "3 record(s) were sent under an earlier" in res.message
    assert env.sandbox.deleted("orders_carriers") == {"6"}
    st = status(env)["legacy_carriers"]
    assert (st["known_sent"], st["known_deleted"]) == (62, 1)


def test_a_rejected_row_soft_deleted_before_it_was_ever_accepted(env: Env) -> None:
    """Nothing is left to deliver: its rejected item is resolved. The connector cannot be sure
    no earlier attempt was accepted (a crash between the answer and the commit), so it still
    asks ShopiMind to delete the id — unknown ids are skipped there."""
    use(env, ["customers"])
    victim = env.sql("SELECT MIN(id) AS id FROM customers WHERE deleted_at IS NULL")[0]["id"]
    env.sandbox.refuse("customers", {str(victim): "this e-mail domain is blocked"})
    assert env.cli("sync").code == 0
    assert json.loads(env.cli("rejected", "list", "--json").out)[0]["key"] == f"[{victim}]"
    time.sleep(0.01)
    env.execute(
        "UPDATE customers SET deleted_at = :now, updated_at = :now WHERE id = :id",
        now=shop_now(),
        id=victim,
    )
    n = len(env.sandbox.requests)
    assert env.cli("sync").code == 0
    assert env.cli("rejected", "list").out.strip() == "no open rejected items"
    assert deletes(env, n) == [("/v1/customers/bulk-delete", 1)]
    assert status(env)["customers"]["rejected"] == 0
    n = len(env.sandbox.requests)
    assert env.cli("sync").code == 0
    assert deletes(env, n) == []  # once


def test_soft_deleted_customer_and_order(env: Env) -> None:
    """Customers by deleted_at (not NULL); orders by a 0/1 flag column (``when = "true"``)."""
    use(env, ["customers", "orders"])
    env.execute("ALTER TABLE orders ADD COLUMN archived SMALLINT DEFAULT 0 NOT NULL")
    path = env.mappings / "orders.toml"
    text = path.read_text(encoding="utf-8")
    text = text.replace("SELECT o.id, o.reference,", "SELECT o.id, o.archived, o.reference,")
    text = text.replace(
        'lookback = "5m"\n', 'lookback = "5m"\ndeleted = { column = "archived", when = "true" }\n'
    )
    path.write_text(text, encoding="utf-8")
    assert env.cli("sync").code == 0
    before = {name: set(env.sandbox.deleted(name)) for name in ("orders", "customers")}
    known_before = status(env)["customers"]["known_deleted"]
    order = env.sql("SELECT MIN(id) AS id FROM orders")[0]["id"]
    customer = env.sql("SELECT MAX(id) AS id FROM customers WHERE deleted_at IS NULL")[0]["id"]
    assert str(order) in env.sandbox.records("orders")
    assert str(customer) in env.sandbox.records("customers")
    time.sleep(0.01)
    now = shop_now()
    env.execute("UPDATE orders SET archived = 1, updated_at = :now WHERE id = :i", now=now, i=order)
    env.execute(
        "UPDATE customers SET deleted_at = :now, updated_at = :now WHERE id = :i",
        now=now,
        i=customer,
    )
    n = len(env.sandbox.requests)
    assert env.cli("sync").code == 0
    assert sorted(deletes(env, n)) == [
        ("/v1/customers/bulk-delete", 1),
        ("/v1/orders/bulk-delete", 1),
    ]
    assert env.sandbox.deleted("orders") - before["orders"] == {str(order)}
    assert env.sandbox.deleted("customers") - before["customers"] == {str(customer)}
    assert str(order) not in env.sandbox.records("orders")
    assert str(customer) not in env.sandbox.records("customers")
    st = status(env)
    assert st["orders"]["known_deleted"] == 1
    assert st["customers"]["known_deleted"] == int(str(known_before)) + 1

    n = len(env.sandbox.requests)
    assert env.cli("sync").code == 0
    assert env.cli("reconcile").code == 0
    assert env.sandbox.requests[n:] == []

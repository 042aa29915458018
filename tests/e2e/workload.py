"""Concurrent shop writers for the change-capture soak: threads that insert, update and delete
customers, products (+ translations), orders and order lines the ways real shops do — bursts
sharing one timestamp split over two commits, transactions committed late with an early
updated_at, timestamps truncated to seconds, child-only changes, NULL updated_at, clocks ahead —
and keep a ledger of what they committed.

Writers never change the columns other mappings join in (a customer's email or created_at, a
cart, image or category link): a change there touches no cursor the connector reads, which is a
documented limit of watermark capture, not something this soak is about.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from connector import timeutil
from tests.e2e.harness import Env, shop_now

Key = tuple[str, str]  # (ShopiMind resource, sandbox key text)
LANGS = ("fr", "en")
_ids = itertools.count(100_000)


@dataclass
class Ledger:
    """What the writers committed (updated only after a successful commit)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    writes: Counter[Key] = field(default_factory=Counter)  # changes per record
    hard_deleted: set[Key] = field(default_factory=set)
    soft_deleted: set[Key] = field(default_factory=set)
    ops: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)  # deadlocks, lock timeouts: retried
    late_behind: int = 0  # late commits whose updated_at was already behind the saved cursor
    latest_ts: datetime = field(default_factory=shop_now)  # newest updated_at written

    def commit(self, op: str, keys: list[Key], ts: datetime | None = None) -> None:
        with self.lock:
            self.ops[op] += 1
            self.writes.update(keys)
            if ts is not None and ts > self.latest_ts:
                self.latest_ts = ts


@dataclass
class Pools:
    """Row ids the writers pick from (shared, guarded by ``lock``)."""

    lock: threading.Lock
    customers: list[int]  # populated customers: orders may reference them
    products: list[int]  # populated products: order lines may reference them
    orders: list[int]
    addresses: list[int]
    my_customers: list[int] = field(default_factory=list)  # never referenced: hard-deletable
    my_products: list[int] = field(default_factory=list)
    my_orders: list[int] = field(default_factory=list)

    @classmethod
    def load(cls, env: Env) -> Pools:
        def ids(sql: str) -> list[int]:
            return [int(str(r["id"])) for r in env.sql(sql)]

        return cls(
            threading.Lock(),
            ids("SELECT id FROM customers ORDER BY id"),
            ids("SELECT id FROM products WHERE deleted_at IS NULL ORDER BY id"),
            ids("SELECT id FROM orders ORDER BY id"),
            ids("SELECT id FROM addresses ORDER BY id"),
        )

    def pick(self, rng: random.Random, *names: str) -> int | None:
        with self.lock:
            everything = [i for n in names for i in getattr(self, n)]
            return rng.choice(everything) if everything else None

    def add(self, name: str, ident: int) -> None:
        with self.lock:
            getattr(self, name).append(ident)

    def take(self, rng: random.Random, name: str) -> int | None:
        with self.lock:
            pool: list[int] = getattr(self, name)
            return pool.pop(rng.randrange(len(pool))) if pool else None


class Writer(threading.Thread):
    """One writer thread; ``late_hold`` bounds how long a late transaction stays open."""

    def __init__(
        self,
        env: Env,
        engine: sa.Engine,
        ledger: Ledger,
        pools: Pools,
        rng: random.Random,
        stop: threading.Event,
        late_hold: tuple[float, float],
        cursor_of: Callable[[str], Any],
    ) -> None:
        super().__init__(daemon=True)
        self.env, self.engine, self.ledger, self.pools = env, engine, ledger, pools
        self.rng, self.stop, self.late_hold, self.cursor_of = rng, stop, late_hold, cursor_of
        self.sqlite = engine.dialect.name == "sqlite"
        self.error: BaseException | None = None
        self.after: list[Callable[[], None]] = []
        self.ops: list[tuple[Callable[[sa.Connection, datetime], list[Key]], int]] = [
            (self.new_customer, 6),
            (self.edit_customer, 10),
            (self.soft_delete_customer, 2),
            (self.reprice_product, 6),
            (self.rename_translation, 6),
            (self.new_product, 3),
            (self.soft_delete_product, 1),
            (self.new_order, 6),
            (self.ship_order, 6),
            (self.change_line, 8),
        ]

    def run(self) -> None:
        specials: list[tuple[Callable[[], None], int]] = [
            (self.one_write, 80),
            (self.late_commit, 6),
            (self.burst, 3),
            (self.future_write, 3),
            (self.hard_delete, 4),
        ]
        funcs, weights = zip(*specials, strict=True)
        try:
            while not self.stop.is_set():
                self.rng.choices(funcs, weights)[0]()
                time.sleep(self.rng.uniform(0.01, 0.08))
        except BaseException as exc:  # reported by the test
            self.error = exc

    # --- transactions ---------------------------------------------------------------------------

    def _tx(self, op: str, body: Callable[[sa.Connection], list[Key]], ts: datetime | None) -> bool:
        self.after = []  # pool additions, run once committed
        try:
            with self.engine.begin() as conn:
                keys = body(conn)
        except sa.exc.OperationalError:  # deadlock, lock wait, busy: a shop retries; we skip
            with self.ledger.lock:
                self.ledger.failed[op] += 1
            return False
        for fn in self.after:
            fn()
        self.ledger.commit(op, keys, ts)
        return True

    def money(self, cents: int) -> Any:
        """A price (SQLite's driver takes no Decimal)."""
        value = Decimal(cents) / 100
        return float(value) if self.sqlite else value

    def net(self, gross: Any) -> Any:
        value = Decimal(str(gross)) / Decimal("1.2")
        return float(round(value, 4)) if self.sqlite else round(value, 4)

    def now(self) -> datetime:
        ts = shop_now()
        return ts.replace(microsecond=0) if self.rng.random() < 0.15 else ts  # second precision

    def pick_op(self) -> Callable[[sa.Connection, datetime], list[Key]]:
        funcs, weights = zip(*self.ops, strict=True)
        return self.rng.choices(funcs, weights)[0]

    def one_write(self) -> None:
        op, ts = self.pick_op(), self.now()
        self._tx(op.__name__, lambda c: op(c, ts), ts)

    def late_commit(self) -> None:
        """updated_at taken at the start, committed ``hold`` seconds later (on SQLite, where a
        held write transaction would lock out every writer, the write itself waits)."""
        ts = shop_now()
        hold = self.rng.uniform(*self.late_hold)
        ops = [self.pick_op() for _ in range(self.rng.randint(1, 3))]

        def body(conn: sa.Connection) -> list[Key]:
            if self.sqlite:
                time.sleep(hold)
            keys = [k for op in ops for k in op(conn, ts)]
            if not self.sqlite:
                time.sleep(hold)
            return keys

        if self._tx("late_commit", body, ts):
            behind = False
            for name in ("customers", "products", "orders"):
                cur = self.cursor_of(name)
                behind = behind or (cur is not None and cur > ts)
            if behind:
                with self.ledger.lock:
                    self.ledger.late_behind += 1

    def burst(self) -> None:
        """Many rows (more than a page) with one timestamp, committed in two transactions whose
        keys interleave: the second lands behind a cursor saved inside the first."""
        ts = self.now()
        kind = self.rng.choice(["customers", "orders", "products"])
        if kind == "products":  # every product in one statement: both languages move
            self._tx("burst", lambda c: self._reprice_all(c, ts), ts)
            return
        pool = self.pools.customers if kind == "customers" else self.pools.orders
        with self.pools.lock:
            chosen = sorted(self.rng.sample(pool, min(len(pool), self.rng.randint(51, 70))))
        halves = [chosen[0::2], chosen[1::2]]
        for i, half in enumerate(halves):
            if kind == "customers":
                self._tx("burst", lambda c, h=half: self._touch_customers(c, h, ts), ts)
            else:
                self._tx("burst", lambda c, h=half: self._ship(c, h, ts), ts)
            if i == 0:
                time.sleep(self.rng.uniform(0.2, 0.8))

    def future_write(self) -> None:
        """An app server whose clock runs ahead of the database's."""
        ts = shop_now() + timedelta(seconds=self.rng.uniform(0.5, 2.5))
        op = self.rng.choice([self.edit_customer, self.reprice_product, self.ship_order])
        self._tx("future_write", lambda c: op(c, ts), ts)

    def hard_delete(self) -> None:
        kind = self.rng.choice(["my_customers", "my_products", "my_orders"])
        ident = self.pools.take(self.rng, kind)
        if ident is None:
            return
        if kind == "my_customers":
            keys = [("customers", str(ident))]
            stmts = ["DELETE FROM customers WHERE id = :i"]
        elif kind == "my_products":
            keys = [("products", f"{ident}|{lang}") for lang in LANGS]
            stmts = [
                "DELETE FROM product_translations WHERE product_id = :i",
                "DELETE FROM products WHERE id = :i",
            ]
        else:
            keys = [("orders", str(ident))]
            stmts = [
                "DELETE FROM order_lines WHERE order_id = :i",
                "DELETE FROM orders WHERE id = :i",
            ]

        def body(conn: sa.Connection) -> list[Key]:
            for s in stmts:
                conn.execute(sa.text(s), {"i": ident})
            return []

        if self._tx("hard_delete", body, None):
            with self.ledger.lock:
                self.ledger.hard_deleted.update(keys)

    # --- single writes (called inside a transaction) -----------------------------------------

    def new_customer(self, conn: sa.Connection, ts: datetime) -> list[Key]:
        ident = next(_ids)
        null = self.rng.random() < 0.25  # imported-style row: no updated_at, created_at = now
        conn.execute(
            sa.text(
                "INSERT INTO customers (id, email, first_name, last_name, phone, newsletter, "
                "optin, lang, active, group_id, created_at, updated_at) VALUES (:i, :e, :f, :l, "
                ":p, :n, :o, :lang, 1, 1, :c, :u)"
            ),
            {
                "i": ident,
                "e": f"writer.{ident}@example.com",
                "f": self.rng.choice(["Ana", "Bo", "Céline", "Dmitri"]),
                "l": f"W{ident}",
                "p": self.rng.choice([None, "", "+33 6 12 34 56 78"]),
                "n": self.rng.randint(0, 1),
                "o": self.rng.choice("YN"),
                "lang": self.rng.choice(LANGS),
                "c": ts,
                "u": None if null else ts,
            },
        )
        self.after.append(lambda: self.pools.add("my_customers", ident))
        return [("customers", str(ident))]

    def edit_customer(self, conn: sa.Connection, ts: datetime) -> list[Key]:
        ident = self.pools.pick(self.rng, "customers", "my_customers")
        if ident is None:
            return []
        return self._touch_customers(conn, [ident], ts)

    def _touch_customers(self, conn: sa.Connection, ids: list[int], ts: datetime) -> list[Key]:
        keys = []
        for ident in ids:
            n = conn.execute(
                sa.text(
                    "UPDATE customers SET first_name = :f, newsletter = 1 - newsletter, "
                    "updated_at = :u WHERE id = :i AND deleted_at IS NULL"
                ),
                {"f": f"F{self.rng.randrange(10**6)}", "u": ts, "i": ident},
            ).rowcount
            if n:
                keys.append(("customers", str(ident)))
        return keys

    def soft_delete_customer(self, conn: sa.Connection, ts: datetime) -> list[Key]:
        ident = self.pools.pick(self.rng, "customers", "my_customers")
        n = conn.execute(
            sa.text(
                "UPDATE customers SET deleted_at = :u, updated_at = :u "
                "WHERE id = :i AND deleted_at IS NULL"
            ),
            {"u": ts, "i": ident},
        ).rowcount
        return [("customers", str(ident))] if n else []

    def reprice_product(self, conn: sa.Connection, ts: datetime) -> list[Key]:
        ident = self.pools.pick(self.rng, "products", "my_products")
        price = self.money(self.rng.randrange(500, 20000))
        n = conn.execute(
            sa.text(
                "UPDATE products SET price_incl = :p, price_excl = :x, stock = :s, "
                "updated_at = :u WHERE id = :i AND deleted_at IS NULL"
            ),
            {
                "p": price,
                "x": self.net(price),
                "s": self.rng.randrange(100),
                "u": ts,
                "i": ident,
            },
        ).rowcount
        return [("products", f"{ident}|{lang}") for lang in LANGS] if n else []

    def _reprice_all(self, conn: sa.Connection, ts: datetime) -> list[Key]:
        ids = [
            r[0] for r in conn.execute(sa.text("SELECT id FROM products WHERE deleted_at IS NULL"))
        ]
        conn.execute(
            sa.text(
                "UPDATE products SET stock = stock + 1, updated_at = :u WHERE deleted_at IS NULL"
            ),
            {"u": ts},
        )
        return [("products", f"{i}|{lang}") for i in ids for lang in LANGS]

    def rename_translation(self, conn: sa.Connection, ts: datetime) -> list[Key]:
        ident = self.pools.pick(self.rng, "products", "my_products")
        lang = self.rng.choice(LANGS)
        n = conn.execute(
            sa.text(
                "UPDATE product_translations SET name = :n, updated_at = :u "
                "WHERE product_id = :i AND lang = :l"
            ),
            {"n": f"Produit {self.rng.randrange(10**6)}", "u": ts, "i": ident, "l": lang},
        ).rowcount
        return [("products", f"{ident}|{lang}")] if n else []

    def new_product(self, conn: sa.Connection, ts: datetime) -> list[Key]:
        ident = next(_ids)
        price = self.money(self.rng.randrange(500, 20000))
        conn.execute(
            sa.text(
                "INSERT INTO products (id, sku, ean13, price_excl, tax_rate, price_incl, "
                "discount_price, stock, manufacturer_id, active, created_at, updated_at) VALUES "
                "(:i, :sku, NULL, :x, 20, :p, NULL, :s, NULL, 1, :u, :u)"
            ),
            {
                "i": ident,
                "sku": f"W-{ident}",
                "x": self.net(price),
                "p": price,
                "s": self.rng.randrange(50),
                "u": ts,
            },
        )
        for lang in LANGS:
            conn.execute(
                sa.text(
                    "INSERT INTO product_translations (product_id, lang, name, description, "
                    "short_description, slug, updated_at) VALUES (:i, :l, :n, 'Desc', NULL, "
                    ":s, :u)"
                ),
                {"i": ident, "l": lang, "n": f"New {ident} {lang}", "s": f"new-{ident}", "u": ts},
            )
        self.after.append(lambda: self.pools.add("my_products", ident))
        return [("products", f"{ident}|{lang}") for lang in LANGS]

    def soft_delete_product(self, conn: sa.Connection, ts: datetime) -> list[Key]:
        ident = self.pools.pick(self.rng, "products", "my_products")
        n = conn.execute(
            sa.text(
                "UPDATE products SET deleted_at = :u, active = 0, updated_at = :u "
                "WHERE id = :i AND deleted_at IS NULL"
            ),
            {"u": ts, "i": ident},
        ).rowcount
        return [("products", f"{ident}|{lang}") for lang in LANGS] if n else []

    def new_order(self, conn: sa.Connection, ts: datetime) -> list[Key]:
        customer = self.pools.pick(self.rng, "customers")
        address = self.pools.pick(self.rng, "addresses")
        order, cart = next(_ids), next(_ids)
        conn.execute(
            sa.text(
                "INSERT INTO carts (id, customer_id, currency, lang, created_at, updated_at, "
                "order_id) VALUES (:c, :cu, 'EUR', 'fr', :u, :u, :o)"
            ),
            {"c": cart, "cu": customer, "u": ts, "o": order},
        )
        total = self.money(self.rng.randrange(1000, 30000))
        conn.execute(
            sa.text(
                "INSERT INTO orders (id, reference, customer_id, cart_id, status_id, carrier_id, "
                "delivery_address_id, invoice_address_id, currency, lang, total_incl, total_excl, "
                "shipping_incl, shipping_excl, paid_at, created_at, updated_at) VALUES (:o, :r, "
                ":cu, :c, 2, 1, :a, :a, 'EUR', 'fr', :t, :x, 0, 0, :u, :u, :u)"
            ),
            {
                "o": order,
                "r": f"W-{order}",
                "cu": customer,
                "c": cart,
                "a": address,
                "t": total,
                "x": self.net(total),
                "u": ts,
            },
        )
        for _ in range(self.rng.randint(1, 3)):
            self._add_line(conn, order, ts)
        self.after.append(lambda: self.pools.add("my_orders", order))
        return [("orders", str(order))]

    def _add_line(self, conn: sa.Connection, order: int, ts: datetime) -> None:
        price = self.money(self.rng.randrange(100, 9000))
        conn.execute(
            sa.text(
                "INSERT INTO order_lines (id, order_id, product_id, variation_id, qty, "
                "unit_price_incl, unit_price_excl, updated_at) VALUES (:i, :o, :p, NULL, :q, "
                ":x, :y, :u)"
            ),
            {
                "i": next(_ids),
                "o": order,
                "p": self.pools.pick(self.rng, "products"),
                "q": self.rng.randint(1, 4),
                "x": price,
                "y": self.net(price),
                "u": ts,
            },
        )

    def ship_order(self, conn: sa.Connection, ts: datetime) -> list[Key]:
        ident = self.pools.pick(self.rng, "orders", "my_orders")
        assert ident is not None
        return self._ship(conn, [ident], ts)

    def _ship(self, conn: sa.Connection, ids: list[int], ts: datetime) -> list[Key]:
        keys = []
        for ident in ids:
            n = conn.execute(
                sa.text(
                    "UPDATE orders SET status_id = :s, tracking_number = :t, updated_at = :u "
                    "WHERE id = :i"
                ),
                {
                    "s": self.rng.randint(1, 8),
                    "t": f"6A{self.rng.randrange(10**9)}",
                    "u": ts,
                    "i": ident,
                },
            ).rowcount
            if n:
                keys.append(("orders", str(ident)))
        return keys

    def change_line(self, conn: sa.Connection, ts: datetime) -> list[Key]:
        """A child-only change: an order line moves, the order row does not."""
        ident = self.pools.pick(self.rng, "orders", "my_orders")
        lines = [
            r[0]
            for r in conn.execute(
                sa.text("SELECT id FROM order_lines WHERE order_id = :o ORDER BY id"), {"o": ident}
            )
        ]
        if lines and self.rng.random() < 0.7:
            conn.execute(
                sa.text("UPDATE order_lines SET qty = qty + 1, updated_at = :u WHERE id = :i"),
                {"u": ts, "i": self.rng.choice(lines)},
            )
        elif ident is not None:
            self._add_line(conn, ident, ts)
        return [("orders", str(ident))]


def engine_for(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        return sa.create_engine(url, connect_args={"timeout": 60})
    return sa.create_engine(url, pool_size=10)


def as_datetime(value: Any) -> Any:
    return timeutil.parse_timestamp(value) if isinstance(value, str) else value

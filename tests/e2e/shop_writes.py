"""The single shop writes of the soak's writer threads (tests/e2e/workload.py), each called
inside a transaction: ``op(conn, ts)`` changes rows with ``updated_at = ts`` and returns the keys
of the ShopiMind records it changed. Ids of new rows come from one counter, above the demo's."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from tests.e2e.workload import Pools

Key = tuple[str, str]  # (ShopiMind resource, sandbox key text)
LANGS = ("fr", "en")
_ids = itertools.count(100_000)


class ShopWrites:
    """Mixin of the writes; the writer provides ``rng``, ``pools``, ``sqlite`` and ``after``."""

    rng: random.Random
    pools: Pools
    sqlite: bool
    after: list[Callable[[], None]]

    def money(self, cents: int) -> Any:
        """A price (SQLite's driver takes no Decimal)."""
        value = Decimal(cents) / 100
        return float(value) if self.sqlite else value

    def net(self, gross: Any) -> Any:
        value = Decimal(str(gross)) / Decimal("1.2")
        return float(round(value, 4)) if self.sqlite else round(value, 4)

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
        ident = self._soft_delete(conn, ts, "customers", "deleted_at = :u, updated_at = :u")
        return [("customers", str(ident))] if ident is not None else []

    def _soft_delete(self, conn: sa.Connection, ts: datetime, table: str, sets: str) -> int | None:
        """``UPDATE table SET sets`` (``:u`` is ``ts``) on a row picked from the demo's and the
        writers' rows of ``table``, unless it is deleted already: the id of the row soft-deleted,
        or None when none was."""
        ident = self.pools.pick(self.rng, table, f"my_{table}")
        n = conn.execute(
            sa.text(f"UPDATE {table} SET {sets} WHERE id = :i AND deleted_at IS NULL"),
            {"u": ts, "i": ident},
        ).rowcount
        return ident if n else None

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
        sets = "deleted_at = :u, active = 0, updated_at = :u"
        ident = self._soft_delete(conn, ts, "products", sets)
        return [("products", f"{ident}|{lang}") for lang in LANGS] if ident is not None else []

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

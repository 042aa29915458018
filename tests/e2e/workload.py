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

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from connector import timeutil
from tests.e2e.harness import Env, shop_now
from tests.e2e.shop_writes import LANGS, Key, ShopWrites


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


class Writer(ShopWrites, threading.Thread):
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
        self.prologue: list[Callable[[], None]] = []
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

    def with_prologue(self) -> Writer:
        """Start with one change of each kind the soak must exercise."""
        self.prologue = [
            *(lambda op=op: self.one_write(op) for op, _w in self.ops),
            lambda: self.hard_delete("my_customers"),
            self.burst,
            self.late_commit,
            self.future_write,
        ]
        return self

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
            for step in self.prologue:  # each kind of change at least once, whatever the dice
                if not self.stop.is_set():
                    step()
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

    def now(self) -> datetime:
        ts = shop_now()
        return ts.replace(microsecond=0) if self.rng.random() < 0.15 else ts  # second precision

    def pick_op(self) -> Callable[[sa.Connection, datetime], list[Key]]:
        funcs, weights = zip(*self.ops, strict=True)
        return self.rng.choices(funcs, weights)[0]

    def one_write(self, op: Callable[[sa.Connection, datetime], list[Key]] | None = None) -> None:
        op, ts = op or self.pick_op(), self.now()
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

    def hard_delete(self, kind: str | None = None) -> None:
        kind = kind or self.rng.choice(["my_customers", "my_products", "my_orders"])
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


def engine_for(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        return sa.create_engine(url, connect_args={"timeout": 60})
    return sa.create_engine(url, pool_size=10)


def as_datetime(value: Any) -> Any:
    return timeutil.parse_timestamp(value) if isinstance(value, str) else value

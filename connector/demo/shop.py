"""A demo in-house shop on SQLite, PostgreSQL and MariaDB: schema, seeded data, scripted changes.

The schema looks like what a small in-house e-commerce site grows into: integer surrogate keys,
``*_translations`` tables keyed by (parent id, lang) for the two languages ``fr`` and ``en``,
0/1 flags, a 'Y'/'N' opt-in column, DECIMAL prices, soft deletes through ``deleted_at``, and naive
``DATETIME`` timestamps holding shop-local wall-clock time with microseconds (``DATETIME(6)`` on
MariaDB). Every table the connector polls has an indexed ``updated_at``; ``customers.updated_at``
is NULL for rows imported from an older system (use ``created_at`` there).

``carts.order_id`` is a plain column, not a foreign key: orders reference their cart, and a foreign
key back would make the two tables a cycle that ``drop_all`` cannot order.

::

    create_schema(engine)
    populate(engine, seed=7, scale=1.0)      # {table: rows inserted}
    mutate(engine, seed=8)                   # {table: [ids whose updated_at is now `now`]}
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from connector.demo import data
from connector.demo.data import TABLE_ORDER, excl, money

__all__ = ["create_schema", "metadata", "mutate", "populate", "shop_url_sqlite"]

# Naive timestamps with microseconds everywhere (MySQL/MariaDB default to whole seconds).
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
PRICE = sa.Numeric(12, 4)
FLAG = sa.SmallInteger


def _ts(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, TIMESTAMP, nullable=nullable)


def _flag(name: str) -> sa.Column[Any]:
    return sa.Column(name, FLAG, nullable=False)


def _lang(primary_key: bool = False, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column("lang", sa.String(2), primary_key=primary_key, nullable=nullable)


def _fk(name: str, target: str, nullable: bool = False, **kw: Any) -> sa.Column[Any]:
    return sa.Column(name, sa.Integer, sa.ForeignKey(target), nullable=nullable, **kw)


def _translations(md: sa.MetaData, name: str, parent: str, fk: str, *cols: sa.Column[Any]) -> None:
    sa.Table(
        name,
        md,
        _fk(fk, f"{parent}.id", primary_key=True),
        _lang(primary_key=True),
        *cols,
        _ts("updated_at"),
        sa.Index(f"ix_{name}_updated_at", "updated_at"),
    )


def _build() -> sa.MetaData:
    md = sa.MetaData()
    idx = sa.Index

    sa.Table(
        "customer_groups",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        _ts("created_at"),
        _ts("updated_at"),
        idx("ix_customer_groups_updated_at", "updated_at"),
    )
    _translations(
        md,
        "customer_group_translations",
        "customer_groups",
        "group_id",
        sa.Column("name", sa.String(64), nullable=False),
    )
    sa.Table(
        "customers",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(190), nullable=False, unique=True),
        sa.Column("first_name", sa.String(64), nullable=False),
        sa.Column("last_name", sa.String(64), nullable=False),
        sa.Column("phone", sa.String(32)),
        sa.Column("birth_date", sa.Date),
        _flag("newsletter"),
        sa.Column("optin", sa.CHAR(1), nullable=False),
        _lang(),
        _flag("active"),
        _fk("group_id", "customer_groups.id"),
        _ts("created_at"),
        _ts("updated_at", nullable=True),
        _ts("deleted_at", nullable=True),
        idx("ix_customers_updated_at", "updated_at"),
        idx("ix_customers_created_at", "created_at"),
    )
    sa.Table(
        "addresses",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        _fk("customer_id", "customers.id"),
        sa.Column("first_name", sa.String(64), nullable=False),
        sa.Column("last_name", sa.String(64), nullable=False),
        sa.Column("company", sa.String(128)),
        sa.Column("line1", sa.String(128), nullable=False),
        sa.Column("line2", sa.String(128)),
        sa.Column("postcode", sa.String(16), nullable=False),
        sa.Column("city", sa.String(64), nullable=False),
        sa.Column("country_iso", sa.CHAR(2), nullable=False),
        sa.Column("phone", sa.String(32)),
        sa.Column("mobile", sa.String(32)),
        _flag("active"),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("deleted_at", nullable=True),
        idx("ix_addresses_updated_at", "updated_at"),
    )
    sa.Table(
        "categories",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        _fk("parent_id", "categories.id", nullable=True),
        _flag("active"),
        _ts("created_at"),
        _ts("updated_at"),
        idx("ix_categories_updated_at", "updated_at"),
    )
    _translations(
        md,
        "category_translations",
        "categories",
        "category_id",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("slug", sa.String(128), nullable=False),
    )
    sa.Table(
        "manufacturers",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        _flag("active"),
        _ts("created_at"),
        _ts("updated_at"),
        idx("ix_manufacturers_updated_at", "updated_at"),
    )
    sa.Table(
        "products",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sku", sa.String(32), nullable=False, unique=True),
        sa.Column("ean13", sa.String(13)),
        sa.Column("price_excl", PRICE, nullable=False),
        sa.Column("tax_rate", sa.Numeric(5, 2), nullable=False),
        sa.Column("price_incl", PRICE, nullable=False),
        sa.Column("discount_price", PRICE),
        sa.Column("stock", sa.Integer, nullable=False),
        _fk("manufacturer_id", "manufacturers.id", nullable=True),
        _flag("active"),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("deleted_at", nullable=True),
        idx("ix_products_updated_at", "updated_at"),
    )
    _translations(
        md,
        "product_translations",
        "products",
        "product_id",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("short_description", sa.Text),
        sa.Column("slug", sa.String(255), nullable=False),
    )
    sa.Table(
        "product_categories",
        md,
        _fk("product_id", "products.id", primary_key=True),
        _fk("category_id", "categories.id", primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
    )
    sa.Table(
        "product_variations",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        _fk("product_id", "products.id"),
        sa.Column("sku", sa.String(40), nullable=False),
        sa.Column("ean13", sa.String(13)),
        sa.Column("price_incl", PRICE, nullable=False),
        sa.Column("discount", PRICE),  # amount off price_incl, tax included
        sa.Column("stock", sa.Integer, nullable=False),
        _flag("is_default"),
        sa.Column("label", sa.String(64), nullable=False),
        _ts("updated_at"),
        idx("ix_product_variations_updated_at", "updated_at"),
    )
    sa.Table(
        "product_images",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        _fk("product_id", "products.id"),
        _fk("variation_id", "product_variations.id", nullable=True),
        sa.Column("url", sa.String(255), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        _flag("is_cover"),
        _ts("updated_at"),
        idx("ix_product_images_updated_at", "updated_at"),
    )
    sa.Table(
        "order_statuses",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(64), nullable=False),
        _flag("deleted"),
        _ts("created_at"),
        _ts("updated_at"),
        idx("ix_order_statuses_updated_at", "updated_at"),
    )
    _translations(
        md,
        "order_status_translations",
        "order_statuses",
        "status_id",
        sa.Column("name", sa.String(128), nullable=False),
    )
    sa.Table(
        "carriers",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        _flag("active"),
        _ts("created_at"),
        _ts("updated_at"),
        idx("ix_carriers_updated_at", "updated_at"),
    )
    sa.Table(
        "vouchers",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(32), nullable=False, unique=True),
        sa.Column("type", sa.CHAR(1), nullable=False),  # F free shipping, A amount, P percent
        sa.Column("value", PRICE),  # NULL for free shipping
        sa.Column("min_amount", PRICE, nullable=False),
        _fk("customer_id", "customers.id", nullable=True),
        _ts("starts_at"),
        _ts("ends_at", nullable=True),
        _flag("used"),
        _flag("active"),
        _flag("tax_included"),  # 1: an amount voucher is tax included
        _ts("created_at"),
        _ts("updated_at"),
        idx("ix_vouchers_updated_at", "updated_at"),
    )
    _translations(
        md,
        "voucher_translations",
        "vouchers",
        "voucher_id",
        sa.Column("description", sa.String(255), nullable=False),
    )
    sa.Table(
        "carts",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        _fk("customer_id", "customers.id", nullable=True),
        sa.Column("currency", sa.CHAR(3), nullable=False),
        _lang(),
        _ts("created_at"),
        _ts("updated_at"),
        sa.Column("order_id", sa.Integer),  # set when converted; no FK (see module doc)
        idx("ix_carts_updated_at", "updated_at"),
    )
    line_cols = (
        lambda: _fk("product_id", "products.id"),
        lambda: _fk("variation_id", "product_variations.id", nullable=True),
        lambda: sa.Column("qty", sa.Integer, nullable=False),
        lambda: sa.Column("unit_price_incl", PRICE, nullable=False),
        lambda: sa.Column("unit_price_excl", PRICE, nullable=False),
        lambda: _ts("updated_at"),
    )
    sa.Table(
        "cart_lines",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        _fk("cart_id", "carts.id"),
        *(make() for make in line_cols),
        idx("ix_cart_lines_updated_at", "updated_at"),
    )
    sa.Table(
        "orders",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("reference", sa.String(32), nullable=False, unique=True),
        _fk("customer_id", "customers.id"),
        _fk("cart_id", "carts.id"),
        _fk("status_id", "order_statuses.id"),
        _fk("carrier_id", "carriers.id"),
        _fk("delivery_address_id", "addresses.id"),
        _fk("invoice_address_id", "addresses.id"),
        sa.Column("currency", sa.CHAR(3), nullable=False),
        _lang(),
        sa.Column("total_incl", PRICE, nullable=False),
        sa.Column("total_excl", PRICE, nullable=False),
        sa.Column("shipping_incl", PRICE, nullable=False),
        sa.Column("shipping_excl", PRICE, nullable=False),
        sa.Column("tracking_number", sa.String(64)),
        sa.Column("voucher_code", sa.String(32)),
        sa.Column("voucher_value", PRICE),
        _ts("paid_at", nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        idx("ix_orders_updated_at", "updated_at"),
    )
    sa.Table(
        "order_lines",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        _fk("order_id", "orders.id"),
        *(make() for make in line_cols),
        idx("ix_order_lines_updated_at", "updated_at"),
    )
    sa.Table(
        "newsletter_subscriptions",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(190), nullable=False, unique=True),
        _flag("subscribed"),
        sa.Column("first_name", sa.String(64)),
        sa.Column("last_name", sa.String(64)),
        sa.Column("postcode", sa.String(16)),
        _lang(nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        idx("ix_newsletter_subscriptions_updated_at", "updated_at"),
    )
    # business data with no place in the standard model (custom data) and in-store events; fed
    # by the loyalty and till systems, so customer_id is a plain column (no foreign key)
    sa.Table(
        "loyalty_accounts",
        md,
        sa.Column("customer_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("points", sa.Integer, nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),  # Bronze / Silver / Gold
        _ts("updated_at"),
        idx("ix_loyalty_accounts_updated_at", "updated_at"),
    )
    sa.Table(
        "store_purchases",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.Integer),  # NULL: a walk-in who left an email
        sa.Column("email", sa.String(190), nullable=False),
        sa.Column("store", sa.String(64), nullable=False),
        sa.Column("amount", PRICE, nullable=False),
        _ts("purchased_at"),
        _ts("created_at"),  # when the till's sale reached the database
        _ts("updated_at"),
        idx("ix_store_purchases_created_at", "created_at"),
        idx("ix_store_purchases_updated_at", "updated_at"),
    )
    assert tuple(md.tables) == TABLE_ORDER
    return md


_METADATA = _build()


def metadata() -> sa.MetaData:
    """The demo shop's tables (one shared MetaData; do not add tables to it)."""
    return _METADATA


def create_schema(engine: sa.Engine) -> None:
    _METADATA.create_all(engine)


def shop_url_sqlite(path: str | os.PathLike[str]) -> str:
    """A SQLAlchemy URL for a demo shop in the SQLite file ``path``."""
    return f"sqlite:///{Path(path).resolve()}"


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now()
    if now.tzinfo is not None:
        raise ValueError("the demo shop keeps naive shop-local times; pass a naive datetime")
    return now


def _sync_sequences(conn: sa.Connection, tables: Sequence[str]) -> None:
    """PostgreSQL: explicit ids do not move SERIAL sequences; move them past max(id)."""
    if conn.dialect.name != "postgresql":
        return
    for name in tables:
        table = _METADATA.tables[name]
        if "id" in table.c and table.c.id.primary_key and table.c.id.autoincrement:
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                f"COALESCE((SELECT MAX(id) FROM {name}), 0) + 1, false)"
            )


def populate(
    engine: sa.Engine, *, seed: int = 7, scale: float = 1.0, now: datetime | None = None
) -> dict[str, int]:
    """Fill the (empty) demo schema; returns the number of rows inserted per table.

    The same ``seed``, ``scale`` and ``now`` always give the same rows. Timestamps lie in the two
    years before ``now`` and no later than ``now - 1h``; scale 1.0 is about 12,000 rows.
    """
    rows = data.generate(seed, scale, _now(now))
    with engine.begin() as conn:
        for name in TABLE_ORDER:
            if rows[name]:
                conn.execute(_METADATA.tables[name].insert(), rows[name])
        _sync_sequences(conn, TABLE_ORDER)
    return {name: len(rows[name]) for name in TABLE_ORDER}


def mutate(
    engine: sa.Engine, *, seed: int = 8, now: datetime | None = None
) -> dict[str, list[Any]]:
    """Apply a small, scripted batch of shop activity; every touched row gets ``updated_at = now``.

    Changes: 3 customers renamed (one of them had a NULL ``updated_at``), 1 product price changed,
    1 product's English translation renamed (only that translation row moves), 1 new customer with
    an address, 2 new orders with their converted carts and lines (one for the new customer),
    1 order shipped, 1 product soft-deleted (with variations and images), 1 address soft-deleted,
    1 loyalty account's points changed, 2 new in-store purchases (one by the new customer).
    Hard deletes (rows removed outright, for ``reconcile``): 1 customer with their addresses (one
    without orders, carts or vouchers); 1 product with its translations, category links,
    variations and images, the orders that sold it (with their lines and carts) and its lines in
    other carts (those carts are touched).

    Returns ``{table: [ids]}`` for every table with a touched row, and ``{"deleted:<table>":
    [ids]}`` for every table with rows removed, ids sorted; a translation row's id is its
    ``(parent_id, lang)`` tuple, a category link's its ``(product_id, category_id)``.
    """
    moment = _now(now)
    rng = random.Random(seed)
    t = _METADATA.tables
    out: dict[str, list[Any]] = {}

    def touched(table: str, *ids: Any) -> None:
        out.setdefault(table, []).extend(ids)

    with engine.begin() as conn:
        cust = t["customers"]
        alive = cust.c.deleted_at.is_(None)
        stale = conn.scalars(
            sa.select(cust.c.id).where(alive, cust.c.updated_at.is_(None)).order_by(cust.c.id)
        ).all()
        others = conn.scalars(
            sa.select(cust.c.id).where(alive, cust.c.updated_at.is_not(None)).order_by(cust.c.id)
        ).all()
        renamed = rng.sample(list(stale), 1) if stale else []
        renamed += rng.sample(list(others), 3 - len(renamed))
        for cid in renamed:
            conn.execute(
                cust.update()
                .where(cust.c.id == cid)
                .values(
                    last_name=rng.choice(data.LAST["fr"]) + "-" + rng.choice(data.LAST["en"]),
                    updated_at=moment,
                )
            )
        touched("customers", *renamed)

        prod = t["products"]
        live = conn.scalars(
            sa.select(prod.c.id)
            .where(prod.c.deleted_at.is_(None), prod.c.active == 1)
            .order_by(prod.c.id)
        ).all()
        repriced, retitled, removed = rng.sample(list(live), 3)
        # the soft-deleted product should have variations and images (deleted with it)
        var, img = t["product_variations"], t["product_images"]
        with_parts = conn.scalars(
            sa.select(prod.c.id)
            .where(
                prod.c.id.in_(live),
                prod.c.id.not_in((repriced, retitled)),
                sa.exists().where(var.c.product_id == prod.c.id),
                sa.exists().where(img.c.product_id == prod.c.id),
            )
            .order_by(prod.c.id)
        ).all()
        if with_parts and removed not in with_parts:
            removed = with_parts[0]
        rate, price = conn.execute(
            sa.select(prod.c.tax_rate, prod.c.price_incl).where(prod.c.id == repriced)
        ).one()
        new_price = money(Decimal(price) * Decimal("1.1")) + Decimal("0.09")
        conn.execute(
            prod.update()
            .where(prod.c.id == repriced)
            .values(
                price_incl=new_price, price_excl=excl(new_price, Decimal(rate)), updated_at=moment
            )
        )
        conn.execute(
            prod.update()
            .where(prod.c.id == removed)
            .values(deleted_at=moment, active=0, updated_at=moment)
        )
        touched("products", repriced, removed)

        ptr = t["product_translations"]
        where = (ptr.c.product_id == retitled) & (ptr.c.lang == "en")
        name = conn.scalar(sa.select(ptr.c.name).where(where))
        conn.execute(
            ptr.update().where(where).values(name=f"{name} (new edition)", updated_at=moment)
        )
        touched("product_translations", (retitled, "en"))

        def next_id(table: str) -> int:
            return int(conn.scalar(sa.select(sa.func.max(t[table].c.id))) or 0) + 1

        new_cid = next_id("customers")
        first, last = rng.choice(data.FIRST["fr"]), rng.choice(data.LAST["fr"])
        conn.execute(
            cust.insert().values(
                id=new_cid,
                email=f"{data.slugify(first, '.')}.{data.slugify(last, '')}{new_cid}@example.com",
                first_name=first,
                last_name=last,
                phone=None,
                birth_date=None,
                newsletter=1,
                optin="Y",
                lang="fr",
                active=1,
                group_id=1,
                created_at=moment,
                updated_at=moment,
                deleted_at=None,
            )
        )
        new_aid = next_id("addresses")
        conn.execute(
            t["addresses"]
            .insert()
            .values(
                id=new_aid,
                customer_id=new_cid,
                first_name=first,
                last_name=last,
                company=None,
                line1="12 rue des Lilas",
                line2=None,
                postcode="69003",
                city="Lyon",
                country_iso="FR",
                phone=None,
                mobile=None,
                active=1,
                created_at=moment,
                updated_at=moment,
                deleted_at=None,
            )
        )
        touched("customers", new_cid)
        touched("addresses", new_aid)

        addr = t["addresses"]
        buyers = conn.execute(
            sa.select(addr.c.customer_id, sa.func.min(addr.c.id))
            .join(cust, cust.c.id == addr.c.customer_id)
            .where(addr.c.active == 1, cust.c.deleted_at.is_(None), cust.c.id.not_in(renamed))
            .group_by(addr.c.customer_id)
            .order_by(addr.c.customer_id)
        ).all()
        old_buyer = rng.choice(buyers)
        for cid, aid in ((new_cid, new_aid), (old_buyer[0], old_buyer[1])):
            _new_order(
                conn,
                rng,
                moment,
                cid,
                aid,
                [p for p in live if p not in (repriced, removed)],
                touched,
            )

        orders = t["orders"]
        ship = conn.scalars(
            sa.select(orders.c.id).where(orders.c.status_id.in_((2, 3))).order_by(orders.c.id)
        ).all()
        if not ship:
            ship = conn.scalars(
                sa.select(orders.c.id).where(orders.c.status_id == 1).order_by(orders.c.id)
            ).all()
        shipped = rng.choice(list(ship))
        conn.execute(
            orders.update()
            .where(orders.c.id == shipped)
            .values(
                status_id=4,
                tracking_number=f"6A{rng.randrange(10**9, 10**10)}FR",
                paid_at=sa.func.coalesce(orders.c.paid_at, moment),
                updated_at=moment,
            )
        )
        touched("orders", shipped)
        _loyalty_and_stores(conn, random.Random(seed + 1), moment, new_cid, old_buyer[0], touched)

        def deleted(table: str, *ids: Any) -> None:
            if ids:
                out.setdefault(f"deleted:{table}", []).extend(ids)

        spare_orders = set(out["orders"])
        sold_now = conn.scalars(
            sa.select(t["order_lines"].c.product_id).where(
                t["order_lines"].c.order_id.in_(spare_orders)
            )
        ).all()
        gone = _purge_customer(conn, rng, {*renamed, new_cid, old_buyer[0]}, deleted)
        _soft_delete_address(conn, rng, moment, {*renamed, new_cid, old_buyer[0], gone}, touched)
        _purge_product(conn, moment, {repriced, retitled, removed, *sold_now}, touched, deleted)
        _sync_sequences(conn, [name for name in out if not name.startswith("deleted:")])
    return {table: sorted(ids) for table, ids in out.items()}


def _loyalty_and_stores(
    conn: sa.Connection,
    rng: random.Random,
    moment: datetime,
    new_customer: int,
    old_customer: int,
    touched: Any,
) -> None:
    """Points earned on one loyalty account; two purchases in the shop's stores."""
    t = _METADATA.tables
    loyalty, cust, store = t["loyalty_accounts"], t["customers"], t["store_purchases"]
    accounts = conn.execute(
        sa.select(loyalty.c.customer_id, loyalty.c.points).order_by(loyalty.c.customer_id)
    ).all()
    if accounts:
        cid, points = rng.choice(accounts)
        points = int(points) + 120
        conn.execute(
            loyalty.update()
            .where(loyalty.c.customer_id == cid)
            .values(points=points, tier=data.tier_of(points), updated_at=moment)
        )
        touched("loyalty_accounts", cid)
    first = int(conn.scalar(sa.select(sa.func.max(store.c.id))) or 0) + 1
    rows = []
    for k, buyer in enumerate((new_customer, old_customer)):
        email = conn.scalar(sa.select(cust.c.email).where(cust.c.id == buyer))
        rows.append(
            {
                "id": first + k,
                "customer_id": buyer,
                "email": email,
                "store": rng.choice(data.STORES),
                "amount": money(Decimal(rng.randrange(500, 25000)) / 100),
                "purchased_at": moment - timedelta(minutes=5 - k),
                "created_at": moment,
                "updated_at": moment,
            }
        )
    conn.execute(store.insert(), rows)
    touched("store_purchases", first, first + 1)


def _purge_customer(conn: sa.Connection, rng: random.Random, spare: set[int], deleted: Any) -> int:
    """Hard-delete a customer without orders, carts or vouchers, and their addresses."""
    t = _METADATA.tables
    cust, addr = t["customers"], t["addresses"]
    free = sa.and_(
        *(
            ~sa.exists().where(t[name].c.customer_id == cust.c.id)
            for name in ("orders", "carts", "vouchers")
        )
    )
    ids = conn.scalars(
        sa.select(cust.c.id)
        .where(cust.c.deleted_at.is_(None), cust.c.id.not_in(spare), free)
        .order_by(cust.c.id)
    ).all()
    cid = int(rng.choice(list(ids)))
    addresses = conn.scalars(sa.select(addr.c.id).where(addr.c.customer_id == cid)).all()
    conn.execute(addr.delete().where(addr.c.customer_id == cid))
    conn.execute(cust.delete().where(cust.c.id == cid))
    deleted("addresses", *addresses)
    deleted("customers", cid)
    return cid


def _soft_delete_address(
    conn: sa.Connection, rng: random.Random, moment: datetime, spare: set[int], touched: Any
) -> None:
    addr = _METADATA.tables["addresses"]
    ids = conn.scalars(
        sa.select(addr.c.id)
        .where(addr.c.deleted_at.is_(None), addr.c.customer_id.not_in(spare))
        .order_by(addr.c.id)
    ).all()
    aid = rng.choice(list(ids))
    conn.execute(
        addr.update().where(addr.c.id == aid).values(deleted_at=moment, active=0, updated_at=moment)
    )
    touched("addresses", aid)


def _purge_product(
    conn: sa.Connection, moment: datetime, spare: set[int], touched: Any, deleted: Any
) -> None:
    """Hard-delete the live product sold the fewest times (not in ``spare``) and all that hangs
    on it: the orders that sold it (lines and carts too), its lines in other carts (those carts
    are touched), translations, category links, variations and images."""
    t = _METADATA.tables
    prod, ol, cl, orders, carts = (
        t[n] for n in ("products", "order_lines", "cart_lines", "orders", "carts")
    )
    sold = sa.func.count(ol.c.id)
    pid = conn.execute(
        sa.select(prod.c.id, sold)
        .outerjoin(ol, ol.c.product_id == prod.c.id)
        .where(prod.c.deleted_at.is_(None), prod.c.id.not_in(spare))
        .group_by(prod.c.id)
        .order_by(sold, prod.c.id)
        .limit(1)
    ).one()[0]
    order_ids = sorted(set(conn.scalars(sa.select(ol.c.order_id).where(ol.c.product_id == pid))))
    cart_ids = sorted(
        set(conn.scalars(sa.select(orders.c.cart_id).where(orders.c.id.in_(order_ids))))
    )
    cart_ids = [
        c
        for c in cart_ids
        if not conn.scalar(
            sa.select(sa.func.count()).where(orders.c.cart_id == c, orders.c.id.not_in(order_ids))
        )
    ]
    lines = conn.scalars(sa.select(ol.c.id).where(ol.c.order_id.in_(order_ids))).all()
    conn.execute(ol.delete().where(ol.c.order_id.in_(order_ids)))
    conn.execute(orders.delete().where(orders.c.id.in_(order_ids)))
    cart_lines = conn.scalars(
        sa.select(cl.c.id).where(sa.or_(cl.c.cart_id.in_(cart_ids), cl.c.product_id == pid))
    ).all()
    changed = sorted(
        set(conn.scalars(sa.select(cl.c.cart_id).where(cl.c.product_id == pid))) - set(cart_ids)
    )
    conn.execute(cl.delete().where(cl.c.id.in_(cart_lines)))
    conn.execute(carts.delete().where(carts.c.id.in_(cart_ids)))
    if changed:
        conn.execute(carts.update().where(carts.c.id.in_(changed)).values(updated_at=moment))
        touched("carts", *changed)
    deleted("order_lines", *lines)
    deleted("orders", *order_ids)
    deleted("cart_lines", *cart_lines)
    deleted("carts", *cart_ids)
    var, img = t["product_variations"], t["product_images"]
    variations = conn.scalars(sa.select(var.c.id).where(var.c.product_id == pid)).all()
    of_product = sa.or_(img.c.product_id == pid, img.c.variation_id.in_(variations))
    images = conn.scalars(sa.select(img.c.id).where(of_product)).all()
    conn.execute(img.delete().where(of_product))
    conn.execute(var.delete().where(var.c.product_id == pid))
    deleted("product_images", *images)
    deleted("product_variations", *variations)
    for name, pair in (("product_categories", "category_id"), ("product_translations", "lang")):
        table = t[name]
        rows = conn.execute(
            sa.select(table.c.product_id, table.c[pair]).where(table.c.product_id == pid)
        ).all()
        conn.execute(table.delete().where(table.c.product_id == pid))
        deleted(name, *(tuple(r) for r in rows))
    conn.execute(prod.delete().where(prod.c.id == pid))
    deleted("products", pid)


def _new_order(
    conn: sa.Connection,
    rng: random.Random,
    moment: datetime,
    customer_id: int,
    address_id: int,
    products: list[int],
    touched: Any,
) -> None:
    t = _METADATA.tables
    prod, cust = t["products"], t["customers"]
    lang = conn.scalar(sa.select(cust.c.lang).where(cust.c.id == customer_id))
    picked = rng.sample(products, rng.randrange(1, 4))
    priced = conn.execute(
        sa.select(prod.c.id, prod.c.price_incl, prod.c.tax_rate)
        .where(prod.c.id.in_(picked))
        .order_by(prod.c.id)
    ).all()
    lines = []
    for pid, incl, rate in priced:
        incl = money(Decimal(incl))
        lines.append(
            {
                "product_id": pid,
                "variation_id": None,
                "qty": rng.randrange(1, 3),
                "unit_price_incl": incl,
                "unit_price_excl": excl(incl, Decimal(rate)),
                "updated_at": moment,
            }
        )

    def next_id(table: str) -> int:
        return int(conn.scalar(sa.select(sa.func.max(t[table].c.id))) or 0) + 1

    cart_id, order_id = next_id("carts"), next_id("orders")
    conn.execute(
        t["carts"]
        .insert()
        .values(
            id=cart_id,
            customer_id=customer_id,
            currency="EUR",
            lang=lang,
            created_at=moment - timedelta(minutes=20),
            updated_at=moment,
            order_id=order_id,
        )
    )
    first_line = next_id("cart_lines")
    conn.execute(
        t["cart_lines"].insert(),
        [{**ln, "id": first_line + k, "cart_id": cart_id} for k, ln in enumerate(lines)],
    )
    items_incl = money(sum((ln["qty"] * ln["unit_price_incl"] for ln in lines), Decimal(0)))
    items_excl = money(sum((ln["qty"] * ln["unit_price_excl"] for ln in lines), Decimal(0)))
    ship = Decimal(0) if items_incl >= 60 else Decimal("4.90")
    conn.execute(
        t["orders"]
        .insert()
        .values(
            id=order_id,
            reference=f"DS-{order_id:06d}",
            customer_id=customer_id,
            cart_id=cart_id,
            status_id=2,
            carrier_id=1,
            delivery_address_id=address_id,
            invoice_address_id=address_id,
            currency="EUR",
            lang=lang,
            total_incl=items_incl + ship,
            total_excl=items_excl + excl(ship, Decimal(20)),
            shipping_incl=ship,
            shipping_excl=excl(ship, Decimal(20)),
            tracking_number=None,
            voucher_code=None,
            voucher_value=None,
            paid_at=moment,
            created_at=moment,
            updated_at=moment,
        )
    )
    first_order_line = next_id("order_lines")
    conn.execute(
        t["order_lines"].insert(),
        [{**ln, "id": first_order_line + k, "order_id": order_id} for k, ln in enumerate(lines)],
    )
    touched("carts", cart_id)
    touched("cart_lines", *range(first_line, first_line + len(lines)))
    touched("orders", order_id)
    touched("order_lines", *range(first_order_line, first_order_line + len(lines)))

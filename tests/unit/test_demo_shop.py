"""The demo shop builds deterministically and consistently; mutate() reports what it changed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connector.demo import shop

NOW = datetime(2026, 5, 7, 10, 0, 0)
LATER = datetime(2026, 5, 7, 10, 30, 15, 123456)
SCALE = 0.1
Q4 = Decimal("0.0001")


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


def _build(engine: sa.Engine, seed: int = 7) -> dict[str, int]:
    shop.create_schema(engine)
    return shop.populate(engine, seed=seed, scale=SCALE, now=NOW)


def _norm(value: Any) -> Any:
    if isinstance(value, (Decimal, float)) and not isinstance(value, bool):
        return Decimal(value).quantize(Q4)
    return value


def _pk(table: sa.Table, row: sa.Row[Any]) -> Any:
    cols = list(table.primary_key.columns)
    values = tuple(row._mapping[c.name] for c in cols)
    return values[0] if len(values) == 1 else values


def snapshot(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    with engine.connect() as conn:
        for table in shop.metadata().sorted_tables:
            rows = conn.execute(sa.select(table).order_by(*table.primary_key.columns)).all()
            out[table.name] = [tuple(_norm(v) for v in row) for row in rows]
    return out


def stamps(engine: sa.Engine) -> dict[str, dict[Any, datetime | None]]:
    out = {}
    with engine.connect() as conn:
        for table in shop.metadata().sorted_tables:
            if "updated_at" in table.c:
                rows = conn.execute(sa.select(table)).all()
                out[table.name] = {_pk(table, r): r._mapping["updated_at"] for r in rows}
    return out


@pytest.fixture(scope="module")
def reference() -> dict[str, list[tuple[Any, ...]]]:
    """The rows seed 7 gives, built once in an in-memory SQLite database."""
    eng = sa.create_engine("sqlite://")
    _build(eng)
    snap = snapshot(eng)
    eng.dispose()
    return snap


def test_populate_fills_every_table_deterministically(
    engine: sa.Engine, reference: dict[str, list[tuple[Any, ...]]]
) -> None:
    counts = _build(engine)
    assert set(counts) == set(shop.metadata().tables)
    snap = snapshot(engine)
    for name, rows in snap.items():
        assert rows, f"{name} is empty"
        assert counts[name] == len(rows), name
    assert snap == reference  # same seed, same rows, whatever the backend


def test_another_seed_gives_other_rows(reference: dict[str, list[tuple[Any, ...]]]) -> None:
    eng = sa.create_engine("sqlite://")
    _build(eng, seed=99)
    assert snapshot(eng)["customers"] != reference["customers"]
    eng.dispose()


def test_rows_are_consistent(engine: sa.Engine) -> None:
    _build(engine)
    md = shop.metadata()
    t = md.tables
    with engine.connect() as conn:
        for table in md.sorted_tables:  # every foreign key points at an existing row
            for fk in table.foreign_keys:
                parent = fk.column.table.alias("parent")  # an alias: categories → categories
                orphans = conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(table)
                    .where(
                        fk.parent.is_not(None),
                        ~sa.exists().where(parent.c[fk.column.name] == fk.parent),
                    )
                )
                assert orphans == 0, f"{table.name}.{fk.parent.name} → {fk.column.table.name}"
        orders, carts, lines, addr = t["orders"], t["carts"], t["order_lines"], t["addresses"]
        # each order line's order exists; every order has 1-5 lines
        per_order = conn.execute(
            sa.select(orders.c.id, sa.func.count(lines.c.id))
            .select_from(orders.outerjoin(lines, lines.c.order_id == orders.c.id))
            .group_by(orders.c.id)
        ).all()
        assert per_order and all(1 <= n <= 5 for _, n in per_order)
        # a converted cart names its order and the order names the cart back
        mismatched = conn.scalar(
            sa.select(sa.func.count())
            .select_from(orders.join(carts, carts.c.id == orders.c.cart_id))
            .where(sa.or_(carts.c.order_id.is_(None), carts.c.order_id != orders.c.id))
        )
        assert mismatched == 0
        # both addresses of an order belong to the order's customer
        for col in (orders.c.delivery_address_id, orders.c.invoice_address_id):
            foreign = conn.scalar(
                sa.select(sa.func.count())
                .select_from(orders.join(addr, addr.c.id == col))
                .where(addr.c.customer_id != orders.c.customer_id)
            )
            assert foreign == 0
        # every product has exactly one cover image (products.toml reads it as a scalar)
        images = t["product_images"]
        covers = conn.execute(
            sa.select(images.c.product_id, sa.func.count())
            .where(images.c.is_cover == 1)
            .group_by(images.c.product_id)
        ).all()
        assert len(covers) == conn.scalar(sa.select(sa.func.count()).select_from(t["products"]))
        assert all(n == 1 for _, n in covers)


def test_timestamps(engine: sa.Engine) -> None:
    _build(engine)
    customers = shop.metadata().tables["customers"]
    with engine.connect() as conn:
        null_updated = int(
            conn.scalar(sa.select(sa.func.count()).where(customers.c.updated_at.is_(None))) or 0
        )
        total = int(conn.scalar(sa.select(sa.func.count()).select_from(customers)) or 0)
    assert 0 < null_updated < total / 10
    all_stamps = [v for rows in stamps(engine).values() for v in rows.values() if v is not None]
    assert min(all_stamps) >= NOW - timedelta(days=731)
    assert max(all_stamps) <= NOW - timedelta(hours=1)
    assert all(v.tzinfo is None for v in all_stamps)
    assert any(v.microsecond for v in all_stamps)  # fractional seconds survive (DATETIME(6))


def test_mutate_changes_exactly_what_it_reports(engine: sa.Engine) -> None:
    _build(engine)
    before = stamps(engine)
    report = shop.mutate(engine, seed=8, now=LATER)
    after = stamps(engine)

    for name in after:
        changed = {
            pk for pk, ts in after[name].items() if pk not in before[name] or before[name][pk] != ts
        }
        assert changed == set(report.get(name, [])), name
        assert all(after[name][pk] == LATER for pk in changed), name
        vanished = set(before[name]) - set(after[name])
        assert vanished == set(report.get(f"deleted:{name}", [])), f"{name}: rows vanished"
        old_max = max((v for v in before[name].values() if v is not None), default=None)
        new_max = max((v for v in after[name].values() if v is not None), default=None)
        assert new_max == (LATER if changed else old_max), name
    assert {name.removeprefix("deleted:") for name in report} <= set(shop.metadata().tables)
    # hard deletes, for `reconcile`: a product with what hangs on it, a customer, orders
    assert len(report["deleted:products"]) == 1 and len(report["deleted:customers"]) == 1
    assert report["deleted:orders"] and report["deleted:product_translations"]
    assert not set(report["deleted:orders"]) & set(report["orders"])

    new_customers = set(after["customers"]) - set(before["customers"])
    assert len(new_customers) == 1
    renamed = set(report["customers"]) - new_customers
    assert len(renamed) == 3
    assert any(before["customers"][c] is None for c in renamed)
    assert len(report["products"]) == 2
    assert report["product_translations"] == [(report["product_translations"][0][0], "en")]
    assert len(set(after["orders"]) - set(before["orders"])) == 2
    assert len(report["orders"]) == 3
    t = shop.metadata().tables
    with engine.connect() as conn:
        deleted = conn.scalars(
            sa.select(t["products"].c.id).where(t["products"].c.deleted_at == LATER)
        ).all()
        assert len(deleted) == 1 and deleted[0] in report["products"]
        for oid in set(after["orders"]) - set(before["orders"]):
            n = conn.scalar(sa.select(sa.func.count()).where(t["order_lines"].c.order_id == oid))
            assert n and n >= 1
    # ids keep flowing from the database after explicit-id inserts (PostgreSQL sequences)
    with engine.begin() as conn:
        new_id = conn.execute(
            t["carriers"].insert().values(name="Test", active=1, created_at=LATER, updated_at=LATER)
        ).inserted_primary_key
    assert new_id is not None and new_id[0] == len(before["carriers"]) + 1


def test_mutate_is_deterministic() -> None:
    reports = []
    for _ in range(2):
        eng = sa.create_engine("sqlite://")
        _build(eng)
        reports.append(shop.mutate(eng, seed=8, now=LATER))
        eng.dispose()
    assert reports[0] == reports[1]


def test_populate_scale_one_is_fast(tmp_path: Path) -> None:
    import time

    eng = sa.create_engine(shop.shop_url_sqlite(tmp_path / "big.sqlite"))
    shop.create_schema(eng)
    started = time.perf_counter()
    counts = shop.populate(eng, now=NOW)
    elapsed = time.perf_counter() - started
    eng.dispose()
    assert elapsed < 3.0
    assert 500 <= counts["customers"] <= 700 and 700 <= counts["orders"] <= 800
    assert sum(counts.values()) > 5000


def test_shop_url_sqlite(tmp_path: Path) -> None:
    url = shop.shop_url_sqlite(tmp_path / "a" / ".." / "shop.sqlite")
    assert url == f"sqlite:///{(tmp_path / 'shop.sqlite').resolve()}"
    eng = sa.create_engine(url)
    shop.create_schema(eng)
    assert (tmp_path / "shop.sqlite").exists()
    eng.dispose()


def test_naive_now_required() -> None:
    from datetime import UTC

    with pytest.raises(ValueError, match="naive"):
        shop.populate(sa.create_engine("sqlite://"), now=datetime.now(UTC))

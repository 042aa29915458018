"""Focused change-capture cases, each on every configured backend: timestamp ties across pages
at second precision, full-precision cursors, time-zone-aware columns, an app clock ahead of the
database, NULL cursors with and without a fallback, and ``reset --to``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connector.source.reader import ShopReader
from tests.e2e import ticks
from tests.e2e.harness import TZ, Env, make_env, shop_now


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    with make_env(db_url, tmp_path, scale=0.1) as e:
        assert e.cli("db", "upgrade").code == 0
        yield e


def sync(env: Env) -> None:
    res = env.cli("sync")
    assert res.code == 0, res.text


def db_now(env: Env) -> datetime:
    """The shop database's clock as shop-local wall-clock time."""
    import sqlalchemy as sa

    reader = ShopReader(sa.make_url(env.shop_url))
    try:
        return reader.db_now_utc().astimezone(TZ).replace(tzinfo=None)
    finally:
        reader.close()


# --- precision and ties ---------------------------------------------------------------------------


def test_second_precision_ties_across_pages(env: Env) -> None:
    """250 rows share one whole-second timestamp (MariaDB's default DATETIME), read in pages of
    100: each is sent once; rows written later *in the same second* with a smaller key (behind
    the (ts, key) cursor) arrive with the next pass; the cursor is the row's exact value."""
    ticks.use(env, lookback="5m")
    table = ticks.create(env, ticks.second_ts())
    tie = (db_now(env) - timedelta(seconds=30)).replace(microsecond=0)
    order = list(range(10, 260))
    order.reverse()  # inserted in reverse key order: the database must order them
    ticks.insert(env, table, [(i, tie) for i in order])
    ticks.insert(env, table, [(5, tie - timedelta(seconds=1))])
    sync(env)
    assert ticks.counts(env) == {str(i): 1 for i in [5, *order]}
    requests = [r for r in env.sandbox.requests if r.path == "/v1/orders-carriers"]
    assert len(requests) >= 3  # 251 items in batches of at most 100
    assert ticks.cursor_value(env) == tie  # stored as read: no rounding, no shift

    # the same second, keys on both sides of the cursor key (259)
    ticks.insert(env, table, [(1, tie), (300, tie)])
    sync(env)
    assert ticks.counts(env) == {str(i): 1 for i in [1, 5, 300, *order]}
    assert ticks.cursor_value(env) == tie


def test_cursor_keeps_microseconds(env: Env) -> None:
    ticks.use(env, lookback="5m")
    table = ticks.create(env, ticks.micro_ts())
    base = (db_now(env) - timedelta(seconds=20)).replace(microsecond=123456)
    ticks.insert(env, table, [(1, base), (2, base + timedelta(microseconds=1))])
    sync(env)
    assert ticks.cursor_value(env) == base + timedelta(microseconds=1)
    assert ticks.sent(env)["2"]["updated_at"] == ticks.iso(base)  # the API has milliseconds
    # a row 1 microsecond after the cursor is new, one at the cursor's value with a smaller key
    # is behind it: both are delivered, nothing is re-sent
    ticks.insert(
        env, table, [(0, base + timedelta(microseconds=1)), (3, base + timedelta(seconds=2))]
    )
    sync(env)
    assert ticks.counts(env) == {"0": 1, "1": 1, "2": 1, "3": 1}


# --- aware columns and an app clock ahead of the database -----------------------------------------


def test_aware_cursor_and_app_clock_ahead(env: Env, backend: str) -> None:
    """``timestamptz`` (PostgreSQL) is used as it is: the cursor stays aware and items carry the
    real instant. An app server whose clock runs ahead writes updated_at in the future: such rows
    wait for the database clock to pass them, and are then delivered — none is lost, the cursor
    never jumps ahead of the database clock."""
    ticks.use(env, lookback="5m")
    table = ticks.create(env, ticks.aware_ts())
    aware = backend == "postgresql"
    now_local = db_now(env)

    def ts(local: datetime) -> datetime:
        return local.replace(tzinfo=TZ).astimezone(UTC) if aware else local

    ticks.insert(env, table, [(1, ts(now_local - timedelta(minutes=1)))])
    sync(env)
    ahead = now_local + timedelta(seconds=1.5)
    ticks.insert(env, table, [(2, ts(ahead)), (3, ts(now_local - timedelta(seconds=1)))])
    sync(env)
    assert set(ticks.sent(env)) == {"1", "3"}  # "2" is in the future for the database
    cursor = ticks.cursor_value(env)
    assert (cursor.tzinfo is not None) == aware
    if aware:
        assert cursor == ts(now_local - timedelta(seconds=1))
    else:
        assert cursor == now_local - timedelta(seconds=1)
    deadline = time.monotonic() + 15
    while "2" not in ticks.sent(env) and time.monotonic() < deadline:
        time.sleep(0.5)
        sync(env)
    assert set(ticks.sent(env)) == {"1", "2", "3"}
    assert ticks.sent(env)["2"]["updated_at"] == ticks.iso(ahead)
    assert ticks.counts(env) == {"1": 1, "2": 1, "3": 1}


# --- NULL cursors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "no-fallback"])
def test_null_cursor_rows_first_sight_and_changes(env: Env, fallback: bool) -> None:
    """customers.updated_at is NULL for imported rows. With ``cursor_fallback = "created_at"``
    they are read by created_at; without, every pass walks them by key. Either way they are sent
    on first sight and again when they change — and not on every pass."""
    env.use_mappings(["customers"])
    if not fallback:
        env.edit_mapping("customers", 'cursor_fallback = "created_at"\n', "")
    now = shop_now()
    env.execute(
        "INSERT INTO customers (id, email, first_name, last_name, newsletter, optin, lang, "
        "active, group_id, created_at, updated_at) VALUES (9001, 'null.cursor@example.com', "
        "'Null', 'Cursor', 0, 'N', 'fr', 1, 1, :now, NULL)",
        now=now,
    )
    nulls = {str(r["id"]) for r in env.sql("SELECT id FROM customers WHERE updated_at IS NULL")}
    assert "9001" in nulls and len(nulls) >= 2
    sync(env)
    got = env.sandbox.records("customers")
    assert nulls <= set(got)
    assert got == env.expected("customers")
    before = env.sandbox.context.store.send_counts("customers")
    sync(env)  # nothing changed: nothing re-sent, NULL rows included
    assert env.sandbox.context.store.send_counts("customers") == before

    # a change: the shop edits the row (setting updated_at, as a well-behaved writer does)
    env.execute(
        "UPDATE customers SET first_name = 'Changed', updated_at = :now WHERE id = 9001",
        now=shop_now(),
    )
    changed = {"9001"}
    if not fallback:
        # without a fallback a row whose cursor stays NULL is still seen changing, and so is a
        # row whose cursor becomes NULL
        other = sorted(nulls - {"9001"})[0]
        env.execute(f"UPDATE customers SET last_name = 'StillNull' WHERE id = {other}")
        live = env.sql(
            "SELECT id FROM customers WHERE updated_at IS NOT NULL AND deleted_at IS NULL "
            "ORDER BY id"
        )
        to_null = str(live[0]["id"])
        env.execute(
            f"UPDATE customers SET last_name = 'NowNull', updated_at = NULL WHERE id = {to_null}"
        )
        changed |= {other, to_null}
    sync(env)
    got = env.sandbox.records("customers")
    assert got["9001"]["first_name"] == "Changed"
    assert got == env.expected("customers")
    after = env.sandbox.context.store.send_counts("customers")
    assert {k for k in after if after[k] != before.get(k)} == changed


# --- reset --------------------------------------------------------------------------------------


def test_reset_to_a_point_resends_from_there_and_fresh_changes_flow(env: Env) -> None:
    env.use_mappings(["customers"])
    sync(env)
    store = env.sandbox.context.store
    rows = env.sql(
        "SELECT id, COALESCE(updated_at, created_at) AS cur FROM customers "
        "WHERE deleted_at IS NULL ORDER BY COALESCE(updated_at, created_at), id"
    )
    cur = {str(r["id"]): _dt(r["cur"]) for r in rows}
    point = sorted(cur.values())[len(cur) // 2]
    lookback = timedelta(minutes=5)
    res = env.cli("reset", "customers", "--to", point.isoformat(sep=" "))
    assert res.code == 0, res.text
    assert "cursor reset to" in res.out
    from_point = {k for k, v in cur.items() if v >= point}
    assert env.status()["customers"]["rows_behind"] == len(
        env.sql("SELECT id FROM customers WHERE COALESCE(updated_at, created_at) >= :p", p=point)
    )

    # fresh activity between the reset and the next pass: an old row edited, a new customer
    old_key = min(cur, key=lambda k: cur[k])
    env.execute(
        "UPDATE customers SET first_name = 'Fresh', updated_at = :now WHERE id = :id",
        now=shop_now(),
        id=int(old_key),
    )
    env.execute(
        "INSERT INTO customers (id, email, first_name, last_name, newsletter, optin, lang, "
        "active, group_id, created_at, updated_at) VALUES (9002, 'fresh@example.com', "
        "'New', 'Comer', 1, 'Y', 'fr', 1, 1, :now, :now)",
        now=shop_now(),
    )
    before = store.send_counts("customers")
    sync(env)  # one pass: the forced re-send and the fresh changes together
    after = store.send_counts("customers")
    resent = {k for k in after if after[k] > before.get(k, 0)}
    assert from_point <= resent, "rows from the reset point were not re-sent"
    untouched = {k for k, v in cur.items() if v < point - lookback} - {old_key}
    assert not (resent & untouched), "rows before the reset point were re-sent"
    assert {old_key, "9002"} <= resent
    assert env.sandbox.records("customers") == env.expected("customers")
    n = len(env.sandbox.requests)
    sync(env)  # the forced range is done: nothing more is sent
    assert len(env.sandbox.requests) == n

    # a full resync re-sends everything once
    assert env.cli("reset", "customers").code == 0
    before = store.send_counts("customers")
    sync(env)
    after = store.send_counts("customers")
    assert {k: after[k] - before.get(k, 0) for k in env.expected("customers")} == {
        k: 1 for k in env.expected("customers")
    }


def _dt(v: object) -> datetime:
    if isinstance(v, datetime):
        return v
    return datetime.fromisoformat(str(v))

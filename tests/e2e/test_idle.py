"""Passes that find nothing: one run row per mapping, status/health still true, and state
written beside the service (``reset``) still read by its next pass. ``[changes]`` tables (the
example product mappings, whose cursor is one indexed column): a change in a watched table
re-sends the rows it links to, and only the items that changed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from connector.config import load_config
from connector.runtime import Runtime
from connector.state import tables
from tests.e2e.harness import Env, make_env, shop_now


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    with make_env(db_url, tmp_path) as e:
        assert e.cli("db", "upgrade").code == 0
        yield e


def _runs(env: Env, mapping: str) -> list[int]:
    engine = sa.create_engine(f"sqlite:///{env.tmp / 'state.sqlite'}")
    try:
        with engine.connect() as conn:
            ids = conn.scalars(sa.select(tables.runs.c.id).where(tables.runs.c.mapping == mapping))
            return sorted(ids)
    finally:
        engine.dispose()


def test_idle_passes_share_a_run_row_and_reset_is_seen(env: Env) -> None:
    env.use_mappings(["customers", "orders"])
    total = len(env.sql("SELECT id FROM customers WHERE deleted_at IS NULL"))
    with Runtime.open(load_config(env.config)) as rt:
        backfill = {r.mapping: r for r in rt.run_once()}
        assert backfill["customers"].counts.items_sent == total
        before = {m: _runs(env, m) for m in ("customers", "orders")}
        for _ in range(3):
            for res in rt.run_once():
                assert (res.outcome, res.counts.items_sent) == ("ok", 0), res
        for m in ("customers", "orders"):  # the first idle pass adds a row, the next reuse it
            runs = _runs(env, m)
            assert runs[:-1] == before[m] and len(runs) == len(before[m]) + 1, m
        last = env.status()["customers"]["last_run"]
        assert last["outcome"] == "ok" and last["items_sent"] == 0
        assert env.cli("health").code == 0
        assert res.cursor == backfill["orders"].cursor  # known without reading it back

        # a pass that sends adds a row of its own, kept; the idle pass after it adds one more
        env.execute(
            "UPDATE customers SET first_name = 'Idle', updated_at = :now WHERE id = 1",
            now=shop_now(),
        )
        changed = rt.syncer("customers").run_pass()
        assert changed.counts.items_sent == 1
        after_change = _runs(env, "customers")
        assert len(after_change) == len(before["customers"]) + 2
        assert rt.syncer("customers").run_pass().counts.items_sent == 0
        assert rt.syncer("customers").run_pass().counts.items_sent == 0
        assert _runs(env, "customers")[:-1] == after_change
        assert env.sandbox.records("customers")["1"]["first_name"] == "Idle"

        # idle passes do not map the lookback window's rows again, yet a row changed there
        # without its cursor moving (a write that forgot updated_at) is still seen and sent
        env.execute("UPDATE customers SET first_name = 'Quiet' WHERE id = 1")
        assert rt.syncer("customers").run_pass().counts.items_sent == 1
        assert env.sandbox.records("customers")["1"]["first_name"] == "Quiet"
        assert rt.syncer("customers").run_pass().counts.items_sent == 0

        # `reset` takes no lock: it runs beside the service, whose next pass must see it
        env.sandbox.reset()
        assert env.cli("reset", "customers").code == 0
        again = rt.syncer("customers").run_pass()
        assert again.counts.items_sent == total
        assert len(env.sandbox.records("customers")) == total
        assert rt.syncer("customers").run_pass().counts.items_sent == 0


def test_a_renamed_translation_re_sends_its_variations_in_that_language(env: Env) -> None:
    env.use_mappings(["products", "products_variations", "products_images"])
    assert env.cli("sync").code == 0
    live = env.sql(
        "SELECT MIN(v.product_id) AS p FROM product_variations v"
        " JOIN products p ON p.id = v.product_id WHERE p.deleted_at IS NULL"
    )
    pid = live[0]["p"]
    variations = [
        r["id"] for r in env.sql("SELECT id FROM product_variations WHERE product_id = :p", p=pid)
    ]
    before = dict(env.sandbox.records("products_variations"))
    time.sleep(0.01)
    mark = len(env.sandbox.requests)
    env.execute(
        "UPDATE product_translations SET name = 'Nouveau nom', updated_at = :now"
        " WHERE product_id = :p AND lang = 'fr'",
        now=shop_now(),
        p=pid,
    )
    assert env.cli("sync").code == 0
    sent = sorted((r.path, r.item_count) for r in env.sandbox.requests[mark:])
    assert sent == [("/v1/products", 1), ("/v1/products/variations/bulk", len(variations))]
    after = env.sandbox.records("products_variations")
    for v in variations:
        assert after[f"{pid}|{v}|fr"]["name"].startswith("Nouveau nom - ")
        assert after[f"{pid}|{v}|en"] == before[f"{pid}|{v}|en"]
    assert env.sandbox.records("products")[f"{pid}|fr"]["name"] == "Nouveau nom"

    # a pass with nothing changed reads the watched tables and sends nothing
    mark = len(env.sandbox.requests)
    assert env.cli("sync").code == 0
    assert env.sandbox.requests[mark:] == []


def test_the_lookback_window_is_skipped_once_settled_and_late_commits_are_still_caught(
    env: Env,
) -> None:
    """With a 2 s lookback: a late commit inside it is sent; once the cursor stood still for
    the lookback and a pass re-read the window after that, idle passes read no row at all
    (they start strictly after the cursor); a new change reopens the window; a restarted
    connector re-reads the window before trusting it again."""
    env.use_mappings(["customers"])
    env.edit_mapping("customers", 'lookback = "5m"', 'lookback = "2s"')
    live = [r["id"] for r in env.sql("SELECT id FROM customers WHERE deleted_at IS NULL")]
    with Runtime.open(load_config(env.config)) as rt:
        assert rt.syncer("customers").run_pass().outcome == "ok"
        window = rt.windows["customers"]
        now = shop_now()
        env.execute(
            "UPDATE customers SET first_name = 'Fresh', updated_at = :t WHERE id IN (:a, :b)",
            t=now,
            a=live[0],
            b=live[1],
        )
        moved = time.monotonic()  # before the pass that moves the cursor
        fresh = rt.syncer("customers").run_pass()
        assert fresh.counts.items_sent == 2 and not window.settled
        # committed late: stamped before the cursor (inside the lookback), committed after
        env.execute(
            "UPDATE customers SET first_name = 'Late', updated_at = :t WHERE id = :c",
            t=now - timedelta(seconds=1),
            c=live[2],
        )
        late = rt.syncer("customers").run_pass()
        assert late.counts.items_sent == 1 and late.counts.rows_read >= 3
        assert env.sandbox.records("customers")[str(live[2])]["first_name"] == "Late"

        read: list[int] = []
        deadline = time.monotonic() + 30
        while not window.settled:
            assert time.monotonic() < deadline, "the window never settled"
            res = rt.syncer("customers").run_pass()
            assert (res.outcome, res.counts.items_sent) == ("ok", 0), res
            read.append(res.counts.rows_read)
            time.sleep(0.2)
        assert read and min(read) >= 3, read  # the window was re-read until it settled
        assert time.monotonic() - moved >= 2.0, "settled before the lookback had passed"
        for _ in range(3):
            idle = rt.syncer("customers").run_pass()
            assert (idle.counts.rows_read, idle.counts.items_sent) == (0, 0), idle.counts

        env.execute(
            "UPDATE customers SET first_name = 'Again', updated_at = :t WHERE id = :a",
            t=shop_now(),
            a=live[0],
        )
        assert rt.syncer("customers").run_pass().counts.items_sent == 1
        assert not window.settled
        assert rt.syncer("customers").run_pass().counts.rows_read >= 1  # window re-read
    with Runtime.open(load_config(env.config)) as rt:  # restarted: nothing is trusted
        assert rt.syncer("customers").run_pass().counts.rows_read >= 1
        assert not rt.windows["customers"].settled

"""Bad inputs get a clear message and lose nothing: each row is sent once the cause is fixed,
or sits in rejected items. Runs on every configured backend."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.source.reader import ShopReader
from tests.e2e.harness import KEY, Env, make_env, shop_now


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    with make_env(db_url, tmp_path) as e:
        assert e.cli("db", "upgrade").code == 0
        e.use_mappings(["customers"])
        yield e


def live_customers(env: Env) -> set[str]:
    return {str(r["id"]) for r in env.sql("SELECT id FROM customers WHERE deleted_at IS NULL")}


def cursor_of(env: Env) -> object:
    return json.loads(env.cli("status", "--json").out)[0]["cursor"]


def test_broken_toml_names_file_and_line(env: Env) -> None:
    (env.mappings / "orders.toml").write_text('resource = "orders"\n[source\ntable = "orders"\n')
    res = env.cli("sync")
    assert res.code == 2
    assert "orders.toml:2: TOML syntax error" in res.err
    assert env.sandbox.requests == []  # nothing half-done


def test_every_mapping_problem_listed_at_once(env: Env) -> None:
    (env.mappings / "x.toml").write_text(
        'resource = "products"\n[source]\ntable = "products"\nkey = "id"\ncursor = "updated_at"\n'
        '[fields]\nproduct_id = "id"\nprice = { column = "price", convert = "round" }\n'
    )
    res = env.cli("check", "--offline")
    assert res.code == 2
    assert "x.toml: fields.price.convert: unknown conversion 'round'" in res.err
    assert "x.toml: fields: required API field 'name' of products is not mapped" in res.err


def test_check_reports_missing_column_and_table(env: Env) -> None:
    text = (env.mappings / "customers.toml").read_text()
    (env.mappings / "customers.toml").write_text(
        text.replace('first_name = "first_name"', 'first_name = "firstname"')
    )
    (env.mappings / "carriers.toml").write_text(
        'resource = "orders_carriers"\n[source]\ntable = "shipping_carriers"\nkey = "id"\n'
        'cursor = "updated_at"\n[fields]\ncarrier_id = "id"\nname = "name"\nis_active = "active"\n'
        'created_at = "created_at"\nupdated_at = "updated_at"\n'
    )
    res = env.cli("check")
    assert res.code == 2
    assert (
        "customers.toml: fields.first_name: unknown column 'firstname' in table customers"
        in res.err
    )
    assert "carriers.toml: source.table: table 'shipping_carriers' does not exist" in res.err

    # sync with the typo: the pass fails before sending, the cursor does not move
    (env.mappings / "carriers.toml").unlink()
    res = env.cli("sync")
    assert res.code == 1
    assert "customers.toml: fields.first_name: column 'firstname' is not in the rows" in res.err
    assert env.sandbox.requests == []
    assert cursor_of(env) is None
    # fixed: every row arrives
    (env.mappings / "customers.toml").write_text(text)
    assert env.cli("sync").code == 0
    assert set(env.sandbox.records("customers")) == live_customers(env)


def test_null_in_required_field_is_kept_then_sent_when_fixed(env: Env) -> None:
    text = (env.mappings / "customers.toml").read_text()
    # blank e-mail addresses are NULL for the API (a common shop habit)
    text = text.replace(
        'table = "customers"',
        "query = \"SELECT c.*, NULLIF(TRIM(c.email), '') AS mail FROM customers c\"",
    ).replace('column = "email"', 'column = "mail"')
    (env.mappings / "customers.toml").write_text(text)
    victim = sorted(live_customers(env), key=int)[3]
    env.execute("UPDATE customers SET email = ' ' WHERE id = :id", id=int(victim))
    res = env.cli("sync")
    assert res.code == 0, res.text
    assert "rejected before sending" in res.err and "column 'mail' is NULL" in res.err
    assert victim not in env.sandbox.records("customers")
    assert set(env.sandbox.records("customers")) == live_customers(env) - {victim}
    listed = env.cli("rejected", "list", "--json")
    (rej,) = json.loads(listed.out)
    assert rej["key"] == f"[{victim}]"
    assert "fields.email: required by the API but column 'mail' is NULL" in rej["errors"][0]
    assert json.loads(env.cli("status", "--json").out)[0]["rejected"] == 1

    # the shop fixes the row: the next pass sends it and the rejected item is resolved
    env.execute(
        "UPDATE customers SET email = 'fixed@example.org', updated_at = :now WHERE id = :id",
        now=shop_now(),
        id=int(victim),
    )
    assert env.cli("sync").code == 0
    assert env.sandbox.records("customers")[victim]["email"] == "fixed@example.org"
    assert env.cli("rejected", "list").out.strip() == "no open rejected items"


def test_rejected_by_mapping_value_then_retried_after_mapping_fix(env: Env) -> None:
    text = (env.mappings / "customers.toml").read_text()
    broken = text.replace(
        'lang = { column = "lang", default = "fr" }',
        'lang = { column = "lang", map = { fr = "fr" } }',
    )
    (env.mappings / "customers.toml").write_text(broken)
    assert env.cli("sync").code == 0
    english = {
        str(r["id"])
        for r in env.sql("SELECT id FROM customers WHERE lang = 'en' AND deleted_at IS NULL")
    }
    assert english and not english & set(env.sandbox.records("customers"))
    (env.mappings / "customers.toml").write_text(text)
    res = env.cli("rejected", "retry")
    assert res.code == 0, res.text
    assert "0 still open" in res.out
    assert set(env.sandbox.records("customers")) == live_customers(env)


def test_shop_database_down_mid_run(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.write_config(sync={"mappings_dir": str(env.mappings), "page_size": 10})
    total = len(live_customers(env))
    calls = {"n": 0}
    real = ShopReader.fetch
    first_page_read = threading.Event()  # with its child rows

    def flaky(
        self: ShopReader, stmt: object, what: str = "query", params: object = None
    ) -> list[dict[str, object]]:
        if "reading a page" in what:
            calls["n"] += 1
            if calls["n"] == 2:  # the table goes between two pages (the second is read ahead
                first_page_read.wait(30)  # while the first is sent: after its child rows)
                env.execute("ALTER TABLE customers RENAME TO customers_away")
        rows = real(self, stmt, what, params)  # type: ignore[arg-type]
        if "reading child rows" in what:
            first_page_read.set()
        return rows

    monkeypatch.setattr(ShopReader, "fetch", flaky)
    res = env.cli("sync")
    assert res.code == 1
    assert "shop database" in res.err and "customers.toml: reading a page failed" in res.err
    partial = set(env.sandbox.records("customers"))
    assert 0 < len(partial) < total
    monkeypatch.setattr(ShopReader, "fetch", real)
    env.execute("ALTER TABLE customers_away RENAME TO customers")
    assert env.cli("sync").code == 0
    assert set(env.sandbox.records("customers")) == live_customers(env)


def test_api_down_keeps_cursor_and_loses_nothing(env: Env) -> None:
    env.sandbox.inject(status=503, count=1000)
    res = env.cli("sync")
    assert res.code == 1
    assert "HTTP 503; gave up after 3 attempts" in res.err
    assert "the cursor was kept" in res.err
    assert cursor_of(env) is None
    env.sandbox.clear_faults()
    assert env.cli("sync").code == 0
    assert set(env.sandbox.records("customers")) == live_customers(env)


def test_api_down_mid_run_resumes_after_last_accepted_batch(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector.destination.client import ApiClient

    real = ApiClient.send_items
    sent = {"n": 0}

    def failing_after_one(self: ApiClient, path: str, items: list[object], **kw: Any) -> object:
        sent["n"] += 1
        if sent["n"] == 2:
            env.sandbox.inject(status=502, count=1000)
        return real(self, path, items, **kw)

    env.write_config(sync={"mappings_dir": str(env.mappings), "max_in_flight": 1})
    monkeypatch.setattr(ApiClient, "send_items", failing_after_one)
    res = env.cli("sync")
    assert res.code == 1
    first = set(env.sandbox.records("customers"))
    assert len(first) == 50  # the first batch of 50 accepted, the second failed
    assert cursor_of(env) is not None
    env.sandbox.clear_faults()
    monkeypatch.setattr(ApiClient, "send_items", real)
    env.sandbox.reset()
    assert env.cli("sync").code == 0
    # exactly the rest arrives: the two accepted batches are not sent again
    assert set(env.sandbox.records("customers")) == live_customers(env) - first


def test_wrong_api_key(env: Env) -> None:
    os.environ["SHOPIMIND_API_KEY"] = "wrong-key-0123456789abcdef"
    try:
        res = env.cli("sync")
    finally:
        os.environ["SHOPIMIND_API_KEY"] = KEY
    assert res.code == 1
    assert "401 Unauthorized: the API key is missing or invalid" in res.err
    assert "wrong-key-0123456789abcdef" not in res.text
    assert cursor_of(env) is None
    assert env.cli("sync").code == 0
    assert set(env.sandbox.records("customers")) == live_customers(env)


def test_missing_api_key(env: Env) -> None:
    del os.environ["SHOPIMIND_API_KEY"]
    try:
        res = env.cli("sync")
    finally:
        os.environ["SHOPIMIND_API_KEY"] = KEY
    assert res.code == 2
    assert "the ShopiMind API key is missing" in res.err
    assert "SHOPIMIND_API_KEY" in res.err


def test_password_never_printed(env: Env, tmp_path: Path) -> None:
    secret = "pa55-w0rd-never-shown"
    (tmp_path / "pw").write_text(secret)
    env.write_config(
        source={
            "url": "postgresql+psycopg://shop@127.0.0.1:1/shop",
            "password_file": str(tmp_path / "pw"),
            "connect_timeout": "1s",
        }
    )
    for cmd in (["sync"], ["check"], ["status"]):
        res = env.cli(*cmd)
        assert secret not in res.text
        assert KEY not in res.text
    res = env.cli("sync")
    assert (
        res.code == 1 and "shop database postgresql+psycopg://shop:***@127.0.0.1:1/shop" in res.err
    )


def test_api_rejected_items_are_kept_retried_and_do_not_block(env: Env) -> None:
    victims = sorted(live_customers(env), key=int)[:2]
    env.sandbox.refuse("customers", {v: "customer_id: blocked by a server rule" for v in victims})
    res = env.cli("sync")
    assert res.code == 0, res.text
    assert "ShopiMind rejected row" in res.err
    assert set(env.sandbox.records("customers")) == live_customers(env) - set(victims)
    listed = json.loads(env.cli("rejected", "list", "--json").out)
    assert {r["key"] for r in listed} == {f"[{v}]" for v in victims}
    assert all(r["source"] == "api" for r in listed)
    assert all("blocked by a server rule" in json.dumps(r["errors"]) for r in listed)
    assert json.loads(env.cli("status", "--json").out)[0]["rows_behind"] == 0  # cursor moved on

    # the next passes try them again, a bounded number of times
    for _ in range(4):
        env.cli("sync")
    attempts = [r["attempts"] for r in json.loads(env.cli("rejected", "list", "--json").out)]
    assert attempts == [3, 3]
    posted = sum(
        1 for r in env.sandbox.requests if r.method == "POST" and r.resource == "customers"
    )
    env.cli("sync")
    assert posted == sum(
        1 for r in env.sandbox.requests if r.method == "POST" and r.resource == "customers"
    )  # no further automatic attempts

    # the server-side cause goes away: `rejected retry` delivers them
    env.sandbox.clear_faults()
    res = env.cli("rejected", "retry")
    assert res.code == 0, res.text
    assert set(env.sandbox.records("customers")) == live_customers(env)
    assert env.cli("rejected", "list").out.strip() == "no open rejected items"


def test_check_warns_when_the_cursor_column_has_no_index(env: Env) -> None:
    env.execute("CREATE TABLE loyalty (id INTEGER PRIMARY KEY, name VARCHAR(20), changed DATE)")
    (env.mappings / "carriers.toml").write_text(
        'resource = "orders_carriers"\n[source]\ntable = "loyalty"\nkey = "id"\n'
        'cursor = "changed"\n[fields]\ncarrier_id = "id"\nname = "name"\n'
        'is_active = { const = true }\ncreated_at = "changed"\nupdated_at = "changed"\n'
    )
    res = env.cli("check")
    assert res.code == 0, res.text
    assert (
        "carriers.toml: source.cursor: warning: no index starts with 'changed' on loyalty"
        in res.err
    )
    assert "CREATE INDEX" in res.err

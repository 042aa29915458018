"""Reconciliation of hard deletes: the pure comparison, guards and delete planning (no database),
the shop lookup query on SQLite, and the state store's status moves on every backend."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection
from pathlib import Path

import pytest
import sqlalchemy as sa

from connector.mapping import CompiledMapping, load_mapping_file
from connector.mapping.load import load_mappings
from connector.reconcile import (
    ReconcileResult,
    compare_pages,
    delete_columns,
    lookup_query,
    merge_routes,
    plan_deletes,
    refusal,
    take_chunks,
)
from connector.state.model import Accepted, key_json
from connector.state.store import StateStore
from connector.timeutil import zone

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


def _paged(keys: list[str], size: int) -> tuple[list[int], Callable[[str | None], list[str]]]:
    """A fake state: ``keys`` served by key text, ``size`` at a time after a key, like
    ``StateStore.known_keys``; records the size of each page asked for."""
    ordered = sorted(keys)
    sizes: list[int] = []

    def next_page(after: str | None) -> list[str]:
        start = 0 if after is None else bisect.bisect_right(ordered, after)
        page = ordered[start : start + size]
        sizes.append(len(page))
        return page

    return sizes, next_page


def test_integer_keys_whose_text_order_differs_from_numeric_order() -> None:
    """Keys 1..1000: the state pages them as text ("[10]" < "[9]"); the shop has lost a few. The
    comparison finds exactly those, and never holds more than a page."""
    keys = [key_json((i,)) for i in range(1, 1001)]
    assert sorted(keys)[:3] == ["[1000]", "[100]", "[101]"]  # text order ≠ numeric order
    gone = {1, 2, 9, 10, 11, 99, 100, 101, 500, 999, 1000}
    shop = {key_json((i,)) for i in range(1, 1001) if i not in gone}
    sizes, next_page = _paged(keys, 37)
    looked_up: list[int] = []

    def present(page: list[str]) -> Collection[str]:
        looked_up.append(len(page))
        return {k for k in page if k in shop}

    marked: list[str] = []
    res = ReconcileResult("t")
    compare_pages(next_page, present, marked.extend, res)
    assert sorted(marked) == sorted(key_json((i,)) for i in gone)
    assert len(marked) == len(set(marked))
    assert (res.known, res.found, res.missing) == (1000, 1000 - len(gone), len(gone))
    assert max(looked_up) == 37 and sum(looked_up) == 1000
    assert sum(sizes) == 1000 and max(sizes) == 37
    assert len(res.sample) == 10 and set(res.sample) <= set(marked)


def test_compare_stops_when_asked() -> None:
    keys = [key_json((i,)) for i in range(100)]
    _, next_page = _paged(keys, 10)
    calls: list[int] = []
    res = ReconcileResult("t")
    compare_pages(
        next_page,
        lambda page: calls.append(1) or set(),
        lambda gone: None,
        res,
        lambda: len(calls) >= 2,
    )
    assert res.known == 20 and res.missing == 20


@pytest.mark.parametrize(
    ("known", "found", "missing", "share", "refused"),
    [
        (0, 0, 0, 0.5, None),  # nothing known
        (100, 100, 0, 0.5, None),  # nothing gone
        (100, 0, 100, 0.5, "none of the 100"),  # an empty read
        (1, 0, 1, 0.5, "none of the 1"),
        (100, 49, 51, 0.5, "51 of 100"),  # a truncated read
        (100, 50, 50, 0.5, None),  # exactly half may go
        (100, 90, 10, 0.05, "10 of 100"),
        (100, 0, 100, 1.0, None),  # the operator allowed everything
    ],
)
def test_guard(known: int, found: int, missing: int, share: float, refused: str | None) -> None:
    why = refusal(known, found, missing, share)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why


def test_plan_groups_by_route_and_keeps_what_lives_on() -> None:
    p = "/v1/products/bulk-delete"
    candidates = [
        ('[5,"en"]', "[5]", (p, 5)),
        ('[5,"fr"]', "[5]", (p, 5)),  # both languages: one id
        ('[6,"de"]', "[6]", (p, 6)),  # product 6 lives on in fr
        ('[7,"fr"]', "[7]", (p, 7)),  # back in the shop
        ('[8,"fr"]', "[8]", "fields.product_id: required by the API but column 'id' is NULL"),
        ('[9,"fr"]', "[9]", (p, 9)),
    ]
    alive = [('[6,"fr"]', "[6]"), ('[7,"fr"]', "[7]")]
    plan = plan_deletes(candidates, alive)
    assert plan.back == ['[7,"fr"]']
    assert plan.kept == ['[6,"de"]']
    assert plan.unroutable == [('[8,"fr"]', candidates[4][2])]
    assert plan.routes == {p: {5: ['[5,"en"]', '[5,"fr"]'], 9: ['[9,"fr"]']}}


def test_calls_hold_at_most_the_delete_limit_and_wait_to_fill_up() -> None:
    first = "/v1/customers/1/addresses/bulk-delete"
    second = "/v1/customers/2/addresses/bulk-delete"
    buffer: dict[str, dict[object, list[str]]] = {}
    page = {first: {i: [f"[1,{i}]"] for i in range(45)}, second: {7: ["[2,7]"]}}
    assert merge_routes(buffer, page) == 46
    calls = take_chunks(buffer, 20, everything=False)
    assert [(p, len(ids)) for p, ids, _ in calls] == [(first, 20), (first, 20)]
    assert calls[1][2] == [f"[1,{i}]" for i in range(20, 40)]
    # the next page brings another language of an id already waiting: still one id
    assert merge_routes(buffer, {first: {44: ["[1,44,'en']"]}}) == 6
    assert buffer[first][44] == ["[1,44]", "[1,44,'en']"]
    rest = take_chunks(buffer, 20, everything=True)
    assert [(p, len(ids)) for p, ids, _ in rest] == [(first, 5), (second, 1)]
    assert buffer == {}


def _mapping(name: str):  # type: ignore[no-untyped-def]
    return load_mapping_file(MAPPINGS / f"{name}.toml")


def test_delete_routes_come_from_the_key() -> None:
    assert delete_columns(_mapping("products")) == (("id",), None)
    assert delete_columns(_mapping("customers_addresses")) == (("customer_id", "id"), None)
    assert delete_columns(_mapping("products_variations")) == (("product_id", "id"), None)
    cols, why = delete_columns(_mapping("newsletter_subscribers"))
    assert cols == () and why is not None and "no bulk delete" in why
    mappings = load_mappings(MAPPINGS)
    routable = {m.name for m in mappings if delete_columns(m)[1] is None}
    deletable = {m.name for m in mappings if m.resource.can_delete or m.kind == "custom_data"}
    assert routable == deletable  # custom data: by record id (connector._custom_deletes)
    assert "loyalty_points" in routable and "store_purchase_event" not in routable
    assert {"customers_addresses", "products_images", "orders", "vouchers"} <= routable
    assert not {"newsletter_subscribers", "carts"} & routable


def test_a_nested_route_needs_the_parent_in_the_key(tmp_path: Path) -> None:
    text = (MAPPINGS / "customers_addresses.toml").read_text(encoding="utf-8")
    path = tmp_path / "customers_addresses.toml"
    path.write_text(text.replace('key = ["customer_id", "id"]', 'key = ["id"]'), encoding="utf-8")
    cols, why = delete_columns(load_mapping_file(path))
    assert cols == ()
    assert why is not None and "'customer_id'" in why and "source.key" in why


def test_the_route_of_a_vanished_row_from_its_key_alone() -> None:
    compiled = CompiledMapping(_mapping("products_variations"), zone("Europe/Paris"))
    row = {"product_id": 42, "id": 7, "lang": "fr"}
    assert compiled.delete_ref(row) == ("/v1/products/42/variations/bulk-delete", 7)
    compiled = CompiledMapping(_mapping("customers_addresses"), zone("Europe/Paris"))
    path, ident = compiled.delete_ref({"customer_id": 3, "id": 56})
    assert (path, ident) == ("/v1/customers/3/addresses/bulk-delete", 56)


def test_lookup_query_finds_rows_by_key_with_nulls_and_soft_deletes() -> None:
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER, lang TEXT, gone TEXT, upd TEXT)")
        conn.exec_driver_sql(
            "INSERT INTO t VALUES (1,'fr',NULL,'x'), (1,'en','2026-01-01','x'), (2,NULL,NULL,'x'),"
            " (3,'fr',NULL,'x')"
        )
    from connector.mapping.spec import DeletedSpec, SourceSpec

    spec = SourceSpec("t", None, ("id", "lang"), "upd", deleted=DeletedSpec("gone", "not_null"))
    stmt = lookup_query(spec, spec.key, [(1, "fr"), (1, "en"), (2, None), (4, "fr")])
    with engine.connect() as conn:
        rows = {tuple(r) for r in conn.execute(stmt)}
    assert rows == {(1, "fr", None), (1, "en", "2026-01-01"), (2, None, None)}
    by_id = lookup_query(spec, ("id",), [(1,), (3,)])
    with engine.connect() as conn:
        assert sorted(tuple(r)[:2] for r in conn.execute(by_id)) == [
            (1, "en"),
            (1, "fr"),
            (3, "fr"),
        ]
    with engine.connect() as conn:
        assert conn.execute(lookup_query(spec, spec.key, [])).all() == []
    from sqlalchemy.dialects import mysql, postgresql

    for dialect in (postgresql.dialect(), mysql.dialect()):
        text = str(stmt.compile(dialect=dialect))
        assert "IS NULL" in text and "IN" in text


def test_store_moves_records_through_pending_delete(db_url: str, tmp_path: Path) -> None:
    url = db_url if not db_url.startswith("sqlite") else f"sqlite:///{tmp_path / 's.sqlite'}"
    with StateStore(url) as store:
        store.upgrade()
        keys = [key_json((i,)) for i in range(1, 31)]
        store.commit_batch(
            "m", accepted=[Accepted(k, "h" + k) for k in keys], rejects=[], cursor=None
        )
        store.commit_batch("other", accepted=[Accepted(keys[0], "h")], rejects=[], cursor=None)
        assert store.move_records("m", keys[:10], "sent", "pending_delete") == 10
        # a record re-sent meanwhile (no longer pending) is left alone
        store.commit_batch("m", accepted=[Accepted(keys[0], "new")], rejects=[], cursor=None)
        pending = [k for k, _ in store.known_keys("m", None, 100, status="pending_delete")]
        assert pending == sorted(keys[1:10])
        assert store.move_records("m", keys[:3], "pending_delete", "deleted") == 2
        (st,) = store.status(["m"])
        assert (st.known_sent, st.known_pending, st.known_deleted) == (21, 7, 2)
        assert store.get_hashes("m", [keys[0], keys[1], keys[5]]) == {keys[0]: "new"}
        assert store.move_records("m", None, "pending_delete", "sent") == 7
        (st,) = store.status(["m"])
        assert (st.known_sent, st.known_pending, st.known_deleted) == (28, 0, 2)
        assert store.get_hashes("m", [keys[5]]) == {keys[5]: "h" + keys[5]}  # hash kept
        assert store.status(["other"])[0].known_sent == 1

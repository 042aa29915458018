"""The local ShopiMind sandbox, driven over real HTTP with httpx."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from connector import registry
from connector.sandbox import Sandbox
from connector.sandbox.store import Store, id_text, json_copy

KEY = "test-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdef"
TS = "2026-05-07T08:00:00.000Z"
TS2 = "2026-05-08T09:30:00.000Z"


def customer(cid: str | int = "c1", **kw: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "customer_id": cid,
        "email": f"{cid}@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "is_opt_in": True,
        "is_newsletter_subscribed": False,
        "lang": "fr",
        "is_active": True,
        "created_at": TS,
        "updated_at": TS,
    }
    item.update(kw)
    return item


def product(pid: int = 42, lang: str = "fr", **kw: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "product_id": pid,
        "lang": lang,
        "name": f"Product {pid} {lang}",
        "description": "A product",
        "link": f"https://shop.example/p/{pid}",
        "currency": "EUR",
        "price": 9.99,
        "quantity_remaining": 3,
        "is_active": True,
        "created_at": TS,
        "updated_at": TS,
    }
    item.update(kw)
    return item


def address(aid: int, cid: str) -> dict[str, Any]:
    return {
        "address_id": aid,
        "customer_id": cid,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "address_line_1": "1 rue de la Paix",
        "postal_code": "75002",
        "city": "Paris",
        "country": "FR",
        "is_active": True,
    }


def variation(pid: str, vid: int, lang: str) -> dict[str, Any]:
    return {
        "variation_id": vid,
        "product_id": pid,
        "name": f"Variation {vid}",
        "lang": lang,
        "link": f"https://shop.example/p/{pid}?v={vid}",
        "price": 12.5,
        "quantity_remaining": 1,
        "is_default": False,
    }


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(api_keys={KEY, OTHER_KEY}, requests_per_minute=600) as sandbox:
        yield sandbox


@pytest.fixture
def api(sb: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sb.url, headers={"spm-api-key": KEY}, timeout=5) as client:
        yield client


# --- authentication -----------------------------------------------------------------------------


def test_missing_and_wrong_key_are_401_and_store_nothing(sb: Sandbox) -> None:
    expected = {"statusCode": 401, "message": "Invalid or missing API key", "error": "Unauthorized"}
    with httpx.Client(base_url=sb.url) as client:
        r = client.post("/v1/customers", json=[customer()])
        assert (r.status_code, r.json()) == (401, expected)
        well_formed_but_unknown = "abcdefghij0123456789-xyz"
        r = client.post(
            "/v1/customers", json=[customer()], headers={"spm-api-key": well_formed_but_unknown}
        )
        assert (r.status_code, r.json()) == (401, expected)
    assert sb.records("customers") == {}
    assert [(x.status, x.api_key_ok) for x in sb.requests] == [(401, False), (401, False)]


def test_configured_keys_must_match_the_api_pattern() -> None:
    with pytest.raises(ValueError) as info:
        Sandbox(api_keys={"short"})
    assert "short" not in str(info.value)  # the key itself is never shown


# --- request-level 400s -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message_part"),
    [
        (json.dumps({"customer_id": "c1"}), "body must be an array"),
        ('[{"customer_id": ', "not valid JSON"),
        ("[]", "non-empty"),
        ("", "body must be an array"),
    ],
)
def test_bad_bodies_are_400(
    api: httpx.Client, sb: Sandbox, content: str, message_part: str
) -> None:
    r = api.post("/v1/customers", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["statusCode"] == 400
    assert message_part in r.json()["message"]
    assert sb.records("customers") == {}


def test_over_the_batch_limit_is_400_naming_the_limit(api: httpx.Client, sb: Sandbox) -> None:
    r = api.post("/v1/customers", json=[customer(f"c{i}") for i in range(51)])
    assert r.status_code == 400
    assert "50" in r.json()["message"]
    assert sb.records("customers") == {}
    # groups allow 100 per call: 51 is fine there
    groups = [
        {"group_id": f"g{i}", "lang": "fr", "name": "G", "created_at": TS, "updated_at": TS}
        for i in range(51)
    ]
    assert api.post("/v1/customers-groups", json=groups).status_code == 200
    assert len(sb.records("customers_groups")) == 51


# --- upsert -------------------------------------------------------------------------------------


def test_mixed_batch_reports_rejected_items_and_stores_only_valid(
    api: httpx.Client, sb: Sandbox
) -> None:
    bad_lang = customer("c2", lang="French")
    no_email = customer("c3")
    del no_email["email"]
    unknown_field = customer("c4", nickname="ada")
    batch = [customer("c1"), bad_lang, no_email, "not an object", unknown_field, customer("c5")]
    r = api.post("/v1/customers", json=batch)
    assert r.status_code == 200
    body = r.json()
    assert body["statusCode"] == 200
    assert (body["sent_count"], body["rejected_count"]) == (2, 4)
    rejected = {x["index"]: x for x in body["rejected_items"]}
    assert sorted(rejected) == [1, 2, 3, 4]
    assert rejected[1]["item"] == bad_lang
    assert any(e.startswith("lang: ") for e in rejected[1]["errors"])
    assert rejected[2]["errors"] == ["email: is required"]
    assert rejected[3]["item"] == "not an object"
    assert rejected[4]["errors"] == ["nickname: unknown field"]
    assert set(sb.records("customers")) == {"c1", "c5"}


def test_all_invalid_batch_is_400_with_the_envelope(api: httpx.Client, sb: Sandbox) -> None:
    r = api.post("/v1/customers", json=[{"customer_id": "x"}, customer("y", is_active="yes")])
    assert r.status_code == 400
    body = r.json()
    assert (body["statusCode"], body["sent_count"], body["rejected_count"]) == (400, 0, 2)
    assert [x["index"] for x in body["rejected_items"]] == [0, 1]
    assert sb.records("customers") == {}


def test_upsert_overwrites_by_key_comparing_ids_as_text(api: httpx.Client, sb: Sandbox) -> None:
    assert api.post("/v1/customers", json=[customer(5, first_name="Ada")]).status_code == 200
    assert api.post("/v1/customers", json=[customer("5", first_name="Grace")]).status_code == 200
    records = sb.records("customers")
    assert list(records) == ["5"]
    assert records["5"]["first_name"] == "Grace"


def test_data_source_fields_are_accepted_on_entities(api: httpx.Client, sb: Sandbox) -> None:
    r = api.post("/v1/customers", json=[customer(id_data_source=3, shop_id="main")])
    assert r.json()["sent_count"] == 1
    assert sb.records("customers")["c1"]["id_data_source"] == 3


def test_localized_resource_keeps_each_language(api: httpx.Client, sb: Sandbox) -> None:
    r = api.post("/v1/products", json=[product(42, "fr"), product(42, "en", name="Hat")])
    assert r.json()["sent_count"] == 2
    records = sb.records("products")
    assert set(records) == {"42|fr", "42|en"}
    assert records["42|en"]["name"] == "Hat"


def test_variation_with_unknown_product_is_accepted(api: httpx.Client, sb: Sandbox) -> None:
    r = api.post("/v1/products/variations/bulk", json=[variation("999", 1, "fr")])
    assert r.status_code == 200
    assert set(sb.records("products_variations")) == {"999|1|fr"}


# --- partial update (PUT) -----------------------------------------------------------------------


def test_put_merges_into_existing_and_rejects_unknown_keys(api: httpx.Client, sb: Sandbox) -> None:
    api.post("/v1/customers", json=[customer("c1")])
    r = api.put(
        "/v1/customers",
        json=[
            {"customer_id": "c1", "first_name": "Grace", "updated_at": TS2},
            {"customer_id": "nope", "first_name": "X"},
            {"first_name": "no key"},
        ],
    )
    body = r.json()
    assert r.status_code == 200
    assert (body["sent_count"], body["rejected_count"]) == (1, 2)
    assert [x["index"] for x in body["rejected_items"]] == [1, 2]
    assert "no stored record" in body["rejected_items"][0]["errors"][0]
    assert "customer_id: is required" in body["rejected_items"][1]["errors"]
    stored = sb.records("customers")
    assert set(stored) == {"c1"}
    assert stored["c1"]["first_name"] == "Grace"
    assert stored["c1"]["updated_at"] == TS2
    assert stored["c1"]["email"] == "c1@example.com"  # absent fields are kept


def test_put_null_clears_optional_but_not_required_fields(api: httpx.Client, sb: Sandbox) -> None:
    api.post("/v1/customers", json=[customer("c1", phone_number="+33100000000")])
    r = api.put(
        "/v1/customers",
        json=[{"customer_id": "c1", "phone_number": None}, {"customer_id": "c1", "email": None}],
    )
    body = r.json()
    assert (body["sent_count"], body["rejected_count"]) == (1, 1)
    assert body["rejected_items"][0]["errors"] == ["email: is required"]
    stored = sb.records("customers")["c1"]
    assert stored["phone_number"] is None
    assert stored["email"] == "c1@example.com"


def test_put_of_only_unknown_keys_is_400(api: httpx.Client, sb: Sandbox) -> None:
    r = api.put("/v1/products", json=[{"product_id": 1, "lang": "fr", "price": 2.0}])
    assert r.status_code == 400
    assert r.json()["rejected_count"] == 1
    assert sb.records("products") == {}


# --- bulk delete --------------------------------------------------------------------------------


def test_bulk_delete_is_idempotent_and_recorded(api: httpx.Client, sb: Sandbox) -> None:
    api.post("/v1/customers", json=[customer("c1"), customer("c2")])
    r = api.post("/v1/customers/bulk-delete", json={"customer_ids": ["c1", "never-seen"]})
    assert r.status_code == 200
    assert r.json() == {
        "statusCode": 200,
        "sent_count": 2,
        "rejected_count": 0,
        "rejected_items": [],
    }
    assert set(sb.records("customers")) == {"c2"}
    assert sb.deleted("customers") == {"c1", "never-seen"}
    # replaying the same delete is harmless
    r = api.post("/v1/customers/bulk-delete", json={"customer_ids": ["c1"]})
    assert r.status_code == 200
    assert set(sb.records("customers")) == {"c2"}


def test_bulk_delete_over_20_ids_or_wrong_body_is_400(api: httpx.Client, sb: Sandbox) -> None:
    api.post("/v1/customers", json=[customer("c1")])
    r = api.post("/v1/customers/bulk-delete", json={"customer_ids": [f"c{i}" for i in range(21)]})
    assert r.status_code == 400
    assert "20" in r.json()["message"]
    assert api.post("/v1/customers/bulk-delete", json=["c1"]).status_code == 400
    assert api.post("/v1/customers/bulk-delete", json={"ids": ["c1"]}).status_code == 400
    assert api.post("/v1/customers/bulk-delete", json={"customer_ids": []}).status_code == 400
    assert set(sb.records("customers")) == {"c1"}
    assert sb.deleted("customers") == set()


def test_localized_delete_removes_every_language(api: httpx.Client, sb: Sandbox) -> None:
    api.post("/v1/products", json=[product(42, "fr"), product(42, "en"), product(43, "fr")])
    r = api.post("/v1/products/bulk-delete", json={"product_ids": [42]})
    assert r.json()["sent_count"] == 1
    assert set(sb.records("products")) == {"43|fr"}
    assert sb.deleted("products") == {"42"}


def test_nested_address_delete_matches_the_parent_customer(api: httpx.Client, sb: Sandbox) -> None:
    api.post("/v1/customers/addresses/bulk", json=[address(7, "c1"), address(8, "c2")])
    # address 7 belongs to c1, so deleting it under c2 leaves it in place
    r = api.post("/v1/customers/c2/addresses/bulk-delete", json={"address_ids": [7, 8]})
    assert r.status_code == 200
    assert set(sb.records("customers_addresses")) == {"7"}
    r = api.post("/v1/customers/c1/addresses/bulk-delete", json={"address_ids": ["7"]})
    assert r.status_code == 200
    assert sb.records("customers_addresses") == {}


def test_nested_variation_delete_spans_languages_of_one_product(
    api: httpx.Client, sb: Sandbox
) -> None:
    items = [variation("42", 3, "fr"), variation("42", 3, "en"), variation("43", 3, "fr")]
    api.post("/v1/products/variations/bulk", json=items)
    r = api.post("/v1/products/42/variations/bulk-delete", json={"variation_ids": [3]})
    assert r.status_code == 200
    assert set(sb.records("products_variations")) == {"43|3|fr"}
    assert sb.deleted("products_variations") == {"42|3"}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bulk_delete_by_index_removes_what_a_scan_would(seed: int) -> None:
    """The store finds a bulk delete's records through its id index: random upserts, updates,
    deletes (with and without a parent) and resets leave the same records as a full scan."""
    rng = random.Random(seed)
    store = Store()
    res = {n: registry.RESOURCES[n] for n in ("products", "customers_addresses", "customers")}

    def scan(name: str, ids: set[str], parent: dict[str, str]) -> set[str]:
        field_ = res[name].delete_id_field
        assert field_ is not None
        return {
            k
            for k, item in store.records(name).items()
            if id_text(item.get(field_)) in ids
            and all(id_text(item.get(f)) == v for f, v in parent.items())
        }

    for step in range(600):
        name = rng.choice(list(res))
        n = rng.randint(1, 12)
        if step % 250 == 249:
            store.reset()
        elif rng.random() < 0.6:
            if name == "products":
                items = [product(n, rng.choice(["fr", "en"]))]
            elif name == "customers_addresses":
                items = [address(n, rng.choice(["c1", "c2"]))]
            else:
                items = [customer(rng.choice([n, str(n)]))]  # 7 and "7" are one id
            store.upsert(res[name], items)  # type: ignore[arg-type]
        elif rng.random() < 0.2:
            store.update(res["customers"], [{"customer_id": str(n), "first_name": "B"}])
        else:
            ids = {str(rng.randint(1, 12)) for _ in range(rng.randint(1, 4))}
            parent = (
                {"customer_id": rng.choice(["c1", "c2"])} if name == "customers_addresses" else {}
            )
            before = set(store.records(name))
            gone = scan(name, ids, parent)
            store.delete(res[name], ids, parent)
            assert set(store.records(name)) == before - gone


def test_stored_items_are_copies() -> None:
    """The store keeps its own copy of an item (``json_copy``): changing the caller's item
    afterwards, nested parts included, changes nothing stored."""
    item = customer("c9", tags=["a", {"b": [1, 2.5, None, True]}])
    copied = json_copy(item)
    assert copied == item and copied is not item
    assert copied["tags"][1] is not item["tags"][1]
    odd = {"t": (1, [2])}  # not JSON: deep-copied the generic way
    assert json_copy(odd) == odd and json_copy(odd)["t"][1] is not odd["t"][1]
    store = Store()
    item = customer("c9")
    store.upsert(registry.RESOURCES["customers"], [item])
    item["email"] = "changed@example.com"
    assert store.records("customers")["c9"]["email"] == "c9@example.com"


def test_many_connections_opened_at_once_are_all_served() -> None:
    """A backfill opens tens of connections at once (many requests in flight): none may be
    reset for want of room in the listen queue (it held 5 connections, and some were reset)."""
    with Sandbox(api_keys={KEY}, requests_per_minute=60000) as sandbox:
        sandbox.inject_delay(0.2)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        with (
            httpx.Client(base_url=sandbox.url, headers={"spm-api-key": KEY}, limits=limits) as c,
            ThreadPoolExecutor(100) as pool,
        ):
            ready = threading.Barrier(100)

            def post(i: int) -> str:
                ready.wait()
                try:
                    return str(c.post("/v1/customers", json=[customer(i)]).status_code)
                except httpx.TransportError as exc:
                    return type(exc).__name__

            answers = list(pool.map(post, range(100)))
    assert answers == ["200"] * 100


# --- rate limit ---------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after() -> None:
    with (
        Sandbox(api_keys={KEY, OTHER_KEY}, requests_per_minute=5) as sb,
        httpx.Client(base_url=sb.url, headers={"spm-api-key": KEY}) as client,
    ):
        statuses = [client.post("/v1/customers", json=[customer()]).status_code for _ in range(5)]
        assert statuses == [200] * 5
        assert client.get("/_sandbox/stats").status_code == 200  # control: not counted
        r = client.post("/v1/customers", json=[customer("late")])
        assert r.status_code == 429
        assert r.json()["statusCode"] == 429
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert "late" not in sb.records("customers")
        # the window is per key
        other = client.post(
            "/v1/customers", json=[customer("c9")], headers={"spm-api-key": OTHER_KEY}
        )
        assert other.status_code == 200


def test_rate_limit_slot_frees_after_the_window() -> None:
    with (
        Sandbox(api_keys={KEY}, requests_per_minute=2, rate_window=0.4) as sb,
        httpx.Client(base_url=sb.url, headers={"spm-api-key": KEY}) as client,
    ):
        codes = [client.post("/v1/customers", json=[customer()]).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        time.sleep(0.45)
        assert client.post("/v1/customers", json=[customer()]).status_code == 200


# --- faults -------------------------------------------------------------------------------------


def test_injected_503_twice_then_success(api: httpx.Client, sb: Sandbox) -> None:
    sb.inject(status=503, count=2)
    codes = [api.post("/v1/customers", json=[customer(f"c{i}")]).status_code for i in range(3)]
    assert codes == [503, 503, 200]
    assert set(sb.records("customers")) == {"c2"}  # faulted requests stored nothing


def test_injected_429_carries_retry_after_and_respects_prefix(
    api: httpx.Client, sb: Sandbox
) -> None:
    sb.inject(status=429, count=1, path_prefix="/v1/products", retry_after=7)
    assert api.post("/v1/customers", json=[customer()]).status_code == 200
    r = api.post("/v1/products", json=[product()])
    assert (r.status_code, r.headers["Retry-After"]) == (429, "7")
    assert api.post("/v1/products", json=[product()]).status_code == 200


def test_clear_faults_cancels_pending_faults(api: httpx.Client, sb: Sandbox) -> None:
    sb.inject(status=500, count=5)
    assert api.post("/v1/customers", json=[customer()]).status_code == 500
    sb.clear_faults()
    assert api.post("/v1/customers", json=[customer()]).status_code == 200


def test_delay_is_measurable_and_applies_after_storing(api: httpx.Client, sb: Sandbox) -> None:
    sb.inject_delay(0.3, count=2)
    started = time.monotonic()
    assert api.post("/v1/customers", json=[customer("c1")]).status_code == 200
    assert time.monotonic() - started >= 0.3
    # an answer lost to a client timeout: the batch was accepted anyway
    with pytest.raises(httpx.ReadTimeout):
        api.post("/v1/customers", json=[customer("c2")], timeout=0.1)
    assert "c2" in sb.records("customers")
    started = time.monotonic()
    assert api.post("/v1/customers", json=[customer("c3")]).status_code == 200
    assert time.monotonic() - started < 0.25  # count exhausted


# --- contacts -----------------------------------------------------------------------------------


def test_contact_lookup_by_customer_id_and_email(api: httpx.Client) -> None:
    api.post("/v1/customers", json=[customer("c1", email="Ada@Example.com", is_opt_in=False)])
    r = api.get("/v1/contacts", params={"id_customer_shop": "c1"})
    assert r.status_code == 200
    data = r.json()["data"]
    assert data == {
        "id_customer_shop": "c1",
        "contact_data_email": "Ada@Example.com",
        "contact_first_name": "Ada",
        "contact_last_name": "Lovelace",
        "contact_lang": "fr",
        "optin_data_email": False,
        "created_at": TS,
        "updated_at": TS,
    }
    r = api.get("/v1/contacts", params={"contact_data_email": "ada@example.COM"})
    assert r.json()["data"]["id_customer_shop"] == "c1"
    r = api.get("/v1/contacts", params={"id_customer_shop": "nobody"})
    assert (r.status_code, r.json()) == (404, {"statusCode": 404, "message": "Contact not found"})
    assert api.get("/v1/contacts").status_code == 400


# --- routing, log, control API ------------------------------------------------------------------


def test_unknown_routes_are_404_json(api: httpx.Client) -> None:
    for method, path in [("GET", "/v1/nothing"), ("DELETE", "/v1/customers"), ("GET", "/")]:
        r = api.request(method, path)
        assert r.status_code == 404
        assert r.json()["statusCode"] == 404


def test_request_log_records_counts_and_idempotency_keys(api: httpx.Client, sb: Sandbox) -> None:
    api.post(
        "/v1/customers", json=[customer("a"), customer("b")], headers={"Idempotency-Key": "k-1"}
    )
    api.post("/v1/customers/bulk-delete", json={"customer_ids": ["a", "b", "c"]})
    logs = sb.requests
    assert [(x.method, x.path, x.status, x.item_count) for x in logs] == [
        ("POST", "/v1/customers", 200, 2),
        ("POST", "/v1/customers/bulk-delete", 200, 3),
    ]
    assert logs[0].idempotency_key == "k-1"
    assert logs[1].idempotency_key is None
    assert all(x.api_key_ok and x.resource == "customers" for x in logs)


def test_control_api(api: httpx.Client, sb: Sandbox) -> None:
    ctl = httpx.Client(base_url=sb.url)  # no API key needed
    api.post("/v1/products", json=[product(42, "fr"), product(43, "fr")])
    api.post("/v1/products/bulk-delete", json={"product_ids": [43]})
    assert set(ctl.get("/_sandbox/records/products").json()) == {"42|fr"}
    assert ctl.get("/_sandbox/deleted/products").json() == ["43"]
    assert ctl.get("/_sandbox/records/nope").status_code == 404
    logs = ctl.get("/_sandbox/requests").json()
    assert [x["path"] for x in logs] == ["/v1/products", "/v1/products/bulk-delete"]
    stats = ctl.get("/_sandbox/stats").json()
    assert stats["by_status"] == {"200": 2}
    assert stats["by_resource"] == {"products": 2}
    assert stats["records"] == {"products": 1}

    assert ctl.post("/_sandbox/faults", json={"status": 502, "count": 1}).status_code == 200
    assert api.post("/v1/products", json=[product()]).status_code == 502
    assert ctl.post("/_sandbox/faults", json={"delay": 0.2}).status_code == 200
    started = time.monotonic()
    api.post("/v1/products", json=[product()])
    assert time.monotonic() - started >= 0.2
    assert ctl.post("/_sandbox/faults", json={"clear": True}).status_code == 200
    started = time.monotonic()
    api.post("/v1/products", json=[product()])
    assert time.monotonic() - started < 0.2
    assert ctl.post("/_sandbox/faults", json={"bogus": 1}).status_code == 400

    assert ctl.post("/_sandbox/reset").status_code == 200
    assert sb.records("products") == {}
    assert sb.deleted("products") == set()
    assert ctl.get("/_sandbox/requests").json() == []
    ctl.close()


def test_python_reset_clears_state_and_faults(api: httpx.Client, sb: Sandbox) -> None:
    api.post("/v1/customers", json=[customer()])
    sb.inject(status=503, count=3)
    sb.reset()
    assert sb.records("customers") == {}
    assert sb.requests == []
    assert api.post("/v1/customers", json=[customer()]).status_code == 200
    with pytest.raises(KeyError):
        sb.records("no_such_resource")


def test_serve_runs_in_the_foreground_until_sigterm() -> None:
    code = f"from connector.sandbox import serve;serve('127.0.0.1', 0, {{'{KEY}'}}, 600)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert KEY not in line
        url = next(w for w in line.split() if w.startswith("http://"))
        r = httpx.post(f"{url}/v1/customers", json=[customer()], headers={"spm-api-key": KEY})
        assert r.status_code == 200
        assert httpx.get(f"{url}/_sandbox/records/customers").json().keys() == {"c1"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_applied_fault_stores_then_answers_the_fault(api: httpx.Client, sb: Sandbox) -> None:
    # through the control route: the request is processed, its answer replaced by the status
    assert api.post(
        "/_sandbox/faults", json={"status": 503, "count": 1, "applied": True}
    ).json() == {"ok": True}
    assert api.post("/v1/customers", json=[customer()]).status_code == 503
    assert len(sb.records("customers")) == 1  # stored all the same
    # a refused request keeps its own answer (nothing was applied to lose)
    sb.inject(503, count=1, applied=True)
    assert api.post("/v1/customers", json={"not": "an array"}).status_code == 400


def test_custom_data_records_listed_and_bulk_deleted_by_id(api: httpx.Client) -> None:
    body = {
        "name": "points",
        "unique_keys": ["k"],
        "fields": [{"name": "k", "label": "K", "type": "text", "required": True}],
    }
    ident = api.post("/v1/custom-data-definitions", json=body).json()["data"]["id_definition"]
    path = f"/v1/custom-data-records/{ident}"
    assert api.post(path, json=[{"k": "a"}, {"k": "b"}, {"k": "c"}]).status_code == 200
    listed = api.get(path, params={"limit": 100}).json()["data"]
    by_key = {r["k"]: r["id"] for r in listed}
    answer = api.post(f"{path}/bulk-delete", json=[by_key["a"], by_key["c"], 999_999])
    assert answer.status_code == 200  # an unknown id is skipped
    assert [r["k"] for r in api.get(path).json()["data"]] == ["b"]
    assert api.post(f"{path}/bulk-delete", json=list(range(21))).status_code == 400
    assert api.post(f"{path}/bulk-delete", json={"ids": [1]}).status_code == 400

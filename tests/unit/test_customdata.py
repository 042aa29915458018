"""Custom data: mapping files, the definition diff, provisioning and the sandbox's rules."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa

from connector.customdata import DefinitionConflictError, Provisioner, compare, same_name
from connector.demo import shop
from connector.destination.budget import Budget
from connector.destination.client import ApiClient, RetryPolicy
from connector.errors import DeliveryError, MappingError
from connector.mapping import CompiledMapping, Mapping, load_mapping_file, load_mappings
from connector.sandbox import Sandbox
from connector.source.reader import ShopReader
from connector.state.model import Accepted, Cursor
from connector.state.store import StateStore

KEY = "test-key-0123456789abcdef"
EXAMPLES = Path(__file__).resolve().parents[2] / "mappings"
PARIS = ZoneInfo("Europe/Paris")

LOYALTY = """
kind = "custom_data"
[definition]
name = "loyalty"
description = "Loyalty points"
unique_keys = ["customer_id"]
fields = [
    { name = "customer_id", type = "text", required = true },
    { name = "points", type = "number", required = true },
    { name = "tier", type = "list", options = ["bronze", "silver", "gold"] },
    { name = "since", type = "date" },
]
relationships = [ { field = "customer_id", to = "contacts", by = "id_customer" } ]
[source]
table = "loyalty_accounts"
key = "customer_id"
cursor = "updated_at"
[fields]
customer_id = "customer_id"
points = "points"
tier = { column = "tier", convert = "lower" }
since = "since"
"""


def write(tmp_path: Path, text: str, name: str = "loyalty") -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def problems(tmp_path: Path) -> list[str]:
    with pytest.raises(MappingError) as info:
        load_mappings(tmp_path)
    return [str(p) for p in info.value.problems]


def test_example_mapping_fits_the_demo_shop(tmp_path: Path) -> None:
    engine = sa.create_engine(shop.shop_url_sqlite(tmp_path / "shop.sqlite"))
    shop.create_schema(engine)
    shop.populate(engine, scale=0.1)
    m = load_mapping_file(EXAMPLES / "loyalty_points.toml")
    with ShopReader(engine.url) as reader:
        assert [str(p) for p in reader.check(m) if not p.warning] == []
        rows = reader.fetch(sa.text("SELECT * FROM loyalty_accounts"))
    engine.dispose()
    compiled = CompiledMapping(m, PARIS)
    built = [compiled.build(r) for r in rows]
    assert rows and [b.problems for b in built if b.item is None] == []


# --- mapping files -------------------------------------------------------------------------------


def test_custom_data_mapping_loads_as_a_resource_of_20(tmp_path: Path) -> None:
    m = load_mapping_file(write(tmp_path, LOYALTY))
    assert m.kind == "custom_data" and m.definition is not None
    res = m.resource
    assert (res.kind, res.batch_limit, res.key) == ("custom_data", 20, ("customer_id",))
    assert res.path == "/v1/custom-data-records/{id_definition}"
    assert not res.accepts_data_source and not res.can_delete
    assert m.definition.api()["relationships"] == [
        {"sourceField": "customer_id", "targetSchemaType": "system", "targetSchema": "contacts"}
    ]
    assert m.definition.api()["fields"][2] == {
        "name": "tier",
        "label": "tier",
        "type": "list",
        "required": False,
        "options": ["bronze", "silver", "gold"],
    }


def test_records_carry_the_contact_resolver(tmp_path: Path) -> None:
    m = load_mapping_file(write(tmp_path, LOYALTY))
    c = CompiledMapping(m, PARIS, id_data_source=7)  # never added to custom records
    row = {"customer_id": 42, "points": "120", "tier": "Gold", "since": "2026-05-01"}
    built = c.build(row)
    assert built.item == {
        "customer_id": {"by": "id_customer", "value": "42"},
        "points": 120,
        "tier": "gold",
        "since": "2026-05-01",
    }
    bad = c.build({**row, "tier": "platinum", "customer_id": None})
    assert bad.item is None
    text = " | ".join(bad.problems)
    assert "fields.customer_id" in text and "NULL" in text
    assert "fields.tier" in text and "'platinum' is not one of bronze, silver, gold" in text


def test_every_definition_problem_reported_at_once(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        kind = "custom_data"
        colour = "blue"
        [definition]
        name = "loyalty"
        unique_keys = ["customer_id", "nope"]
        fields = [
            { name = "customer_id", type = "text" },
            { name = "points", type = "integer", required = true },
            { name = "tier", type = "list" },
            { name = "note", type = "text", options = ["a"] },
            { name = "note", type = "text" },
        ]
        relationships = [
            { field = "ghost", to = "contacts", by = "id_customer" },
            { field = "customer_id", to = "contacts", by = "phone" },
            { field = "note", to = "orders" },
        ]
        [source]
        table = "loyalty_accounts"
        key = "customer_id"
        cursor = "updated_at"
        deleted = { column = "deleted_at" }
        [fields]
        customer_id = "customer_id"
        points = "points"
        bogus = "x"
        """,
    )
    got = "\n".join(problems(tmp_path))
    for expected in (
        "loyalty.toml: colour: unknown key",
        "definition.fields[1].type: 'integer' is not a type; types: bool, text",
        "definition.fields[2].options: a list field needs options",
        "definition.fields[3].options: only a field of type 'list' has options",
        "definition.fields[4].name: field 'note' is declared twice",
        "definition.unique_keys: field 'customer_id' is a unique key: mark it required",
        "definition.unique_keys: 'nope' is not a declared field",
        "definition.relationships[0].field: 'ghost' is not a declared field",
        "definition.relationships[1].by: 'phone': say how the value finds the contact",
        "definition.relationships[2].to: 'orders' is not a target",
        "source.deleted: custom data has no soft delete",
    ):
        assert expected in got, expected


def test_fields_must_match_the_definition(tmp_path: Path) -> None:
    text = LOYALTY.replace('points = "points"\n', 'bogus = "x"\n')
    write(tmp_path, text)
    got = "\n".join(problems(tmp_path))
    assert "fields.bogus: unknown API field 'bogus'" in got
    assert "fields: required field 'points' of the definition is not mapped" in got


def test_unique_keys_are_required(tmp_path: Path) -> None:
    write(tmp_path, LOYALTY.replace('unique_keys = ["customer_id"]\n', ""))
    assert any("add a new record each time a row changes" in p for p in problems(tmp_path))


def test_kind_values(tmp_path: Path) -> None:
    orders = "resource = 'orders_carriers'\n[source]\ntable='carriers'\nkey='id'\ncursor='u'\n"
    fields = (
        "[fields]\ncarrier_id='id'\nname='name'\nis_active='a'\ncreated_at='c'\nupdated_at='u'\n"
    )
    write(tmp_path, "kind = 'resource'\n" + orders + fields, "carriers")
    assert load_mapping_file(tmp_path / "carriers.toml").kind == "resource"
    write(tmp_path, "kind = 'table'\n" + orders + fields, "carriers")
    assert problems(tmp_path) == [
        "carriers.toml: kind: unknown kind 'table'; expected 'resource' (the default), "
        "'custom_data' or 'event'"
    ]


# --- the definition diff -------------------------------------------------------------------------


def declared(tmp_path: Path, text: str = LOYALTY) -> Mapping:
    return load_mapping_file(write(tmp_path, text))


def remote_of(m: Mapping) -> dict[str, Any]:
    assert m.definition is not None
    return {"id_definition": 3, "status": "active", **m.definition.api()}


def test_compare_same_added_and_changed(tmp_path: Path) -> None:
    m = declared(tmp_path)
    assert m.definition is not None
    remote = remote_of(m)
    same = compare(m.definition, remote)
    assert not same.problems and not same.extends
    trimmed = {**remote, "fields": remote["fields"][:2], "relationships": []}
    grown = compare(m.definition, trimmed)
    assert [f.name for f in grown.new_fields] == ["tier", "since"]
    assert [r.field for r in grown.new_relationships] == ["customer_id"]
    assert not grown.problems
    changed = {
        **remote,
        "fields": [
            {**remote["fields"][1], "type": "text"},
            *remote["fields"][:1],
            *remote["fields"][2:],
            {"name": "legacy", "type": "text", "required": True, "label": "x"},
        ],
        "relationships": [
            {"sourceField": "customer_id", "targetSchemaType": "system", "targetSchema": "products"}
        ],
        "unique_keys": ["points"],
    }
    diff = compare(m.definition, changed)
    text = " | ".join(diff.problems)
    assert "field 'points' is of type 'text' on ShopiMind but 'number' in the mapping" in text
    assert "field 'customer_id' relates to products.product_id on ShopiMind" in text
    assert "unique_keys are ['points'] on ShopiMind but ['customer_id']" in text
    assert "ShopiMind requires field 'legacy'" in text
    relabelled = {
        **remote,
        "fields": [{**remote["fields"][0], "label": "Client"}, *remote["fields"][1:]],
    }
    assert (
        compare(m.definition, relabelled).notes and not compare(m.definition, relabelled).problems
    )


def test_names_compare_without_case_or_accents() -> None:
    assert same_name("Fidélité", "fidelite") and same_name(" LOYALTY", "loyalty")
    assert not same_name("loyalty", "loyalty2")


# --- provisioning against the sandbox ------------------------------------------------------------


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(api_keys={KEY}, requests_per_minute=100_000) as sb:
        yield sb


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[ApiClient]:
    with ApiClient(sandbox.url, KEY, budget=Budget(100_000), retry=RetryPolicy(1, 0.01, 0.01)) as c:
        yield c


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}") as s:
        s.upgrade()
        yield s


def writes(sandbox: Sandbox, since: int) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in sandbox.requests[since:] if r.method != "GET"]


def test_provisioning_is_idempotent_extends_and_refuses(
    tmp_path: Path, sandbox: Sandbox, client: ApiClient, store: StateStore
) -> None:
    small = LOYALTY.replace('    { name = "since", type = "date" },\n', "").replace(
        'since = "since"\n', ""
    )
    ident = Provisioner(client, store, declared(tmp_path, small)).ensure()
    state = sandbox.context.custom
    assert [f["name"] for f in state.definitions[int(ident)]["fields"]] == [
        "customer_id",
        "points",
        "tier",
    ]
    n = len(sandbox.requests)
    assert Provisioner(client, store, declared(tmp_path, small)).ensure() == ident
    assert [(r.method, r.path) for r in sandbox.requests[n:]] == [
        ("GET", f"/v1/custom-data-definitions/{ident}")
    ]
    store.set_cursor("loyalty", Cursor("2026-05-07 10:00:00", ()))
    n = len(sandbox.requests)
    assert Provisioner(client, store, declared(tmp_path)).ensure() == ident
    assert writes(sandbox, n) == [("PATCH", f"/v1/custom-data-definitions/{ident}/extend")]
    # the cursor stays: the definition is part of the mapping's fingerprint, whose change makes
    # the next pass re-read every row (tests/e2e/test_remap.py)
    assert store.get_cursor("loyalty") == Cursor("2026-05-07 10:00:00", ())
    assert [f["name"] for f in state.definitions[int(ident)]["fields"]][-1] == "since"
    n = len(sandbox.requests)
    retyped = LOYALTY.replace('name = "points", type = "number"', 'name = "points", type = "text"')
    with pytest.raises(DefinitionConflictError) as info:
        Provisioner(client, store, declared(tmp_path, retyped)).ensure()
    message = str(info.value)
    assert "field 'points' is of type 'number' on ShopiMind but 'text' in the mapping" in message
    assert "nothing was changed" in message and "new name (definition.name)" in message
    assert writes(sandbox, n) == []
    assert state.definitions[int(ident)]["fields"][1]["type"] == "number"


def test_found_by_name_across_pages_then_recreated_when_deleted(
    tmp_path: Path, sandbox: Sandbox, client: ApiClient, store: StateStore
) -> None:
    for i in range(120):
        r = client.request(
            "POST",
            "/v1/custom-data-definitions",
            {"name": f"other {i}", "fields": [], "unique_keys": []},
        )
        assert r.status_code == 201
    m = declared(tmp_path)
    assert m.definition is not None
    body = {**m.definition.api(), "name": "LOYALTÉ"}
    made = client.request("POST", "/v1/custom-data-definitions", body).json()["data"]
    m = declared(tmp_path, LOYALTY.replace('name = "loyalty"', 'name = "Loyalte"'))
    store.commit_batch(m.name, accepted=[Accepted('["42"]', "h")], rejects=[], cursor=None)
    n = len(sandbox.requests)
    ident = Provisioner(client, store, m).ensure()
    assert ident == str(made["id_definition"]) == "121"
    offsets = [r.path for r in sandbox.requests[n:] if r.method == "GET"]
    assert offsets.count("/v1/custom-data-definitions") == 2  # found on the second page of 100
    assert writes(sandbox, n) == []
    assert store.get_hashes(m.name, ['["42"]']) == {}  # a definition of its own: push every row
    store.commit_batch(m.name, accepted=[Accepted('["42"]', "h")], rejects=[], cursor=None)
    assert client.request("DELETE", f"/v1/custom-data-definitions/{ident}").status_code == 200
    again = Provisioner(client, store, m).ensure()
    assert again != ident
    assert sandbox.context.custom.definitions[int(again)]["status"] == "active"
    assert store.get_hashes(m.name, ['["42"]']) == {}


def test_an_inactive_definition_is_reported(
    tmp_path: Path, sandbox: Sandbox, client: ApiClient, store: StateStore
) -> None:
    ident = Provisioner(client, store, declared(tmp_path)).ensure()
    path = f"/v1/custom-data-definitions/{ident}"
    assert client.request("PATCH", path + "/deactivate").status_code == 200
    with pytest.raises(DefinitionConflictError, match=r"'inactive' on ShopiMind.*activate it"):
        Provisioner(client, store, declared(tmp_path)).ensure()


# --- the sandbox's rules -------------------------------------------------------------------------


def api(sandbox: Sandbox) -> httpx.Client:
    return httpx.Client(base_url=sandbox.url, headers={"spm-api-key": KEY})


def define(c: httpx.Client, name: str = "loyalty", **kw: Any) -> httpx.Response:
    body = {
        "name": name,
        "unique_keys": ["customer_id"],
        "fields": [
            {"name": "customer_id", "label": "C", "type": "text", "required": True},
            {"name": "points", "label": "P", "type": "number", "required": True},
            {"name": "tier", "label": "T", "type": "list", "required": False, "options": ["gold"]},
        ],
        "relationships": [
            {"sourceField": "customer_id", "targetSchemaType": "system", "targetSchema": "contacts"}
        ],
        **kw,
    }
    return c.post("/v1/custom-data-definitions", json=body)


def test_sandbox_definitions(sandbox: Sandbox) -> None:
    with api(sandbox) as c:
        made = define(c, "Fidélité")
        assert made.status_code == 201 and made.json()["data"]["status"] == "active"
        ident = made.json()["data"]["id_definition"]
        dup = define(c, "FIDELITE")
        assert dup.status_code == 400 and "already used" in dup.json()["message"]
        for i in range(12):
            assert define(c, f"d{i}").status_code == 201
        page = c.get("/v1/custom-data-definitions", params={"limit": 500}).json()
        assert len(page["data"]) == 10 and page["meta"]["pagination"]["has_next_page"] is True
        page = c.get("/v1/custom-data-definitions", params={"limit": 100, "offset": 10}).json()
        assert len(page["data"]) == 3 and page["meta"]["pagination"]["has_next_page"] is False
        one = f"/v1/custom-data-definitions/{ident}"
        assert c.patch(one + "/activate").status_code == 409
        bad = c.patch(
            one + "/extend",
            json={"fields": [{"name": "points", "label": "P", "type": "text", "required": False}]},
        )
        assert bad.status_code == 400 and "already exists" in bad.json()["message"]
        rel = {"sourceField": "customer_id", "targetSchemaType": "system", "targetSchema": "x"}
        assert c.patch(one + "/extend", json={"relationships": [rel]}).status_code == 400
        new = {"name": "since", "label": "S", "type": "date", "required": False}
        grown = c.patch(one + "/extend", json={"fields": [new]})
        assert grown.status_code == 200 and len(grown.json()["data"]["fields"]) == 4
        assert c.delete(one).status_code == 200
        assert c.get(one).status_code == 400
        listed = c.get("/v1/custom-data-definitions", params={"limit": 100}).json()["data"]
        assert any(d["id_definition"] == ident and d["status"] == "deleted" for d in listed)
        assert define(c, "fidélité").status_code == 201  # the name is free again


def test_sandbox_records(sandbox: Sandbox) -> None:
    with api(sandbox) as c:
        ident = define(c).json()["data"]["id_definition"]
        path = f"/v1/custom-data-records/{ident}"
        rec = {"customer_id": {"by": "id_customer", "value": "42"}, "points": 10}
        assert c.post(path, json=[rec]).json()["sent_count"] == 1
        assert c.post(path, json=[{**rec, "points": 11, "tier": "gold"}]).status_code == 200
        stored = sandbox.context.custom.records_of(ident)
        assert len(stored) == 1 and stored[0]["points"] == 11 and stored[0]["id"] == 1
        assert c.post(path, json=[rec] * 21).status_code == 400
        wrong = [
            {"customer_id": {"by": "phone", "value": "1"}, "points": 1},
            {"customer_id": "7", "points": "ten"},
            {"customer_id": "8", "points": 1, "tier": "silver", "extra": 1},
        ]
        answer = c.post(path, json=wrong).json()
        assert answer["rejected_count"] == 3
        assert "contact resolver" in answer["rejected_items"][0]["errors"][0]
        assert "points: is not a valid number" in answer["rejected_items"][1]["errors"][0]
        assert {"extra: unknown field", "tier: is not a valid list value: 'silver'"} == set(
            answer["rejected_items"][2]["errors"]
        )
        assert c.patch(f"/v1/custom-data-definitions/{ident}/deactivate").status_code == 200
        off = c.post(path, json=[rec]).json()
        assert off["rejected_count"] == 1 and "not active" in off["rejected_items"][0]["errors"][0]
        free = define(c, "log", unique_keys=[]).json()["data"]["id_definition"]
        for _ in range(2):
            c.post(f"/v1/custom-data-records/{free}", json=[rec])
        assert len(sandbox.context.custom.records_of(free)) == 2  # no unique keys: inserted


def test_extension_whose_answer_was_lost_is_success(
    tmp_path: Path, sandbox: Sandbox, client: ApiClient, store: StateStore
) -> None:
    small = LOYALTY.replace('    { name = "since", type = "date" },\n', "").replace(
        'since = "since"\n', ""
    )
    ident = Provisioner(client, store, declared(tmp_path, small)).ensure()
    path = f"/v1/custom-data-definitions/{ident}/extend"
    sandbox.inject(503, count=1, path_prefix=path, applied=True)  # applied, then 503
    n = len(sandbox.requests)
    assert Provisioner(client, store, declared(tmp_path)).ensure() == ident
    # the retry is refused ("already exists"): the definition is what we wanted, so it is fine
    patches = [(r.path, r.status) for r in sandbox.requests[n:] if r.method == "PATCH"]
    assert patches == [(path, 503), (path, 400)]
    fields = [f["name"] for f in sandbox.context.custom.definitions[int(ident)]["fields"]]
    assert fields.count("since") == 1
    # an "already exists" for a definition that is NOT what we wanted is still an error
    other = LOYALTY.replace(
        '    { name = "since", type = "date" },\n',
        '    { name = "since", type = "date" },\n    { name = "level", type = "number" },\n',
    ).replace('since = "since"\n', 'since = "since"\nlevel = "points"\n')
    sandbox.inject(400, count=1, path_prefix=path)
    with pytest.raises(DeliveryError, match="HTTP 400"):
        Provisioner(client, store, declared(tmp_path, other)).ensure()

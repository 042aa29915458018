"""Events: mapping files, the trigger call's outcome per delivery mode, the sandbox's rules."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa

from connector.demo import shop
from connector.destination.budget import Budget
from connector.destination.client import ApiClient, RetryPolicy
from connector.destination.firing import Firer, idempotency_key, strip_nulls
from connector.errors import AuthError, DeliveryError, MappingError
from connector.events import EventSync
from connector.mapping import CompiledMapping, load_mapping_file, load_mappings
from connector.sandbox import Sandbox
from connector.sandbox.custom import Trigger
from connector.source.reader import ShopReader
from connector.state.store import StateStore
from connector.sync import PassResult

KEY = "test-key-0123456789abcdef"
EXAMPLES = Path(__file__).resolve().parents[2] / "mappings"
PARIS = ZoneInfo("Europe/Paris")

PURCHASE = """
kind = "event"
delivery = "at-most-once"
[event]
code_name = "store_purchase"
name = { en = "In-store purchase", fr = "Achat en magasin" }
[event.properties]
metaData = [
    { name = "store", type = "text", required = true },
    { name = "amount", type = "decimal", required = true },
    { name = "at", type = "date" },
]
customData = [ { name = "note", type = "longtext" } ]
[source]
table = "store_purchases"
key = "id"
cursor = "created_at"
[contact]
email = { column = "email", convert = ["trim", "lower"] }
phone = "phone"
[metaData]
store = "store"
amount = "amount"
at = "purchased_at"
[customData]
note = "note"
"""


def write(tmp_path: Path, text: str, name: str = "purchase") -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def test_event_mapping_builds_the_trigger_body(tmp_path: Path) -> None:
    m = load_mapping_file(write(tmp_path, PURCHASE))
    assert m.kind == "event" and m.event is not None and m.event.delivery == "at-most-once"
    assert m.resource.path == "/v1/events/trigger/store_purchase"
    assert m.event.api() == {
        "name": {"en": "In-store purchase", "fr": "Achat en magasin"},
        "code_name": "store_purchase",
        "properties": {
            "metaData": [
                {"name": "store", "type": "text", "required": True},
                {"name": "amount", "type": "decimal", "required": True},
                {"name": "at", "type": "date", "required": False},
            ],
            "customData": [{"name": "note", "type": "longtext", "required": False}],
        },
    }
    c = CompiledMapping(m, PARIS)
    row = {
        "email": " Ada@Example.COM ",
        "phone": None,
        "store": "Lyon",
        "amount": "12.50",
        "purchased_at": "2026-05-07 10:00:00",
        "note": None,
    }
    built = c.build(row)
    assert built.item is not None
    assert strip_nulls(built.item) == {
        "contact": {"email": "ada@example.com"},
        "metaData": {"store": "Lyon", "amount": 12.5, "at": "2026-05-07T08:00:00.000Z"},
    }
    missing = c.build({**row, "store": None})
    assert missing.item is None and "metaData.store" in missing.problems[0]


def test_delivery_defaults_to_at_least_once(tmp_path: Path) -> None:
    m = load_mapping_file(write(tmp_path, PURCHASE.replace('delivery = "at-most-once"\n', "")))
    assert m.event is not None and m.event.delivery == "at-least-once"


def test_every_event_problem_reported_at_once(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        kind = "event"
        delivery = "exactly-once"
        [event]
        code_name = "store purchase"
        [event.properties]
        metaData = [ { name = "store", type = "datetime" }, { name = "n", type = "number" } ]
        visitorData = []
        [source]
        table = "store_purchases"
        key = "id"
        cursor = "created_at"
        deleted = { column = "deleted_at" }
        [metaData]
        store = "store"
        """,
    )
    with pytest.raises(MappingError) as info:
        load_mappings(tmp_path)
    got = "\n".join(str(p) for p in info.value.problems)
    for expected in (
        "purchase.toml: delivery: 'exactly-once': choose 'at-least-once'",
        "event.code_name: 'store purchase' is not a code name",
        "event.name: missing",
        "event.properties.metaData[0].type: 'datetime' is not a type",
        "event.properties.visitorData: unknown slot",
        "source.deleted: an event fires once for a new row and cannot be deleted",
        "contact: missing [contact] table",
    ):
        assert expected in got, expected


def test_required_property_must_be_mapped(tmp_path: Path) -> None:
    write(tmp_path, PURCHASE.replace('amount = "amount"\n', 'bogus = "x"\n'))
    with pytest.raises(MappingError) as info:
        load_mappings(tmp_path)
    got = "\n".join(str(p) for p in info.value.problems)
    assert "metaData.bogus: unknown API field 'bogus'" in got
    assert "metaData: required property 'amount' of the event is not mapped" in got


def test_idempotency_key_is_stable_per_row() -> None:
    a = idempotency_key("purchases", "store_purchase", "[1]")
    assert a == idempotency_key("purchases", "store_purchase", "[1]")
    assert a != idempotency_key("purchases", "store_purchase", "[2]")
    assert a != idempotency_key("other", "store_purchase", "[1]")
    assert a.startswith("evt-") and len(a) == 52 and a.replace("-", "").isalnum()


def test_example_mapping_fits_the_demo_shop(tmp_path: Path) -> None:
    engine = sa.create_engine(shop.shop_url_sqlite(tmp_path / "shop.sqlite"))
    shop.create_schema(engine)
    shop.populate(engine, scale=0.1)
    m = load_mapping_file(EXAMPLES / "store_purchase_event.toml")
    with ShopReader(engine.url) as reader:
        assert [str(p) for p in reader.check(m) if not p.warning] == []
        rows = reader.fetch(sa.text("SELECT * FROM store_purchases"))
    engine.dispose()
    compiled = CompiledMapping(m, PARIS)
    built = [compiled.build(r) for r in rows]
    assert rows and [b.problems for b in built if b.item is None] == []


# --- one trigger call: outcomes ------------------------------------------------------------------

Step = int | type[Exception]


def firer_with(steps: list[Step]) -> tuple[Firer, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = steps.pop(0)
        if isinstance(step, int):
            return httpx.Response(step, json={"statusCode": step, "message": "x"})
        raise step("boom", request=request)

    client = ApiClient(
        "https://api.example",
        KEY,
        budget=Budget(100_000),
        retry=RetryPolicy(2, 0.001, 0.001),
        transport=httpx.MockTransport(handler),
    )
    return Firer(client), seen


def fire(f: Firer, replay: bool) -> object:
    return f.fire(
        "/v1/events/trigger/x", {"contact": {"id": 1}}, "evt-1", replay_ambiguous=replay, what="t"
    )


@pytest.mark.parametrize(
    ("steps", "replay", "kind", "calls"),
    [
        ([200], False, "sent", 1),
        ([httpx.ReadTimeout, 200], True, "sent", 2),  # at-least-once: same key again
        ([httpx.ReadTimeout], False, "uncertain", 1),  # at-most-once: never replayed
        ([httpx.RemoteProtocolError], False, "uncertain", 1),  # reset after sending
        ([500], False, "uncertain", 1),
        ([502, 200], True, "sent", 2),
        ([httpx.ConnectError, 429, 200], False, "retried", 0),  # not sent / not processed
        ([503], False, "uncertain", 1),  # may be applied, then answered 503 by a gateway
        ([408], False, "uncertain", 1),
        ([503, 200], True, "sent", 2),
        ([400], True, "rejected", 1),
        ([409], False, "rejected", 1),
    ],
)
def test_outcomes(steps: list[Step], replay: bool, kind: str, calls: int) -> None:
    n = len(steps)
    f, seen = firer_with(list(steps))
    f.client.retry = RetryPolicy(5, 0.001, 0.001)
    out = f.fire(
        "/v1/events/trigger/x", {"contact": {"id": 1}}, "evt-1", replay_ambiguous=replay, what="t"
    )
    if kind == "retried":
        assert out.kind == "sent" and out.requests == n == len(seen)
    else:
        assert out.kind == kind and out.requests == calls == len(seen)
    assert {r.headers["Idempotency-Key"] for r in seen} == {"evt-1"}
    assert all(r.headers["spm-api-key"] == KEY for r in seen)


def test_retries_run_out() -> None:
    f, seen = firer_with([504, 504, 504])
    with pytest.raises(DeliveryError, match=r"gave up after 3 attempt.*same Idempotency-Key"):
        fire(f, True)
    assert len(seen) == 3
    f, seen = firer_with([429, 429, 429])
    with pytest.raises(DeliveryError, match="gave up after 3"):
        fire(f, False)  # at-most-once retries a call the API refused before processing
    f, _ = firer_with([401])
    with pytest.raises(AuthError):
        fire(f, True)


# --- the sandbox's event routes ------------------------------------------------------------------


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(api_keys={KEY}, requests_per_minute=100_000) as sb:
        yield sb


def test_sandbox_event_types_and_triggers(sandbox: Sandbox) -> None:
    seen: list[Trigger] = []
    hook: Callable[[Trigger], None] = seen.append
    sandbox.context.custom.on_trigger = hook
    props = {"metaData": [{"name": "store", "type": "text", "required": True}]}
    body = {"name": "In-store purchase", "code_name": "store_purchase", "properties": props}
    with httpx.Client(base_url=sandbox.url, headers={"spm-api-key": KEY}) as c:
        assert c.post("/v1/events", json=body).status_code == 201
        assert c.post("/v1/events", json=body).status_code == 409
        listed = c.get("/v1/events").json()
        assert [e["code_name"] for e in listed["data"]] == ["store_purchase"]
        url = "/v1/events/trigger/store_purchase"
        assert c.post("/v1/events/trigger/nope", json={}).status_code == 404
        cases = [
            ({"metaData": {"store": "Lyon"}}, "contact or visitor is required"),
            ({"contact": {"email": "a@b.c"}}, "metaData.store: is required"),
            ({"contact": {}, "metaData": {"store": "Lyon"}}, "contact: needs id, email or phone"),
            ({"contact": {"id": 1}, "metaData": {"store": 3}}, "metaData.store: is not a valid"),
            ({"contact": {"id": 1}, "metaData": {"store": "a", "x": 1}}, "metaData.x: not in"),
        ]
        for bad, message in cases:
            r = c.post(url, json=bad)
            assert r.status_code == 400 and message in r.json()["message"], bad
        good = {"contact": {"email": "a@b.c"}, "metaData": {"store": "Lyon"}}
        r = c.post(url, json=good, headers={"Idempotency-Key": "evt-9"})
        assert (r.status_code, r.json()) == (200, {"statusCode": 200})
        assert c.post(url, json={"visitor": {"id": 5}, "metaData": {"store": "Nice"}}).is_success
    assert [t.body for t in sandbox.context.custom.triggers_of("store_purchase")] == [
        good,
        {"visitor": {"id": 5}, "metaData": {"store": "Nice"}},
    ]
    assert [t.body for t in seen] == [t.body for t in sandbox.context.custom.triggers]
    logged = [r for r in sandbox.requests if r.path == url and r.status == 200]
    assert [r.idempotency_key for r in logged] == ["evt-9", None]


# --- the pass against a scripted API -------------------------------------------------------------


class FakeApi:
    """``POST /v1/events`` answers 201; each trigger takes the next scripted step (else 200)."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.triggers: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/events":
            return httpx.Response(201, json={"statusCode": 201, "data": {"id_event": 1}})
        self.triggers.append(request)
        step = self.steps.pop(0) if self.steps else 200
        if isinstance(step, int):
            return httpx.Response(step, json={"statusCode": step})
        raise step("boom", request=request)

    def purchase_ids(self) -> list[str]:
        return [json.loads(r.content)["metaData"]["purchase_id"] for r in self.triggers]


@pytest.fixture
def shop_db(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(shop.shop_url_sqlite(tmp_path / "shop.sqlite"))
    shop.create_schema(engine)
    shop.populate(engine, scale=0.05, now=datetime.now(PARIS).replace(tzinfo=None))
    yield engine
    engine.dispose()


def event_pass(
    tmp_path: Path, engine: sa.Engine, api: FakeApi, delivery: str
) -> Callable[[], PassResult]:
    text = (EXAMPLES / "store_purchase_event.toml").read_text(encoding="utf-8")
    path = write(tmp_path, text.replace('"at-least-once"', f'"{delivery}"'), "store_purchase_event")
    compiled = CompiledMapping(load_mapping_file(path), PARIS)
    store = StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    store.upgrade()
    reader = ShopReader(engine.url)
    client = ApiClient(
        "https://api.example",
        KEY,
        budget=Budget(100_000),
        retry=RetryPolicy(2, 0.001, 0.001),
        transport=httpx.MockTransport(api),
    )
    provisioned: dict[str, str] = {}

    def run() -> PassResult:
        sync = EventSync(
            compiled,
            reader=reader,
            client=client,
            store=store,
            shop_tz=PARIS,
            safety_lag=0.0,
            provisioned=provisioned,
        )
        return sync.run_pass()

    return run


def add(engine: sa.Engine, n: int, email: str | None = "x@example.com") -> list[str]:
    table = shop.metadata().tables["store_purchases"]
    now = datetime.now(PARIS).replace(tzinfo=None)
    with engine.begin() as conn:
        first = int(conn.scalar(sa.select(sa.func.max(table.c.id))) or 0) + 1
        conn.execute(
            table.insert(),
            [
                {
                    "id": first + k,
                    "customer_id": None,
                    "email": email or "",
                    "store": "Nice",
                    "amount": 10 + k,
                    "purchased_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for k in range(n)
            ],
        )
    return [str(first + k) for k in range(n)]


def test_at_most_once_records_an_unknown_outcome_and_goes_on(
    tmp_path: Path, shop_db: sa.Engine
) -> None:
    api = FakeApi()
    run = event_pass(tmp_path, shop_db, api, "at-most-once")
    assert run().outcome == "ok" and api.triggers == []  # the first start: history stays quiet
    time.sleep(0.01)
    ids = add(shop_db, 3)
    api.steps = [200, httpx.ReadTimeout]
    res = run()
    assert res.outcome == "failed" and "recorded as uncertain" in (res.message or "")
    assert api.purchase_ids() == ids[:2]
    assert run().outcome == "ok" and api.purchase_ids() == ids  # goes on after the uncertain row
    assert run().outcome == "ok" and api.purchase_ids() == ids  # nothing fires twice
    with StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}") as store:
        (uncertain,) = store.list_rejects("store_purchase_event")
    assert (uncertain.key, uncertain.source) == (f"[{ids[1]}]", "uncertain")


def test_at_least_once_retries_with_the_same_key(tmp_path: Path, shop_db: sa.Engine) -> None:
    api = FakeApi()
    run = event_pass(tmp_path, shop_db, api, "at-least-once")
    run()
    time.sleep(0.01)
    ids = add(shop_db, 2)
    api.steps = [httpx.ReadTimeout, 504, 504]  # 1st row: a lost answer, then 504 until give-up
    res = run()
    assert res.outcome == "failed" and "same Idempotency-Key" in (res.message or "")
    keys = [r.headers["Idempotency-Key"] for r in api.triggers]
    assert len(set(keys)) == 1 and len(keys) == 3  # max_retries = 2
    assert run().outcome == "ok"
    assert api.purchase_ids()[3:] == ids  # the next pass fires it again, with the same key
    assert api.triggers[3].headers["Idempotency-Key"] == keys[0]


def test_refused_rows_are_not_fired_again(tmp_path: Path, shop_db: sa.Engine) -> None:
    api = FakeApi()
    run = event_pass(tmp_path, shop_db, api, "at-least-once")
    run()
    time.sleep(0.01)
    refused, fine = add(shop_db, 2)
    (no_email,) = add(shop_db, 1, email=None)
    api.steps = [400]
    res = run()
    assert res.outcome == "ok" and res.counts.rejected == 2  # ShopiMind's 400 + the empty email
    assert api.purchase_ids() == [refused, fine]
    run()  # the rows are still in the lookback window: not fired again
    assert api.purchase_ids() == [refused, fine]
    with StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}") as store:
        sources = {r.key: r.source for r in store.list_rejects("store_purchase_event")}
    assert sources == {f"[{refused}]": "api", f"[{no_email}]": "local"}

"""Custom data and external events end to end: demo shop → mappings → sandbox over HTTP.

Runs on SQLite always and on PostgreSQL / MariaDB when their URLs are configured. The kill tests
run ``shopimind-connector sync`` as a child process that the sandbox SIGKILLs while it answers a
trigger: the event was received, the connector never learns it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from connector.demo import shop
from connector.sandbox.custom import Trigger
from tests.e2e.harness import MAPPINGS, Env, make_env, shop_now

LOYALTY = "loyalty_points"
EVENT = "store_purchase_event"
TRIGGER = "/v1/events/trigger/store_purchase"
DEFS = "/v1/custom-data-definitions"


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    with make_env(db_url, tmp_path) as e:
        assert e.cli("db", "upgrade").code == 0
        yield e


def mapping(env: Env, name: str, text: str | None = None) -> None:
    """Put one mapping file (the example, or ``text``) alone in the env's mappings folder."""
    env.use_mappings([name])
    if text is not None:
        (env.mappings / f"{name}.toml").write_text(text, encoding="utf-8")


def example(name: str) -> str:
    return (MAPPINGS / f"{name}.toml").read_text(encoding="utf-8")


def sync(env: Env, code: int = 0) -> str:
    res = env.cli("sync")
    assert res.code == code, res.text
    return res.text


def since(env: Env, n: int) -> list[tuple[str, str, int]]:
    return [(r.method, r.path, r.status) for r in env.sandbox.requests[n:]]


# --- custom data ---------------------------------------------------------------------------------


def expected_records(env: Env) -> dict[str, tuple[int, str]]:
    rows = env.sql("SELECT customer_id, points, tier FROM loyalty_accounts")
    return {str(r["customer_id"]): (int(str(r["points"])), str(r["tier"]).lower()) for r in rows}


def held(env: Env, ident: int) -> dict[str, tuple[int, str]]:
    out = {}
    for rec in env.sandbox.context.custom.records_of(ident):
        assert rec["customer_id"]["by"] == "id_customer"
        out[rec["customer_id"]["value"]] = (rec["points"], rec["tier"])
    return out


def test_custom_data_definition_and_records(env: Env) -> None:
    mapping(env, LOYALTY)
    sync(env)
    state = env.sandbox.context.custom
    (ident,) = state.definitions
    definition = state.definitions[ident]
    assert definition["name"] == "loyalty" and definition["unique_keys"] == ["customer_id"]
    assert held(env, ident) == expected_records(env)
    posts = [r for r in env.sandbox.requests if r.path == f"/v1/custom-data-records/{ident}"]
    assert posts and all(r.item_count <= 20 for r in posts)

    # provisioning again is a no-op: one GET of the kept definition, nothing else
    n = len(env.sandbox.requests)
    sync(env)
    assert since(env, n) == [("GET", f"{DEFS}/{ident}", 200)]

    # a loyalty change: only that record is sent, upserted in place
    time.sleep(0.05)
    changed = shop.mutate(env.engine, now=shop_now())["loyalty_accounts"]
    n = len(env.sandbox.requests)
    before = len(state.records_of(ident))
    sync(env)
    assert [r.item_count for r in env.sandbox.requests[n:] if r.method == "POST"] == [1]
    assert len(state.records_of(ident)) == before
    assert held(env, ident)[str(changed[0])] == expected_records(env)[str(changed[0])]

    # a field added to the mapping extends the definition; every record gains it, no duplicate
    grown = (
        example(LOYALTY).replace(
            '    { name = "updated_at", label = "Last change", type = "datetime" },\n',
            '    { name = "updated_at", label = "Last change", type = "datetime" },\n'
            '    { name = "member", label = "Member", type = "bool" },\n',
        )
        + "member = { const = true }\n"
    )
    mapping(env, LOYALTY, grown)
    n = len(env.sandbox.requests)
    sync(env)
    assert [x for x in since(env, n) if x[0] == "PATCH"] == [
        ("PATCH", f"{DEFS}/{ident}/extend", 200)
    ]
    assert [f["name"] for f in state.definitions[ident]["fields"]][-1] == "member"
    records = state.records_of(ident)
    assert len(records) == before and all(r["member"] is True for r in records)

    # a type change is refused, with what differs and what to do; ShopiMind is not touched
    retyped = grown.replace(
        'name = "points", label = "Points", type = "number"',
        'name = "points", label = "Points", type = "text"',
    )
    mapping(env, LOYALTY, retyped)
    n = len(env.sandbox.requests)
    out = sync(env, code=1)
    assert "field 'points' is of type 'number' on ShopiMind but 'text' in the mapping" in out
    assert "new name (definition.name)" in out
    assert {m for m, _, _ in since(env, n)} == {"GET"}
    assert state.definitions[ident]["fields"][1]["type"] == "number"


# --- events --------------------------------------------------------------------------------------


def add_purchases(env: Env, count: int, when: object = None) -> list[int]:
    table = shop.metadata().tables["store_purchases"]
    at = when or shop_now()
    with env.engine.begin() as conn:
        first = int(conn.scalar(sa.select(sa.func.max(table.c.id))) or 0) + 1
        emails = conn.scalars(sa.select(shop.metadata().tables["customers"].c.email).limit(count))
        rows = [
            {
                "id": first + k,
                "customer_id": None,
                "email": email,
                "store": "Lyon Presqu'île",
                "amount": Decimal("19.90") + k,
                "purchased_at": at,
                "created_at": at,
                "updated_at": at,
            }
            for k, email in enumerate(emails.all())
        ]
        conn.execute(table.insert(), rows)
    return [r["id"] for r in rows]


def fired(env: Env) -> Counter[str]:
    """How many times each purchase id fired."""
    triggers = env.sandbox.context.custom.triggers_of("store_purchase")
    return Counter(t.body["metaData"]["purchase_id"] for t in triggers)


def test_event_fires_each_new_row_once_never_history(env: Env) -> None:
    mapping(env, EVENT)
    history = env.sql("SELECT COUNT(*) AS n FROM store_purchases")[0]["n"]
    assert history
    sync(env)
    assert fired(env) == Counter()  # rows present on the first start never fire
    time.sleep(0.05)
    new = add_purchases(env, 3)
    sync(env)
    assert fired(env) == Counter({str(i): 1 for i in new})
    body = env.sandbox.context.custom.triggers_of("store_purchase")[0].body
    assert set(body) == {"contact", "metaData"} and "@" in body["contact"]["email"]
    assert body["metaData"]["amount"] == 19.9
    sync(env)
    sync(env)
    assert fired(env) == Counter({str(i): 1 for i in new})
    # the operator asks for older rows: they fire once; rows already fired do not fire again
    older = env.sql("SELECT MAX(created_at) AS t FROM store_purchases WHERE id < :i", i=new[0])
    newest_old = older[0]["t"]
    if isinstance(newest_old, str):  # SQLite
        newest_old = datetime.fromisoformat(newest_old)
    assert isinstance(newest_old, datetime)
    frm = (newest_old - timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S")
    assert env.cli("reset", EVENT, "--to", frm).code == 0
    sync(env)
    counts = fired(env)
    assert max(counts.values()) == 1  # the new rows did not fire again
    assert set(counts) - {str(i) for i in new}, "the older rows asked for did not fire"


def start_killed_sync(env: Env, on: int) -> subprocess.Popen[bytes]:
    """``sync`` in a child process, SIGKILLed when the sandbox stores trigger number ``on``."""
    proc: dict[str, subprocess.Popen[bytes]] = {}
    count = [0]

    def hook(t: Trigger) -> None:
        count[0] += 1
        if count[0] == on:
            os.kill(proc["p"].pid, signal.SIGKILL)

    env.sandbox.context.custom.on_trigger = hook
    proc["p"] = subprocess.Popen(
        [sys.executable, "-m", "connector.cli", "sync", "--config", str(env.config)],
        cwd=env.tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc["p"]


@pytest.mark.parametrize("delivery", ["at-least-once", "at-most-once"])
def test_event_killed_between_call_and_record(env: Env, delivery: str) -> None:
    text = example(EVENT).replace('delivery = "at-least-once"', f'delivery = "{delivery}"')
    mapping(env, EVENT, text)
    sync(env)
    time.sleep(0.05)
    new = [str(i) for i in add_purchases(env, 3)]
    proc = start_killed_sync(env, on=2)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    env.sandbox.context.custom.on_trigger = None
    assert fired(env) == Counter({new[0]: 1, new[1]: 1})
    deadline = time.monotonic() + 10  # the sandbox logs the request after the hook returns
    while len([r for r in env.sandbox.requests if r.path == TRIGGER]) < 2:
        assert time.monotonic() < deadline, "the killed request was never logged"
        time.sleep(0.01)
    killed_key = [r.idempotency_key for r in env.sandbox.requests if r.path == TRIGGER][-1]
    out = sync(env)
    sync(env)
    keys = [r.idempotency_key for r in env.sandbox.requests if r.path == TRIGGER]
    if delivery == "at-least-once":
        assert fired(env) == Counter({new[0]: 1, new[1]: 2, new[2]: 1})  # one duplicate, at most
        assert keys.count(killed_key) == 2 and len(set(keys)) == 3
    else:
        assert fired(env) == Counter({new[0]: 1, new[1]: 1, new[2]: 1})  # never fired again
        assert keys.count(killed_key) == 1
        listed = env.cli("rejected", "list", "--mapping", EVENT)
        assert f"key=[{new[1]}] source=uncertain" in listed.out
        assert "not fired again" in listed.out
        assert "rejected=1" in out
        retried = env.cli("rejected", "retry", "--mapping", EVENT)
        assert retried.code == 1 and "1 still open" in retried.out  # reported, never re-fired
        assert fired(env) == Counter({new[0]: 1, new[1]: 1, new[2]: 1})


def test_contact_command(env: Env) -> None:
    env.use_mappings(["customers"])
    sync(env)
    row = env.sql("SELECT id, email FROM customers WHERE deleted_at IS NULL ORDER BY id")[0]
    email = str(row["email"]).strip().lower()
    by_id = env.cli("contact", "--customer-id", str(row["id"]), "--json")
    assert by_id.code == 0, by_id.text
    data = json.loads(by_id.out)
    assert data["contact_data_email"] == email and data["id_customer_shop"] == str(row["id"])
    by_email = env.cli("contact", "--email", email.upper())
    assert by_email.code == 0 and f"contact_data_email  {email}" in by_email.out
    assert any(r.path == "/v1/contacts" for r in env.sandbox.requests)
    missing = env.cli("contact", "--email", "nobody@nowhere.example")
    assert missing.code == 1 and "no ShopiMind contact for email" in missing.err
    with pytest.raises(SystemExit):  # --email or --customer-id is required
        env.cli("contact")


def test_at_most_once_apply_then_503_never_fires_twice(env: Env) -> None:
    """A trigger ShopiMind applied and then answered 503 is uncertain, not retried; a 429 is
    refused before processing and is retried; no row fires twice."""
    text = example(EVENT).replace('delivery = "at-least-once"', 'delivery = "at-most-once"')
    mapping(env, EVENT, text)
    sync(env)
    time.sleep(0.05)
    new = [str(i) for i in add_purchases(env, 5)]
    env.sandbox.inject(503, count=2, path_prefix=TRIGGER, applied=True)
    outs = [env.cli("sync") for _ in range(4)]  # an uncertain row fails its pass; the next goes on
    env.sandbox.inject(429, count=1, path_prefix=TRIGGER, retry_after=0)
    later = [str(i) for i in add_purchases(env, 1)]
    time.sleep(0.05)
    outs += [env.cli("sync") for _ in range(2)]
    assert fired(env) == Counter({i: 1 for i in new + later}), [o.text for o in outs]
    statuses = [r.status for r in env.sandbox.requests if r.path == TRIGGER]
    assert statuses.count(503) == 2 and statuses.count(429) == 1
    listed = env.cli("rejected", "list", "--mapping", EVENT)
    assert listed.out.count("source=uncertain") == 2
    assert "HTTP 503" in listed.out

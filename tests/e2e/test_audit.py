"""The audit end to end (issue 19): after a sync whose accepted items the sandbox partly drops,
and records edited, deleted and added on the sandbox's side, ``audit --json`` names exactly those
keys with the differing fields; ``audit --repair`` leaves the sandbox equal to the shop's rows
mapped; equivalent values written differently (money digits, instants in another offset, id
lists in another order) are not differences."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector import registry
from connector.audit import AuditOptions, AuditShare, audit_all, audit_mapping
from connector.audit.compare import compared_fields, differences
from connector.config import load_config
from connector.mapping import load_mappings
from connector.runtime import Runtime
from tests.e2e.harness import Env, make_env

MAPPINGS = ["customers", "orders", "products"]


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    with make_env(db_url, tmp_path) as e:
        assert e.cli("db", "upgrade").code == 0
        e.use_mappings(MAPPINGS)
        yield e


def audit(env: Env, *args: str) -> dict[str, dict[str, Any]]:
    res = env.cli("audit", "--json", "--recheck-delay", "0s", *args)
    assert res.code in (0, 1), res.text
    return {r["mapping"]: r for r in json.loads(res.out)}


def assert_equal_to_shop(env: Env) -> None:
    """Every mapping's records on the sandbox are the shop's rows mapped: same keys, and no
    compared field differs by the API's types."""
    for m in load_mappings(env.mappings, MAPPINGS):
        expected = env.expected(m.name)
        stored = env.sandbox.records(m.resource.name)
        assert set(stored) == set(expected), m.name
        names = compared_fields(m)
        for key, item in expected.items():
            assert differences(m.resource, item, stored[key], names) == {}, (m.name, key)


def test_audit_reports_exactly_the_differences_and_repair_fixes_them(env: Env) -> None:
    sb = env.sandbox
    sb.drop(0.1, seed=7)
    assert env.cli("sync").code == 0
    sb.drop(0.0)
    dropped = {m: sb.dropped(registry.RESOURCES[m].name) for m in MAPPINGS}
    assert dropped["customers"] and dropped["orders"] and dropped["products"]

    customers = sb.records("customers")
    orders = sb.records("orders")
    products = sb.records("products")
    c_edit, c_same = sorted(customers)[:2]
    o_edit, o_gone, o_same = sorted(orders)[:3]
    p_edit = sorted(products)[0]
    assert "|" in p_edit  # composite key: product_id|lang
    # real differences
    sb.edit("customers", c_edit, email="someone.else@example.com")
    sb.edit("orders", o_edit, amount=round(float(orders[o_edit]["amount"]) + 1, 2))
    sb.edit("products", p_edit, name="Renamed on ShopiMind", quantity_remaining=-5)
    sb.remove("orders", o_gone)
    ghost = dict(customers[c_same], customer_id="ghost-1", email="ghost@example.com")
    sb.add("customers", ghost)
    # equivalent values, written otherwise: not differences
    c = customers[c_same]
    sb.edit("customers", c_same, created_at=c["created_at"].replace("Z", "+00:00"))
    if c.get("group_ids"):
        sb.edit("customers", c_same, group_ids=[int(g) for g in reversed(c["group_ids"])])
    o = orders[o_same]
    sb.edit("orders", o_same, amount=float(o["amount"]) + 0.001, order_id=int(o["order_id"]))

    found = audit(env)
    cu, od, pr = found["customers"], found["orders"], found["products"]
    assert set(cu["missing"]["keys"]) == dropped["customers"]
    assert set(cu["stale"]["keys"]) == {c_edit}
    assert cu["stale"]["fields"][c_edit] == {
        "email": {"expected": customers[c_edit]["email"], "actual": "someone.else@example.com"}
    }
    assert cu["ghost"]["keys"] == ["ghost-1"]
    assert set(od["missing"]["keys"]) == dropped["orders"] | {o_gone}
    assert set(od["stale"]["keys"]) == {o_edit}
    assert set(od["stale"]["fields"][o_edit]) == {"amount"}
    assert od["ghost"]["count"] == 0
    assert set(pr["missing"]["keys"]) == dropped["products"]
    assert pr["stale"]["fields"][p_edit] == {
        "name": {"expected": products[p_edit]["name"], "actual": "Renamed on ShopiMind"},
        "quantity_remaining": {
            "expected": products[p_edit]["quantity_remaining"],
            "actual": -5,
        },
    }
    assert pr["ghost"]["count"] == 0
    for r in found.values():
        assert r["outcome"] == "ok"
        assert r["missing"]["count"] == len(r["missing"]["keys"])
        assert "id" in r["ignored_fields"]  # ShopiMind's own id: listed, not compared

    res = env.cli("audit", "--repair", "--recheck-delay", "0s")
    assert res.code == 0, res.text
    assert "ghost-1" in sb.deleted("customers")
    assert_equal_to_shop(env)
    again = audit(env)
    for r in again.values():
        assert (r["missing"]["count"], r["stale"]["count"], r["ghost"]["count"]) == (0, 0, 0)


@contextlib.contextmanager
def runtime(env: Env) -> Iterator[Runtime]:
    with Runtime.open(load_config(str(env.config))) as rt:
        yield rt


def test_sampled_audit_reads_single_records(env: Env) -> None:
    sb = env.sandbox
    assert env.cli("sync").code == 0
    for key in sb.records("customers"):
        sb.edit("customers", key, first_name="Changed")
    opts = AuditOptions(sample=3, recheck_delay=0.0, list_limit=5)
    with runtime(env) as rt:
        assert rt.client is not None
        share = AuditShare(rt.client.budget, 1.0)
        seen = len(sb.requests)
        res = audit_mapping(rt, "customers", opts, share)
    assert res.mode == "sample" and res.outcome == "ok", res
    assert res.missing == [] and res.ghost == []
    # the 3 sampled keys, plus the records of one random list page (5), all edited
    assert 3 <= len(res.stale) <= 8
    assert all(set(f) == {"first_name"} for f in res.stale.values())
    gets = [r for r in sb.requests[seen:] if r.method == "GET"]
    singles = [r for r in gets if r.path.startswith("/v1/customers/")]
    assert len(singles) == 3 + len(res.stale)  # the sample, then each difference read again
    assert len(gets) - len(singles) == 2  # the first page (the total) and one random page
    assert res.requests == len(gets)


def test_interrupted_audit_resumes_after_the_mappings_done(env: Env) -> None:
    sb = env.sandbox
    sb.drop(0.2, seed=2)
    assert env.cli("sync").code == 0
    sb.drop(0.0)

    class StopAtOrders:
        def __init__(self, rt: Runtime) -> None:
            self.rt = rt

        def start(self, mapping: str, total: int | None, budget_rate: float | None = None) -> None:
            if mapping == "orders":
                self.rt.stop.set()

        def update(self, mapping: str, rows: int) -> None:
            pass

        def finish(self, mapping: str) -> None:
            pass

    opts = AuditOptions(recheck_delay=0.0)
    with runtime(env) as rt:
        first = audit_all(rt, None, opts, progress=StopAtOrders(rt))
    assert [(r.mapping, r.outcome) for r in first] == [
        ("customers", "ok"),
        ("products", "ok"),
        ("orders", "interrupted"),
    ]
    seen = len(sb.requests)
    with runtime(env) as rt:
        second = audit_all(rt, None, opts)
    got = {r.mapping: r for r in second}
    assert [(r.mapping, r.outcome) for r in second] == [
        ("customers", "ok"),
        ("products", "ok"),
        ("orders", "ok"),
    ]
    assert set(got["customers"].missing) == sb.dropped("customers")  # kept from the first run
    assert "from the interrupted run" in (got["customers"].message or "")
    assert set(got["orders"].missing) == sb.dropped("orders")
    paths = {r.path for r in sb.requests[seen:]}
    assert "/v1/orders" in paths
    assert not paths & {"/v1/customers", "/v1/products"}
    with runtime(env) as rt:  # a finished run starts over
        third = audit_all(rt, ["customers"], opts)
    assert "interrupted" not in (third[0].message or "")


def test_repair_keeps_ghosts_it_must_not_delete(env: Env) -> None:
    sb = env.sandbox
    assert env.cli("sync").code == 0
    seen = len(sb.requests)  # the sync's own (soft) deletes are before
    products = sb.records("products")
    live = sorted(products)[0]
    pid = live.split("|")[0]
    # another language of a product the shop holds: deleting it would delete every language
    sb.add("products", dict(products[live], lang="xx"))
    res = env.cli("audit", "--repair", "--recheck-delay", "0s", "--mapping", "products")
    assert res.code == 1, res.text
    assert f"ghost: {pid}|xx" in res.out and "kept 1" in res.out
    assert not [r for r in sb.requests[seen:] if r.path.endswith("/bulk-delete")]
    assert live in sb.records("products")

    # more ghosts than the share a repair may delete: nothing is deleted, and it says why
    customers = sb.records("customers")
    template = next(iter(customers.values()))
    for i in range(len(customers) + 1):
        sb.add("customers", dict(template, customer_id=f"x{i}"))
    res = env.cli("audit", "--repair", "--recheck-delay", "0s", "--mapping", "customers")
    assert res.code == 1, res.text
    assert "repair refused" in res.out and "--max-delete-share 1" in res.out
    assert not [r for r in sb.requests[seen:] if r.path.endswith("/bulk-delete")]
    found = audit(env, "--mapping", "customers")["customers"]
    assert found["ghost"]["count"] == len(customers) + 1


def test_differences_gone_at_the_second_look_are_not_reported(env: Env) -> None:
    sb = env.sandbox
    sb.drop(0.2, seed=4)
    assert env.cli("sync").code == 0
    sb.drop(0.0)
    late = sb.dropped("customers")
    assert late
    expected = env.expected("customers")
    waits: list[float] = []

    def queue_catches_up(seconds: float) -> bool:
        """The injected wait before the second look: meanwhile the 'queue' stores the items."""
        waits.append(seconds)
        for key in late:
            sb.add("customers", expected[key])
        return False  # not stopping

    with runtime(env) as rt:
        assert rt.client is not None
        share = AuditShare(rt.client.budget, 1.0)
        opts = AuditOptions(recheck_delay=60.0)
        res = audit_mapping(rt, "customers", opts, share, sleep=queue_catches_up)
    assert len(waits) == 1 and 0 < waits[0] <= 60.0
    assert res.missing == [] and res.settled == len(late)
    with runtime(env) as rt:  # without the catch-up they are reported
        assert rt.client is not None
        for key in late:
            sb.remove("customers", key)
        share = AuditShare(rt.client.budget, 1.0)
        res = audit_mapping(rt, "customers", opts, share, sleep=lambda s: False)
    assert set(res.missing) == late and res.settled == 0

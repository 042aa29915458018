"""Crash safety: a SIGKILL between ShopiMind accepting a batch and the connector committing its
cursor loses nothing — at worst that batch is sent again. Runs the real service as a process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Env, ServiceProcess, make_env, shop_now


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    with make_env(db_url, tmp_path, scale=0.1) as e:
        assert e.cli("db", "upgrade").code == 0
        yield e


def wait_for(check: object, timeout: float, what: str) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@contextmanager
def killed_before_commit(env: Env, mapping: str) -> Iterator[dict[str, dict[str, Any]]]:
    """Run the service with every answer 2 s late and kill it (SIGKILL) as soon as ShopiMind has
    stored every expected row of ``mapping``: at least one answer is still on its way, so that
    batch is not committed. The block runs while the service is down and gets the expected
    records; after it the service starts again, must go idle and stop cleanly."""
    store = env.sandbox.context.store
    expected = env.expected(mapping)
    env.sandbox.inject_delay(2.0)
    svc = ServiceProcess(env)
    svc.start()
    try:
        wait_for(lambda: len(store.send_counts(mapping)) >= len(expected), 30, "all stored")
        svc.kill()
        env.sandbox.clear_faults()
        yield expected
        svc.start()
        env.wait_idle(timeout=60)
        assert svc.stop() == 0, svc.output()
    finally:
        svc.kill()


def test_kill_while_the_api_answer_is_in_flight(env: Env) -> None:
    env.use_mappings(["customers"])
    env.write_config(sync={"poll_interval": "0.3s"})
    assert len(env.expected("customers")) > 50  # two batches (the customers batch limit is 50)

    # every answer leaves 2 s after the items are stored: once all the items are stored, the
    # connector is waiting for at least one answer (batches may be pipelined) when it is killed
    with killed_before_commit(env, "customers") as expected:
        assert set(env.sandbox.records("customers")) == set(expected)  # all stored
        with env.state() as st:
            committed = set(st.get_hashes("customers", [f"[{k}]" for k in expected]))
        in_flight = {k for k in expected if f"[{k}]" not in committed}
        assert in_flight, "the kill was meant to land before a batch's commit"
    counts = env.sandbox.context.store.send_counts("customers")
    assert env.sandbox.records("customers") == env.expected("customers")
    # exactly the batches accepted but not committed went twice, nothing else
    assert {k for k, n in counts.items() if n == 2} == in_flight
    assert all(n == 1 for k, n in counts.items() if k not in in_flight), counts


def test_child_change_after_an_interrupted_first_pass(env: Env) -> None:
    """The service's first pass is stopped (SIGTERM) while orders are being delivered. An order
    line of a delivered order then changes (the order row itself does not). However long the
    connector stays down, the next passes must re-send that order."""
    env.use_mappings(["orders"])
    env.edit_mapping("orders", 'lookback = "5m"', 'lookback = "1s"')  # "down longer than this"
    env.write_config(sync={"poll_interval": "0.3s"})
    sb = env.sandbox
    store = sb.context.store
    sb.inject_delay(1.0)  # answers come late: the first pass is still running when stopped
    svc = ServiceProcess(env)
    svc.start()
    try:
        wait_for(lambda: store.send_counts("orders"), 30, "a first batch")
        assert svc.stop() == 0, svc.output()
    finally:
        svc.kill()
    sb.clear_faults()
    with env.state() as st:
        done = st.get_hashes("orders", [f"[{k}]" for k in store.send_counts("orders")])
    assert done, "a delivered batch is committed on a clean stop"
    order = min((k.strip("[]") for k in done), key=int)
    env.execute(
        "UPDATE order_lines SET qty = qty + 5, updated_at = :now WHERE order_id = :o",
        now=shop_now(),
        o=int(order),
    )
    time.sleep(1.5)
    for _ in range(3):
        res = env.cli("sync")
        assert res.code == 0, res.text
    assert sb.records("orders") == env.expected("orders")


def test_soft_delete_after_a_kill_before_the_commit(env: Env) -> None:
    """Customers are stored by ShopiMind, the connector is killed before committing them, and
    one of them is soft-deleted while it is down: the delete must still reach ShopiMind."""
    env.use_mappings(["customers"])
    env.write_config(sync={"poll_interval": "0.3s"})
    with killed_before_commit(env, "customers") as expected:
        with env.state() as st:
            committed = set(st.get_hashes("customers", [f"[{k}]" for k in expected]))
        uncommitted = sorted((k for k in expected if f"[{k}]" not in committed), key=int)
        assert uncommitted
        victim = uncommitted[0]
        env.execute(
            "UPDATE customers SET deleted_at = :now, updated_at = :now WHERE id = :id",
            now=shop_now(),
            id=int(victim),
        )
    assert victim not in env.expected("customers")
    assert env.sandbox.records("customers") == env.expected("customers")


def test_hard_delete_after_a_kill_before_the_commit(env: Env) -> None:
    """Like the soft delete above, but the row is deleted outright: ``reconcile`` must remove
    it from ShopiMind."""
    env.use_mappings(["customers"])
    env.write_config(sync={"poll_interval": "0.3s"})
    env.execute(
        "INSERT INTO customers (id, email, first_name, last_name, newsletter, optin, lang, "
        "active, group_id, created_at, updated_at) VALUES (9100, 'gone@example.com', 'Soon', "
        "'Gone', 0, 'N', 'fr', 1, 1, :now, :now)",
        now=shop_now(),
    )
    with killed_before_commit(env, "customers"):
        with env.state() as st:
            assert "[9100]" not in st.get_hashes("customers", ["[9100]"]), "committed already"
        env.execute("DELETE FROM customers WHERE id = 9100")
    res = env.cli("reconcile")
    assert res.code == 0, res.text
    assert "9100" not in env.sandbox.records("customers")
    assert env.sandbox.records("customers") == env.expected("customers")

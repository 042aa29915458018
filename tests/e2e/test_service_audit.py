"""The service's audit (sync.audit_interval): its figures in /metrics and ``status``, a warning
naming keys, and ``audit_repair = true`` putting ShopiMind back in line with the shop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Env, ServiceProcess, make_env
from tests.e2e.test_audit import assert_equal_to_shop
from tests.e2e.test_service import _free_port, _scrape, until

MAPPINGS = ["customers", "orders", "products"]


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    with make_env(db_url, tmp_path) as e:
        assert e.cli("db", "upgrade").code == 0
        e.use_mappings(MAPPINGS)
        yield e


def configure(env: Env, port: int, repair: bool) -> None:
    env.write_config(
        sync={
            "mappings_dir": str(env.mappings),
            "poll_interval": "1s",
            "audit_interval": "2s",
            "audit_recheck_delay": "0s",
            "audit_repair": repair,
        },
        metrics={"listen": str(port)},
    )


def synced(env: Env) -> bool:
    """Every row was sent once: stored on the sandbox, or dropped by it."""
    sb = env.sandbox
    return all(
        set(sb.records(m)) | sb.dropped(m) == set(env.expected(m)) for m in ("customers", "orders")
    )


def test_service_audit_figures_in_metrics_status_and_log(env: Env) -> None:
    sb = env.sandbox
    port = _free_port()
    configure(env, port, repair=False)
    sb.drop(0.15, seed=5)
    svc = ServiceProcess(env)
    svc.start()
    try:
        until(lambda: synced(env), 60, "the first sync")
        sb.drop(0.0)
        missing = sb.dropped("customers")
        assert missing
        sb.add("customers", dict(next(iter(sb.records("customers").values())), customer_id="g-1"))
        o_key = sorted(sb.records("orders"))[0]
        sb.edit("orders", o_key, currency="USD")
        wanted = {
            ("shopimind_connector_audit_missing", "customers"): len(missing),
            ("shopimind_connector_audit_ghost", "customers"): 1,
            ("shopimind_connector_audit_stale", "orders"): 1,
            ("shopimind_connector_audit_missing", "orders"): len(sb.dropped("orders")),
        }

        def figures() -> bool:
            got = _scrape(port)
            return all(
                got.get((name, (("mapping", m),))) == float(n) for (name, m), n in wanted.items()
            )

        until(figures, 90, f"audit figures in /metrics: {wanted}")
        status = env.status()
        assert status["customers"]["audit_missing"] == len(missing)
        assert status["customers"]["audit_ghost"] == 1
        assert status["orders"]["audit_stale"] == 1
        assert status["orders"]["last_audit"]["outcome"] == "ok"
        text = env.cli("status").out
        assert f"missing={len(missing)} stale=0 ghost=1" in text
        log = svc.output(200_000)
        warning = next(x for x in log.splitlines() if "customers: audit" in x and "ghost=1" in x)
        assert "WARNING" in warning or "warning" in warning.lower()
        assert "ghost g-1" in warning or any(f"missing {k}" in warning for k in missing)
    finally:
        assert svc.stop() == 0, svc.output()


def test_service_audit_repairs_when_asked(env: Env) -> None:
    sb = env.sandbox
    configure(env, _free_port(), repair=True)
    sb.drop(0.15, seed=9)
    svc = ServiceProcess(env)
    svc.start()
    try:
        until(lambda: synced(env), 60, "the first sync")
        sb.drop(0.0)
        assert sb.dropped("customers") and sb.dropped("orders")
        sb.add("customers", dict(next(iter(sb.records("customers").values())), customer_id="g-2"))
        until(lambda: "g-2" in sb.deleted("customers"), 90, "the ghost deleted by the repair")

        def repaired() -> bool:
            try:
                assert_equal_to_shop(env)
            except AssertionError:
                return False
            return True

        until(repaired, 90, "the sandbox equal to the shop's rows mapped")
    finally:
        assert svc.stop() == 0, svc.output()

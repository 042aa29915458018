"""The service reconciles hard deletes on a schedule of its own (sync.reconcile_interval)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.harness import make_env


def test_service_reconciles_hard_deletes_on_its_schedule(db_url: str, tmp_path: Path) -> None:
    with make_env(db_url, tmp_path) as env:
        assert env.cli("db", "upgrade").code == 0
        env.use_mappings(["customers", "orders"])
        env.write_config(
            sync={
                "mappings_dir": str(env.mappings),
                "poll_interval": "1s",
                "reconcile_interval": "2s",
            }
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "run", "--config", str(env.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            live = {str(r["id"]) for r in env.sql("SELECT id FROM orders")}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and set(env.sandbox.records("orders")) != live:
                time.sleep(0.1)
            assert set(env.sandbox.records("orders")) == live
            victim = min(live, key=int)
            env.execute("DELETE FROM order_lines WHERE order_id = :i", i=int(victim))
            env.execute("DELETE FROM orders WHERE id = :i", i=int(victim))
            while time.monotonic() < deadline and victim not in env.sandbox.deleted("orders"):
                time.sleep(0.1)
            assert env.sandbox.deleted("orders") == {victim}
            assert victim not in env.sandbox.records("orders")
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        # the reconciliation that deleted the victim logged it; it may have been stopped by the
        # SIGTERM sent as soon as the sandbox saw the delete ("stopped; the rest stays pending")
        line = next(x for x in err.splitlines() if "orders: reconcile" in x and "deleted=1" in x)
        assert "orders: reconcile ok" in line or "stopped; the rest stays pending" in line, line

"""The service as systemd runs it: the real ``run`` command as a child process against the sandbox.

readiness / status / watchdog / stopping on a notify socket, a hung pass stopping the watchdog,
SIGTERM in the middle of a backfill, SIGHUP with a valid and a broken mapping, one instance per
state database, metrics against what the sandbox received, fairness between mappings under a
small API budget, ``health``, and secrets absent from a failing run's output in every format.
SQLite only except the instance lock (every backend); the rest does not depend on the database.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from connector import cli
from tests.e2e.harness import KEY, MAPPINGS, Env, make_env, shop_now


class NotifySocket:
    """What systemd would receive on ``$NOTIFY_SOCKET`` (abstract namespace, no path limits)."""

    def __init__(self) -> None:
        self.name = f"shopimind-e2e-{os.getpid()}-{id(self)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + self.name.encode())
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._rx, daemon=True)
        self._thread.start()

    def _rx(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": "@" + self.name}

    def times(self, field: str) -> list[float]:
        return [t for t, m in list(self.messages) if field in m.split("\n")]

    def wait(self, pred: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, m in list(self.messages):
                if pred(m):
                    return m
            time.sleep(0.05)
        raise AssertionError(f"no such notify message; got {[m for _, m in self.messages]}")

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


class Run:
    """``shopimind-connector <args>`` as a child process; output in a file."""

    def __init__(self, env: Env, *args: str, extra: dict[str, str] | None = None) -> None:
        self.log = env.tmp / f"run-{time.monotonic_ns()}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "connector.cli", *(args or ("run",))),
                    *("--config", str(env.config), "--log-format", "human"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=env.tmp,
                env={**os.environ, **(extra or {})},
            )

    @property
    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_output(self, text: str, timeout: float) -> None:
        until(lambda: text in self.output, timeout, f"{text!r} in the output:\n{self.output}")

    def signal(self, sig: int, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def until(pred: Callable[[], object], timeout: float, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def running(env: Env, *args: str, extra: dict[str, str] | None = None) -> Iterator[Run]:
    run = Run(env, *args, extra=extra)
    try:
        yield run
    finally:
        run.kill()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with make_env(f"sqlite:///{tmp_path / 'shop.sqlite'}", tmp_path, scale=0.2) as e:
        assert e.cli("db", "upgrade").code == 0
        yield e


@pytest.fixture
def big(tmp_path: Path) -> Iterator[Env]:
    """A scale-1 shop (600 customers, 800 orders) for backfills that last a few seconds."""
    with make_env(f"sqlite:///{tmp_path / 'shop.sqlite'}", tmp_path, scale=1.0) as e:
        assert e.cli("db", "upgrade").code == 0
        yield e


def touch_customer(env: Env, first_name: str, cid: int = 1) -> None:
    env.execute(
        "UPDATE customers SET first_name = :n, updated_at = :now WHERE id = :id",
        n=first_name,
        now=shop_now(),
        id=cid,
    )


def first_name(env: Env, cid: int = 1) -> object:
    return env.sandbox.records("customers").get(str(cid), {}).get("first_name")


# --- systemd protocol ---------------------------------------------------------------------------


def test_ready_status_watchdog_stopping_and_a_hung_pass_stops_the_pings(env: Env) -> None:
    env.use_mappings(["customers"])
    env.write_config(sync={"pass_timeout": "1s"})
    notify = NotifySocket()
    extra = {**notify.env, "WATCHDOG_USEC": "1000000"}
    try:
        with running(env, extra=extra) as run:
            ready = notify.wait(lambda m: m.startswith("READY=1"), 20)
            assert "STATUS=started: 1 mapping(s)" in ready
            notify.wait(lambda m: m.startswith("STATUS=1/1 mappings ok"), 20)
            before = len(notify.times("WATCHDOG=1"))
            time.sleep(1.0)
            assert len(notify.times("WATCHDOG=1")) - before >= 3  # every 0.25 s (WATCHDOG_USEC/4)

            # a pass waits 2.5 s for an answer: no progress for > pass_timeout → no pings
            env.sandbox.inject_delay(2.5, count=1)
            touch_customer(env, "Stalled")
            stuck = notify.wait(lambda m: m.startswith("STATUS=STUCK"), 15)
            assert "the pass of customers made no progress" in stuck
            until(lambda: first_name(env) == "Stalled", 15, "the slow answer")
            t_stuck = notify.times("STATUS=STUCK: " + stuck.split(": ", 1)[1])[0]
            until(lambda: any(t > t_stuck for t in notify.times("WATCHDOG=1")), 10, "pings again")
            pings = notify.times("WATCHDOG=1")
            gap = min(t for t in pings if t > t_stuck) - max(t for t in pings if t < t_stuck)
            assert gap >= 1.0, gap  # about 2.5 s - 1 s without pings (0.25 s apart otherwise)
            out = run.output
            assert "no longer pinging the systemd watchdog: systemd restarts the service" in out
            assert "the service is making progress again" in out

            assert run.signal(signal.SIGTERM) == 0
        notify.wait(lambda m: m == "STOPPING=1", 5)
    finally:
        notify.close()


def test_no_ready_when_the_shop_database_is_unreachable(env: Env) -> None:
    env.write_config(source={"url": "postgresql+psycopg://shop@127.0.0.1:1/shop"})
    notify = NotifySocket()
    try:
        with running(env, extra=notify.env) as run:
            assert run.proc.wait(timeout=30) == 1
        assert not notify.messages  # READY=1 only once the shop database answered
        assert "error:" in run.output and "127.0.0.1" in run.output
    finally:
        notify.close()


# --- SIGTERM / SIGHUP ---------------------------------------------------------------------------


def _cursor_rows(env: Env) -> list[tuple[datetime, int]]:
    rows = env.sql(
        "SELECT id, COALESCE(updated_at, created_at) AS c FROM customers WHERE deleted_at IS NULL"
    )
    out = []
    for r in rows:
        c = r["c"]
        out.append((c if isinstance(c, datetime) else datetime.fromisoformat(str(c)), int(r["id"])))
    return out


def test_sigterm_mid_backfill_exits_0_with_the_cursor_saved_and_nothing_lost(big: Env) -> None:
    env = big
    env.use_mappings(["customers"])
    env.write_config(shopimind={"requests_per_minute": 120})  # 12 batches at 2/s: about 6 s
    env.sandbox.inject_delay(0.1)
    total = len(_cursor_rows(env))
    with running(env) as run:
        until(lambda: len(env.sandbox.records("customers")) >= 150, 30, "a few batches")
        started = time.monotonic()
        assert run.signal(signal.SIGTERM, timeout=20) == 0, run.output
        took = time.monotonic() - started
    assert took < 10, took  # well within the unit's TimeoutStopSec
    assert "received SIGTERM" in run.output and "stopped cleanly" in run.output
    got = set(env.sandbox.records("customers"))
    assert len(got) < total  # it really was mid-backfill

    status = env.status()["customers"]
    assert status["cursor"] is not None
    with env.state() as store:
        cursor = store.get_cursor("customers")
    assert cursor is not None
    value = (
        cursor.value
        if isinstance(cursor.value, datetime)
        else datetime.fromisoformat(str(cursor.value))
    )
    # every row up to the saved cursor is on ShopiMind: the cursor never passed an unsent row
    behind = [(c, i) for c, i in _cursor_rows(env) if (c, (i,)) <= (value, tuple(cursor.key))]
    assert behind and {str(i) for _, i in behind} <= got

    env.sandbox.clear_faults()
    env.write_config()  # full speed for the rest
    res = env.cli("sync")
    assert res.code == 0, res.text
    assert set(env.sandbox.records("customers")) == {str(i) for _, i in _cursor_rows(env)}
    read = int(re.search(r"customers\s+ok\s+(\d+)", res.out).group(1))  # type: ignore[union-attr]
    assert read < total  # resumed from the saved cursor, not from the start


def _expected_count(env: Env, mapping: str) -> int:
    return len(env.expected(mapping))


def test_sighup_reloads_a_valid_mapping_and_keeps_the_running_ones_on_a_broken_one(
    env: Env,
) -> None:
    env.use_mappings(["customers"])
    notify = NotifySocket()
    try:
        with running(env, extra=notify.env) as run:
            notify.wait(lambda m: m.startswith("STATUS=1/1 mappings ok"), 20)
            shutil.copy(MAPPINGS / "products_categories.toml", env.mappings)
            run.proc.send_signal(signal.SIGHUP)
            want = _expected_count(env, "products_categories")
            until(
                lambda: len(env.sandbox.records("products_categories")) == want, 20, "new mapping"
            )
            run.wait_output("reloaded", 5)
            assert "2 mapping(s)" in notify.wait(lambda m: "reloaded" in m, 5)
            assert any(m.startswith("RELOADING=1") for _, m in notify.messages)

            broken = (MAPPINGS / "customers_groups.toml").read_text(encoding="utf-8")
            broken = re.sub(r'(name\s*=\s*)"name"', r'\1"group_label"', broken, count=1)
            assert "group_label" in broken
            (env.mappings / "customers_groups.toml").write_text(broken, encoding="utf-8")
            run.proc.send_signal(signal.SIGHUP)
            run.wait_output("reload refused", 15)
            out = run.output
            assert "customers_groups.toml" in out and "group_label" in out
            assert "the running configuration and mappings stay in use" in out
            touch_customer(env, "StillRunning")
            until(lambda: first_name(env) == "StillRunning", 15, "the kept mappings go on")
            assert not env.sandbox.records("customers_groups")
            assert run.proc.poll() is None
            assert run.signal(signal.SIGTERM) == 0
    finally:
        notify.close()


# --- one instance -------------------------------------------------------------------------------


def test_second_instance_refused_naming_the_holder_then_allowed_after_sigkill(
    db_url: str, backend: str, tmp_path: Path
) -> None:
    """On every backend: the state database is SQLite, or the PostgreSQL/MariaDB test database
    itself (the connector's tables do not clash with the shop's)."""
    with make_env(db_url, tmp_path, scale=0.05) as env:
        env.use_mappings(["customers"])
        if backend != "sqlite":
            env.write_config(state={"url": db_url})
        assert env.cli("db", "upgrade").code == 0
        _second_instance(env)


def _second_instance(env: Env) -> None:
    notify = NotifySocket()
    try:
        with running(env, extra=notify.env) as first:
            notify.wait(lambda m: m.startswith("READY=1"), 20)
            second = env.cli_subprocess("sync")
            assert second.code == 1, second.text
            text = second.text
            assert "another connector instance is using the state database" in text
            assert f"pid {first.proc.pid}" in text
            assert f"host {socket.gethostname()}" in text and "running since 20" in text
            again = env.cli_subprocess("run", timeout=60)
            assert again.code == 1 and f"pid {first.proc.pid}" in again.text
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(timeout=10)
        after = env.cli_subprocess("sync")
        assert after.code == 0, after.text
    finally:
        notify.close()


# --- metrics, health, fairness ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_match_what_the_sandbox_received_and_health(env: Env) -> None:
    env.use_mappings(["customers", "products_categories"])
    port = _free_port()
    env.write_config(metrics={"listen": str(port)})  # a bare port: loopback
    ns = "shopimind_connector_"
    with running(env) as run:
        run.wait_output(f"metrics on http://127.0.0.1:{port}/metrics", 20)
        want = len(env.expected("customers"))
        until(lambda: len(env.sandbox.records("customers")) == want, 20, "the first pass")
        env.sandbox.inject(503, count=1, path_prefix="/v1/customers")  # one retry
        touch_customer(env, "Metered")
        until(lambda: first_name(env) == "Metered", 20, "the change")

        def consistent() -> bool:
            s = _scrape(port)
            reqs = env.sandbox.requests
            by_status: dict[str, int] = {}
            for r in reqs:
                by_status[str(r.status)] = by_status.get(str(r.status), 0) + 1
            scraped = {lbl[0][1]: v for (n, lbl), v in s.items() if n == ns + "api_requests_total"}
            accepted = sum(
                r.item_count
                for r in reqs
                if r.status == 200 and r.resource == "customers" and "bulk-delete" not in r.path
            )
            key = (("mapping", "customers"), ("resource", "customers"))
            return scraped == by_status and s.get((ns + "items_accepted_total", key)) == accepted

        until(consistent, 10, "metrics equal to the sandbox's request log")
        s = _scrape(port)
        key = (("mapping", "customers"), ("resource", "customers"))
        assert s[(ns + "api_requests_total", (("status", "503"),))] == 1
        assert s[(ns + "api_retries_total", ())] == 1
        assert s[(ns + "items_sent_total", key)] >= want + 1
        assert s[(ns + "rows_read_total", key)] >= want + 1
        assert s[(ns + "items_rejected_total", key)] == 0
        for m in ("customers", "products_categories"):
            lbl = (("mapping", m),)
            assert abs(s[(ns + "last_success_timestamp_seconds", lbl)] - time.time()) < 30
            assert 0 <= s[(ns + "cursor_lag_seconds", lbl)] < 30
            assert s[(ns + "pass_duration_seconds_count", lbl)] >= 1
            assert s[(ns + "passes_total", (("mapping", m), ("outcome", "ok")))] >= 1
        assert (ns + "rate_limit_wait_seconds_total", ()) in s

        healthy = env.cli("health")
        assert healthy.code == 0, healthy.text
        assert "healthy: all 2 mapping(s)" in healthy.out
        assert run.signal(signal.SIGTERM) == 0
    time.sleep(0.2)
    stale = env.cli("health", "--max-age", "100ms")
    assert stale.code == 1 and "UNHEALTHY: 2 of 2" in stale.out, stale.text
    env.use_mappings(["customers", "products_categories", "customers_groups"])
    never = env.cli("health", "--json")
    assert never.code == 1
    assert "customers_groups" in never.out and "never completed a successful pass" in never.out


def test_idle_run_rows_written_together_keep_health_true(env: Env) -> None:
    """An idle service writes its passes' run rows together, each waiting at most half a poll
    interval: with a fast poll (0.4 s, so ``health`` wants a success within 1.2 s) it stays
    healthy, and every mapping's run row keeps moving."""
    names = ["customers", "customers_groups", "products_categories", "products_manufacturers"]
    env.use_mappings(names)
    env.write_config(sync={"poll_interval": "0.4s"})
    with running(env) as run:
        until(lambda: len(env.sandbox.records("customers")) == len(env.expected("customers")), 30)
        time.sleep(1.5)  # the backfills end; from here on every pass is idle
        before = {m: env.status()[m]["last_run"]["ended_at"] for m in names}
        checked = 0
        deadline = time.monotonic() + 3.0  # 7.5 poll intervals
        while time.monotonic() < deadline:
            healthy = env.cli("health")
            assert healthy.code == 0, healthy.text
            checked += 1
            time.sleep(0.1)
        assert checked >= 5
        after = {m: env.status()[m]["last_run"]["ended_at"] for m in names}
        assert all(after[m] > before[m] for m in names), (before, after)
        assert run.signal(signal.SIGTERM) == 0


def test_fairness_a_fresh_change_is_delivered_during_a_long_backfill(big: Env) -> None:
    """With 90 requests/min shared, the 16-batch orders backfill lasts about 11 s; a customer
    changed meanwhile reaches ShopiMind within about one poll interval (3 s)."""
    env = big
    env.use_mappings(["customers", "orders"])
    assert env.cli("sync", "-m", "customers").code == 0  # caught up beforehand, at full speed
    env.write_config(shopimind={"requests_per_minute": 90}, sync={"poll_interval": "3s"})
    total = len(env.expected("orders"))
    with running(env) as run:
        until(lambda: len(env.sandbox.records("orders")) >= 100, 30, "the orders backfill")
        changed = time.monotonic()
        touch_customer(env, "Fresh")
        until(lambda: first_name(env) == "Fresh", 15, "the fresh customer change")
        took = time.monotonic() - changed
        in_sandbox = len(env.sandbox.records("orders"))
        assert in_sandbox < total, "the backfill ended too early to prove anything"
        assert took <= 3 + 3, took  # one poll interval plus the few requests queued before it
        assert run.signal(signal.SIGTERM) == 0


# --- secrets ------------------------------------------------------------------------------------

DB_PASSWORD = "db-pass-Sekr3t-4711-zz"
WRONG_KEY = "wrong-key-0123456789abcdefSECRET"


def _in_process(args: list[str], env_vars: dict[str, str]) -> tuple[int, str]:
    saved = {k: os.environ.get(k) for k in env_vars}
    os.environ.update(env_vars)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return code, out.getvalue() + err.getvalue()


@pytest.mark.parametrize("fmt", ["human", "journal", "json"])
def test_secrets_never_in_the_output_of_failing_runs(env: Env, fmt: str) -> None:
    env.use_mappings(["customers"])
    base = ["--config", str(env.config), "--log-format", fmt, "--log-level", "debug"]
    # the API refuses the key: the service stops with exit code 1
    code, text = _in_process(["run", *base], {"SHOPIMIND_API_KEY": WRONG_KEY})
    assert code == 1, text
    assert "401" in text and "API key" in text
    assert WRONG_KEY not in text and KEY not in text
    # the shop database is unreachable (with a password)
    env.write_config(
        source={
            "url": "postgresql+psycopg://shop@127.0.0.1:1/shop",
            "password_env": "SHOP_DB_PASSWORD",
        }
    )
    code, text = _in_process(["run", *base], {"SHOP_DB_PASSWORD": DB_PASSWORD})
    assert code == 1 and "127.0.0.1" in text, text
    code2, text2 = _in_process(["sync", *base], {"SHOP_DB_PASSWORD": DB_PASSWORD})
    assert code2 == 1, text2
    for t in (text, text2):
        assert DB_PASSWORD not in t and KEY not in t
    if fmt == "journal":
        assert re.search(r"^<3>", text, re.M)  # the error at journald's error priority
        assert not re.search(r"^\d{4}-\d\d-\d\d", text, re.M)  # journald adds the time itself
    if fmt == "json":
        assert all(line.startswith("{") for line in text.splitlines() if line.strip()), text


def test_interactive_sync_shows_a_bar_per_mapping_with_total_and_eta(env: Env) -> None:
    import pty

    env.use_mappings(["customers", "products_categories"])
    want = {  # every row the scan reads (soft-deleted ones too: they become deletes)
        "customers": env.sql("SELECT COUNT(*) AS n FROM customers")[0]["n"],
        "products_categories": env.sql("SELECT COUNT(*) AS n FROM category_translations")[0]["n"],
    }
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector.cli", "sync", "--config", str(env.config)],
        stdout=subprocess.PIPE,
        stderr=slave,
        cwd=env.tmp,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=30) == 0
    screen = b"".join(chunks).decode(errors="replace")
    bars = {line.split()[0]: line for line in re.split(r"[\r\n]+", screen) if "ETA" in line}
    for name, n in want.items():
        assert int(str(n)) > 0
        assert re.search(rf"\] +{n:,}/{n:<,}\s+100%\s+ETA 0s", bars[name]), bars  # done/total

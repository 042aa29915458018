"""Every mapping change reaches every record, through the real service and CLI and the sandbox.

* a mapping edited and reloaded (SIGHUP) re-reads every row — all of them far outside the
  lookback window — and the service SIGKILLed in the middle of that re-read goes on from where it
  stood after the restart;
* a custom-data extension whose answer is lost (applied, then 503; the retry is refused as
  "already exists"), or whose process is SIGKILLed before the answer, still gives every record
  the new field.

On SQLite, PostgreSQL and MariaDB (the shop database; the state database is SQLite).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from connector._remap import FINGERPRINT_META, REMAP_META, Remap
from connector.config import load_config
from connector.runtime import Runtime
from tests.e2e.harness import MAPPINGS, Env, ServiceProcess, make_env, shop_now

LOYALTY = "loyalty_points"
DEFS = "/v1/custom-data-definitions"


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    with make_env(db_url, tmp_path, scale=0.5) as e:  # about 300 customers
        assert e.cli("db", "upgrade").code == 0
        yield e


def until(pred: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def meta(env: Env, name: str) -> str | None:
    with env.state() as st:
        return st.get_meta(name)


def remap_state(env: Env, mapping: str) -> Remap | None:
    return Remap.from_json(meta(env, REMAP_META.format(mapping)))


def rows_read_since(env: Env, mapping: str, run_id: int) -> int:
    engine = sa.create_engine(f"sqlite:///{env.tmp / 'state.sqlite'}")
    try:
        with engine.connect() as conn:
            return int(
                conn.scalar(
                    sa.text(
                        "SELECT COALESCE(SUM(rows_read), 0) FROM connector_runs "
                        "WHERE mapping = :m AND id > :i"
                    ),
                    {"m": mapping, "i": run_id},
                )
            )
    finally:
        engine.dispose()


def last_run_id(env: Env) -> int:
    engine = sa.create_engine(f"sqlite:///{env.tmp / 'state.sqlite'}")
    try:
        with engine.connect() as conn:
            return int(conn.scalar(sa.text("SELECT COALESCE(MAX(id), 0) FROM connector_runs")))
    finally:
        engine.dispose()


def test_reloaded_mapping_reaches_every_record_and_resumes_after_sigkill(env: Env) -> None:
    env.use_mappings(["customers"])
    env.write_config(sync={"page_size": 50})
    assert env.cli("sync").code == 0
    total = len(env.expected("customers"))
    assert total >= 250 and env.sandbox.records("customers") == env.expected("customers")
    oldest = env.sql("SELECT MAX(COALESCE(updated_at, created_at)) AS t FROM customers")[0]["t"]
    assert oldest is not None  # every row is older than an hour: far outside the 5m lookback

    service = ServiceProcess(env)
    service.start()
    try:
        env.wait_idle()
        env.edit_mapping(
            "customers",
            'last_name = "last_name"',
            'last_name = { column = "last_name", convert = ["upper"] }',
        )
        env.sandbox.inject_delay(0.4)  # each re-read page waits for its answer
        assert service.proc is not None
        service.proc.send_signal(signal.SIGHUP)
        until(
            lambda: (s := remap_state(env, "customers")) is not None and s.read >= 100,
            60,
            "two pages of the re-read committed",
        )
        service.kill()  # SIGKILL in the middle of the re-read
        stood = remap_state(env, "customers")
        assert stood is not None and 100 <= stood.read < total, stood
        rows = int(str(env.sql("SELECT COUNT(*) AS n FROM customers")[0]["n"]))  # deleted too
        shown = env.status()["customers"]["remap"]
        assert shown == {"rows_done": stood.read, "rows_about": rows}
        assert f"{stood.read:,} of about {rows:,} rows done" in env.cli("status").out
        env.sandbox.clear_faults()
        upper = [
            k
            for k, r in env.sandbox.records("customers").items()
            if r["last_name"] and r["last_name"] == str(r["last_name"]).upper()
        ]
        assert len(upper) < total  # not all records were done before the kill
        mark = last_run_id(env)
        service.start()
        until(lambda: remap_state(env, "customers") is None, 60, "the re-read to end")
        env.wait_idle()
    finally:
        if service.running:
            assert service.stop() == 0, service.output()
    # every record shows the new output, rows far outside the lookback window included
    assert env.sandbox.records("customers") == env.expected("customers"), service.output()
    held = env.sandbox.records("customers").values()
    assert all(r["last_name"] == str(r["last_name"]).upper() for r in held if r["last_name"])
    # resumed where it stood: the restarted service did not read the done rows again
    # (the remap reads every row, soft-deleted ones too; 50: the first pass's lookback window)
    assert rows_read_since(env, "customers", mark) <= rows - stood.read + 50
    assert meta(env, FINGERPRINT_META.format("customers")) == stood.fingerprint
    out = service.output(100_000)
    assert "the mapping's output changed" in out and "re-read after the mapping change done" in out


def test_live_changes_go_first_during_a_re_read(env: Env) -> None:
    """Each pass captures live changes before its slice of the re-read (one page a pass here)."""
    env.use_mappings(["customers"])
    env.write_config(sync={"page_size": 50})
    assert env.cli("sync").code == 0
    env.edit_mapping(
        "customers",
        'first_name = "first_name"',
        'first_name = { column = "first_name", convert = ["upper"] }',
    )
    with Runtime.open(load_config(env.config)) as rt:

        def one_pass() -> None:
            syncer = rt.syncer("customers")
            syncer.remap_pages = 1
            assert syncer.run_pass().outcome == "ok"

        one_pass()
        state = remap_state(env, "customers")
        assert state is not None and state.read == 50
        last = env.sql("SELECT MAX(id) AS i FROM customers WHERE deleted_at IS NULL")[0]["i"]
        env.execute(
            "UPDATE customers SET first_name = 'Live', updated_at = :now WHERE id = :id",
            now=shop_now(),
            id=last,
        )
        time.sleep(0.05)
        one_pass()
        # the row last in key order, far from the re-read's page, is sent by the next pass
        assert env.sandbox.records("customers")[str(last)]["first_name"] == "LIVE"
        state = remap_state(env, "customers")
        assert state is not None and state.read == 100  # and the re-read went on by one page


# --- custom data ----------------------------------------------------------------------------------


def grown_loyalty() -> str:
    text = (MAPPINGS / f"{LOYALTY}.toml").read_text(encoding="utf-8")
    return (
        text.replace(
            '    { name = "updated_at", label = "Last change", type = "datetime" },\n',
            '    { name = "updated_at", label = "Last change", type = "datetime" },\n'
            '    { name = "member", label = "Member", type = "bool" },\n',
        )
        + "member = { const = true }\n"
    )


def loyalty_env(env: Env) -> int:
    env.use_mappings([LOYALTY])
    assert env.cli("sync").code == 0
    (ident,) = env.sandbox.context.custom.definitions
    assert env.sandbox.context.custom.records_of(ident)
    return int(ident)


def all_have_member(env: Env, ident: int) -> bool:
    records = env.sandbox.context.custom.records_of(ident)
    want = env.sql("SELECT COUNT(*) AS n FROM loyalty_accounts")[0]["n"]
    return len(records) == want and all(r.get("member") is True for r in records)


def test_custom_data_extension_whose_answer_is_lost(env: Env) -> None:
    ident = loyalty_env(env)
    env.add_mapping(LOYALTY, grown_loyalty())
    extend = f"{DEFS}/{ident}/extend"
    env.sandbox.inject(503, count=1, path_prefix=extend, applied=True)  # applied, then 503
    n = len(env.sandbox.requests)
    res = env.cli("sync")
    assert res.code == 0, res.text
    patches = [(r.path, r.status) for r in env.sandbox.requests[n:] if r.method == "PATCH"]
    assert patches == [(extend, 503), (extend, 400)]  # the retry: "already exists"
    assert "already applied" in res.text
    assert all_have_member(env, ident)


def test_custom_data_extension_then_a_failed_pass(env: Env) -> None:
    ident = loyalty_env(env)
    env.add_mapping(LOYALTY, grown_loyalty())
    env.sandbox.inject(503, count=50, path_prefix=f"/v1/custom-data-records/{ident}")
    assert env.cli("sync").code == 1  # extended, then no record could be sent
    assert any(
        f["name"] == "member" for f in env.sandbox.context.custom.definitions[ident]["fields"]
    )
    env.sandbox.clear_faults()
    assert env.cli("sync").code == 0
    assert all_have_member(env, ident)


def test_custom_data_extension_then_sigkill(env: Env) -> None:
    ident = loyalty_env(env)
    env.add_mapping(LOYALTY, grown_loyalty())
    extend = f"{DEFS}/{ident}/extend"
    env.sandbox.inject_delay(30, count=1, path_prefix=extend)  # its answer never comes in time
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector.cli", "sync", "--config", str(env.config)],
        cwd=env.tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        definition = env.sandbox.context.custom.definitions[ident]
        until(lambda: any(f["name"] == "member" for f in definition["fields"]), 60, "extension")
    finally:
        proc.kill()
        proc.wait(timeout=30)
    env.sandbox.clear_faults()
    assert not all_have_member(env, ident)
    res = env.cli("sync")
    assert res.code == 0, res.text
    assert all_have_member(env, ident)
    assert json.loads(meta(env, f"custom_data_definition:{LOYALTY}") or "{}")["id"] == str(ident)


# --- custom data: rows deleted from the shop ---------------------------------------------------


def test_custom_data_rows_deleted_from_the_shop_are_deleted_by_record_id(env: Env) -> None:
    ident = loyalty_env(env)
    custom = env.sandbox.context.custom
    ids = [r["customer_id"] for r in env.sql("SELECT customer_id FROM loyalty_accounts")]
    gone = sorted(ids, key=str)[:3]
    for cid in gone:
        env.execute("DELETE FROM loyalty_accounts WHERE customer_id = :c", c=cid)
    n = len(env.sandbox.requests)
    res = env.cli("reconcile", "--mapping", LOYALTY)
    assert res.code == 0, res.text
    held = {rec["customer_id"]["value"] for rec in custom.records_of(ident)}
    assert held == {str(c) for c in ids if c not in gone}
    calls = [(r.method, r.path) for r in env.sandbox.requests[n:]]
    assert ("POST", f"/v1/custom-data-records/{ident}/bulk-delete") in calls
    assert ("GET", f"/v1/custom-data-records/{ident}") in calls  # the record ids were learnt
    with env.state() as st:
        deleted = [k for k, _ in st.known_keys(LOYALTY, None, 100, status="deleted")]
        assert sorted(deleted) == sorted(f"[{json.dumps(c)}]" for c in gone)
        assert len(st.remote_ids(LOYALTY, deleted)) == 3  # kept in the state database
    status = env.status()[LOYALTY]
    assert status["known_deleted"] == 3 and status["known_pending"] == 0
    # a second run deletes nothing more and lists nothing
    n = len(env.sandbox.requests)
    assert env.cli("reconcile", "--mapping", LOYALTY).code == 0
    assert not [r for r in env.sandbox.requests[n:] if "bulk-delete" in r.path]


def test_custom_data_records_that_cannot_be_matched_are_reported_stale(env: Env) -> None:
    """When ShopiMind's list shows the unique keys in another form (here: the relation resolved
    to a contact id), no record can be told from another: nothing is deleted, and status and the
    log say how many stale records remain and why."""
    ident = loyalty_env(env)
    custom = env.sandbox.context.custom
    with custom.lock:
        for rec in custom.records[ident].values():
            rec["customer_id"] = 100_000 + int(rec["id"])  # a ShopiMind contact id
    ids = [r["customer_id"] for r in env.sql("SELECT customer_id FROM loyalty_accounts")]
    for cid in sorted(ids, key=str)[:3]:
        env.execute("DELETE FROM loyalty_accounts WHERE customer_id = :c", c=cid)
    before = len(custom.records_of(ident))
    res = env.cli("reconcile", "--mapping", LOYALTY)
    assert res.code == 1
    assert len(custom.records_of(ident)) == before  # nothing deleted
    assert "3 stale record(s) stay on ShopiMind" in res.text
    assert "in another form than the connector sends them" in res.text
    status = env.status()[LOYALTY]
    assert status["known_pending"] == 3 and status["known_deleted"] == 0
    assert "3 stale record(s)" in env.cli("status").out

"""Full pages mapped in worker processes (``sync.map_workers``): the same units as the pass thread
gives, the same records on ShopiMind, and a worker that dies fails the pass with the cursor
safe. Every configured backend (the rows' Python types differ by driver)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector import mapworkers
from connector.config import load_config
from connector.mapworkers import MapPool
from connector.runtime import Runtime
from connector.transform import transform_page
from tests.e2e.harness import MAPPINGS, Env, ServiceProcess, make_env
from tests.unit.test_mapworkers import alive, proc_stat

RESOURCES = sorted(p.stem for p in MAPPINGS.glob("*.toml"))


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    with make_env(db_url, tmp_path, scale=0.3) as e:  # several full pages a mapping
        assert e.cli("db", "upgrade").code == 0
        yield e


def _sync(env: Env, workers: int, page_size: int = 50, **extra: Any) -> None:
    env.write_config(
        sync={
            "mappings_dir": str(env.mappings),
            "page_size": page_size,
            "map_workers": workers,
            **extra,
        }
    )


def test_workers_map_every_bundled_mapping_as_the_pass_thread_does(env: Env) -> None:
    """Each bundled mapping's first page of the demo shop, mapped in a worker and in this
    process: same kinds, keys, positions, hashes, JSON and problems; the item comes back from
    the JSON."""
    _sync(env, 2, page_size=200)
    with Runtime.open(load_config(env.config)) as rt:
        assert rt.map_pool is not None
        compared = 0
        for m in rt.mappings:
            if m.kind != "resource":
                continue
            compiled = rt.compiled[m.name]
            sync = rt.syncer(m.name)
            with rt.reader.session():
                rows = sync._page_rows(None, None)
                kids = sync._children(rows)
            assert rows, m.name
            here = transform_page(compiled, rows, kids)
            there = rt.map_pool.units(compiled, rt.map_pool.submit(compiled, rows, kids))
            assert len(there) == len(here), m.name
            for a, b in zip(here, there, strict=True):
                assert (b.kind, b.key, b.key_text, b.position) == (
                    a.kind,
                    a.key,
                    a.key_text,
                    a.position,
                ), m.name
                assert (b.hash, b.body, b.problems) == (a.hash, a.body, a.problems), m.name
                assert b.payload == a.payload
                compared += 1
        assert compared > 500  # every resource mapping had rows
        assert rt.map_pool.started == 1  # one start, every mapping compiled in the workers


def test_a_backfill_with_workers_sends_what_the_pass_thread_sends(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    used = {"pages": 0}
    real = MapPool.submit

    def counted(self: MapPool, *args: Any) -> Any:
        used["pages"] += 1
        return real(self, *args)

    monkeypatch.setattr(MapPool, "submit", counted)
    env.use_mappings(["customers", "products", "orders"])
    _sync(env, 0)
    assert env.cli("sync").code == 0
    assert used["pages"] == 0  # map_workers = 0: none
    alone = {m: env.sandbox.records(m) for m in ("customers", "products", "orders")}
    env.sandbox.reset()
    (env.tmp / "state.sqlite").unlink()
    assert env.cli("db", "upgrade").code == 0
    _sync(env, 2)
    assert env.cli("sync").code == 0
    assert used["pages"] >= 3  # full pages after the first one went to the workers
    for m, records in alone.items():
        assert env.sandbox.records(m) == records, m
    assert alone["customers"] == env.expected("customers")
    posted = sum(
        r.item_count for r in env.sandbox.requests if r.path.endswith("/orders") and r.status < 300
    )
    assert posted == len(alone["orders"])  # each once


def test_a_worker_killed_mid_backfill_fails_the_pass_with_the_cursor_safe(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.use_mappings(["customers"])
    real = MapPool.submit
    calls = {"n": 0}

    def killing(self: MapPool, *args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # the workers run since the first page submitted: kill one
            os.kill(self.worker_pids()[0], signal.SIGKILL)
            time.sleep(0.5)
        return real(self, *args)

    monkeypatch.setattr(MapPool, "submit", killing)
    _sync(env, 2, page_size=20, max_in_flight=1)
    res = env.cli("sync")
    assert res.code == 1, res.text
    assert "mapping worker process ended unexpectedly" in res.text
    assert "the cursor stays" in res.text
    with env.state() as store:
        cursor = store.get_cursor("customers")
    first = set(env.sandbox.records("customers"))
    assert first  # the pages before the dead worker's were sent and committed
    assert cursor is not None
    # the next pass starts new workers and sends exactly the rest
    env.sandbox.reset()
    assert env.cli("sync").code == 0
    live = {str(r["id"]) for r in env.sql("SELECT id FROM customers WHERE deleted_at IS NULL")}
    assert set(env.sandbox.records("customers")) | first == live
    assert not set(env.sandbox.records("customers")) & first


def _children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        stat = proc_stat(entry.name) if entry.name.isdigit() else None
        if stat is not None and int(stat[1]) == pid and stat[0] != "Z":
            out.append(int(entry.name))
    return out


def test_the_service_stopped_mid_backfill_stops_its_workers_and_loses_nothing(env: Env) -> None:
    """SIGTERM reaches the service and (as systemd sends it to the whole unit) its workers,
    which ignore it: the pass stops after committing what was accepted, the workers are
    stopped by the service, and the next run sends exactly the rest, each row once."""
    env.use_mappings(["customers"])
    _sync(env, 1, poll_interval="0.3s", max_in_flight=1)
    sb, store = env.sandbox, env.sandbox.context.store
    sb.inject_delay(0.5)  # one request at a time, slow: the backfill runs for seconds
    svc = ServiceProcess(env)
    svc.start()
    try:
        assert svc.proc is not None
        pid = svc.proc.pid
        deadline = time.monotonic() + 60
        while not (store.send_counts("customers") and _children_of(pid)):
            assert time.monotonic() < deadline, "the backfill did not start its worker"
            time.sleep(0.02)
        workers = _children_of(pid)
        names = {w: Path(f"/proc/{w}/cmdline").read_bytes()[-80:] for w in workers}
        for w in workers:
            os.kill(w, signal.SIGTERM)
        assert svc.stop() == 0, svc.output()
        # the mapping workers were stopped before the service exited; multiprocessing's
        # resource tracker, also a child, exits when it sees the service gone
        assert not [w for w in workers if alive(w) and b"resource_tracker" not in names[w]]
        deadline = time.monotonic() + 10
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [names[w] for w in workers if alive(w)]
    finally:
        svc.kill()
    sb.clear_faults()
    expected = env.expected("customers")
    assert len(store.send_counts("customers")) < len(expected), "stopped before the end"
    assert env.cli("sync").code == 0
    assert env.sandbox.records("customers") == expected
    assert set(store.send_counts("customers").values()) == {1}


def test_where_worker_processes_cannot_start_the_pass_maps_in_its_own_process(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """E.g. a sandbox without POSIX semaphores: one warning, and the backfill completes."""

    def no_semaphores(*_a: Any, **_k: Any) -> Any:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(mapworkers, "ProcessPoolExecutor", no_semaphores)
    env.use_mappings(["customers"])
    _sync(env, 1)
    res = env.cli("sync")
    assert res.code == 0, res.text
    assert res.text.count("mapping worker processes cannot start here") == 1
    assert "Function not implemented" in res.text
    assert env.sandbox.records("customers") == env.expected("customers")

"""The mapping worker processes (``connector.mapworkers``): what crosses the process boundary,
when workers start and stop, and that none outlives the connector's process."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from connector.errors import SourceError
from connector.mapping import CompiledMapping, load_mapping_file
from connector.mapping.compile import MissingColumn
from connector.mapping.spec import NO_DEFAULT
from connector.mapworkers import MapPool, default_workers
from connector.source.query import CURSOR_LABEL
from connector.transform import Unit, group_children, transform_page
from tests.unit.test_recent import PRODUCTS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def compiled(tmp_path: Path) -> CompiledMapping:
    path = tmp_path / "products.toml"
    path.write_text(textwrap.dedent(PRODUCTS), encoding="utf-8")
    return CompiledMapping(load_mapping_file(path), ZoneInfo("Europe/Paris"))


@pytest.fixture
def pool() -> Iterator[MapPool]:
    p = MapPool(1, idle_after=0.3)
    try:
        yield p
    finally:
        p.close()


def _page(n: int, *, bad: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    at = datetime(2026, 11, 27, 10, 0)
    rows = [
        {
            "id": i,
            "lang": "fr",
            "name": "Kettle" if i != bad else None,  # name is required: a local reject
            "price": 19.5 + i,
            "updated_at": at,
            CURSOR_LABEL: at,
        }
        for i in range(1, n + 1)
    ]
    kids = [{"product_id": i, "category_id": i % 7} for i in range(1, n + 1)]
    return rows, {"category_ids": kids}


def _grouped(compiled: CompiledMapping, kids: dict[str, Any]) -> dict[str, Any]:
    return {
        name: group_children(compiled.mapping.children[name], rows) for name, rows in kids.items()
    }


def test_the_no_default_marker_stays_one_object_through_pickle() -> None:
    assert pickle.loads(pickle.dumps(NO_DEFAULT)) is NO_DEFAULT


def test_a_worker_gives_the_units_this_process_gives_and_the_item_comes_back_from_json(
    compiled: CompiledMapping, pool: MapPool
) -> None:
    rows, kids = _page(40, bad=7)
    children = _grouped(compiled, kids)
    here = transform_page(compiled, rows, children)
    there = pool.units(compiled, pool.submit(compiled, rows, children))
    assert [u._replace(item=None) for u in here] == there
    assert [u.kind for u in there].count("reject") == 1
    assert all(u.item is None and u.payload == h.item for u, h in zip(there, here, strict=True))


def test_a_column_the_rows_lack_crosses_back_as_the_mapping_problem(
    compiled: CompiledMapping, pool: MapPool
) -> None:
    rows, kids = _page(3)
    for r in rows:
        del r["price"]
    with pytest.raises(MissingColumn) as err:
        pool.units(compiled, pool.submit(compiled, rows, _grouped(compiled, kids)))
    assert err.value.column == "price"
    assert "fields.price" in err.value.path


def test_workers_start_on_demand_stop_when_idle_and_start_again(
    compiled: CompiledMapping, pool: MapPool
) -> None:
    rows, kids = _page(5)
    children = _grouped(compiled, kids)
    assert pool.worker_pids() == [] and pool.started == 0
    with pool.using():
        pool.units(compiled, pool.submit(compiled, rows, children))
        pids = pool.worker_pids()
        assert len(pids) == 1
        time.sleep(0.6)  # in use: not stopped however long
        assert pool.worker_pids() == pids
    deadline = time.monotonic() + 10
    while (pool.worker_pids() or alive(pids[0])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.worker_pids() == []  # idle_after (0.3 s) after the last user left
    assert not alive(pids[0])  # the process itself has exited
    with pool.using():
        assert len(pool.units(compiled, pool.submit(compiled, rows, children))) == 5
    assert pool.started == 2


def test_a_killed_worker_is_a_source_error_and_the_next_page_gets_a_new_one(
    compiled: CompiledMapping, pool: MapPool
) -> None:
    rows, kids = _page(5)
    children = _grouped(compiled, kids)
    pool.units(compiled, pool.submit(compiled, rows, children))
    (pid,) = pool.worker_pids()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(SourceError) as err:
        for _ in range(50):  # the pool notices the death within moments
            pool.units(compiled, pool.submit(compiled, rows, children))
            time.sleep(0.05)
    assert "worker process ended unexpectedly" in str(err.value)
    assert "the cursor stays" in str(err.value)
    units: list[Unit] = pool.units(compiled, pool.submit(compiled, rows, children))
    assert len(units) == 5 and pool.started == 2


def test_workers_exit_when_the_connector_process_is_killed(tmp_path: Path) -> None:
    """SIGKILL gives the connector no chance to stop its workers: they notice and exit."""
    script = tmp_path / "owner.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, textwrap, time
            from pathlib import Path
            from zoneinfo import ZoneInfo
            sys.path.insert(0, {str(REPO)!r})
            from connector.mapping import CompiledMapping, load_mapping_file
            from connector.mapworkers import MapPool
            from tests.unit.test_mapworkers import _page
            from tests.unit.test_recent import PRODUCTS
            if __name__ == "__main__":
                path = Path({str(tmp_path)!r}) / "products.toml"
                path.write_text(textwrap.dedent(PRODUCTS), encoding="utf-8")
                compiled = CompiledMapping(load_mapping_file(path), ZoneInfo("UTC"))
                pool = MapPool(2)
                rows, kids = _page(3)
                pool.units(compiled, pool.submit(compiled, rows, {{}}))
                pool.units(compiled, pool.submit(compiled, rows, {{}}))
                print(*pool.worker_pids(), flush=True)
                time.sleep(60)
            """
        ),
        encoding="utf-8",
    )
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert pids and all(alive(p) for p in pids)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(p) for p in pids)
    finally:
        owner.kill()


def test_the_default_leaves_a_core_to_the_connector_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for cores, workers in ((1, 0), (2, 1), (3, 2), (4, 3), (16, 4)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert default_workers() == workers


def proc_stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, parent pid, ...); None once
    the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped by its parent, counts as gone)."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"

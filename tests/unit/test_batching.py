"""PageWriter: several batches in flight, committed strictly in order; a failure never lets the
cursor pass a batch that was not accepted."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from connector.batching import PageWriter
from connector.destination.client import BatchResult
from connector.errors import DeliveryError
from connector.mapping import CompiledMapping, load_mapping_file
from connector.state.model import Cursor, RunCounts, key_json
from connector.state.store import StateStore
from connector.transform import Unit

MAPPING = """
resource = "products_manufacturers"
[source]
table = "manufacturers"
key = "id"
cursor = "updated_at"
[fields]
manufacturer_id = "id"
name = "name"
is_active = { const = true }
created_at = "updated_at"
updated_at = "updated_at"
"""


class FakeClient:
    """Answers each batch after a random delay; batches whose first id is in ``fail`` fail."""

    def __init__(self, fail: set[int] = frozenset(), delay: float = 0.02, seed: int = 1) -> None:  # type: ignore[assignment]
        self.fail = fail
        self.delay = delay
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.sent: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def in_flight_target(self, cap: int) -> int:
        return cap

    def send_items(self, path: str, items: list[dict[str, Any]], *, what: str = "") -> BatchResult:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            pause = self.rng.uniform(0, self.delay)
        time.sleep(pause)
        with self.lock:
            self.in_flight -= 1
            first = int(items[0]["manufacturer_id"])
            if first in self.fail:
                raise DeliveryError(f"batch starting at {first}: HTTP 503; gave up")
            self.sent.extend(int(i["manufacturer_id"]) for i in items)
        return BatchResult(sent_count=len(items), requests=1)


class SpyStore(StateStore):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.cursors: list[Any] = []

    def commit_batch(
        self, mapping: str, *, accepted: Any, rejects: Any, cursor: Any, resolve: bool = True
    ) -> None:
        if cursor is not None:
            self.cursors.append(cursor.value)
        super().commit_batch(
            mapping, accepted=accepted, rejects=rejects, cursor=cursor, resolve=resolve
        )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SpyStore]:
    s = SpyStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    s.upgrade()
    yield s
    s.close()


@pytest.fixture
def compiled(tmp_path: Path) -> CompiledMapping:
    p = tmp_path / "manufacturers.toml"
    p.write_text(MAPPING)
    return CompiledMapping(load_mapping_file(p), ZoneInfo("UTC"))


def units(n: int) -> list[Unit]:
    out = []
    for i in range(1, n + 1):
        item = {"manufacturer_id": str(i), "name": f"m{i}"}
        out.append(Unit("send", (i,), key_json((i,)), (i, (i,)), item, f"{i:064x}"))
    return out


def writer(
    compiled: CompiledMapping, client: FakeClient, store: StateStore, pool: Any
) -> PageWriter:
    return PageWriter(
        compiled,
        client=client,  # type: ignore[arg-type]
        store=store,
        counts=RunCounts(),
        stop=threading.Event(),
        saved=None,
        pool=pool,
        max_in_flight=4,
    )


def test_batches_in_flight_commit_in_order(compiled: CompiledMapping, store: SpyStore) -> None:
    client = FakeClient(delay=0.05)
    us = units(1000)  # 10 batches of 100
    with ThreadPoolExecutor(8) as pool:
        w = writer(compiled, client, store, pool)
        w.write(us[:500], [{}] * 500)
        w.write(us[500:], [{}] * 500)
        w.finish()
    assert sorted(client.sent) == list(range(1, 1001))
    assert client.max_in_flight > 1  # really pipelined
    assert client.max_in_flight <= 4
    assert store.cursors == sorted(store.cursors)  # never backwards, in order
    assert store.cursors[-1] == 1000
    assert store.get_cursor("manufacturers") == Cursor(1000, (1000,))
    assert w.counts.accepted == 1000 and w.counts.requests == 10


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_failed_batch_stops_the_cursor_before_it(
    compiled: CompiledMapping, store: SpyStore, seed: int
) -> None:
    client = FakeClient(fail={301}, delay=0.05, seed=seed)  # the 4th batch fails
    with ThreadPoolExecutor(8) as pool:
        w = writer(compiled, client, store, pool)
        with pytest.raises(DeliveryError, match="batch starting at 301"):
            w.write(units(1000), [{}] * 1000)
            w.finish()
    assert store.get_cursor("manufacturers") == Cursor(300, (300,))
    assert max(store.cursors) == 300
    # batches accepted after the failed one keep their hashes: they will not be re-sent
    hashes = store.get_hashes("manufacturers", [key_json((i,)) for i in range(1, 1001)])
    accepted_after = {i for i in client.sent if i > 400}
    assert {int(k.strip("[]")) for k in hashes} == set(range(1, 301)) | accepted_after
    assert not any(301 <= i <= 400 for i in client.sent)


def test_sequential_mode_without_pool(compiled: CompiledMapping, store: SpyStore) -> None:
    client = FakeClient(fail={201}, delay=0.0)
    w = writer(compiled, client, store, None)
    with pytest.raises(DeliveryError):
        w.write(units(500), [{}] * 500)
    assert store.get_cursor("manufacturers") == Cursor(200, (200,))
    assert client.sent == list(range(1, 201))  # nothing after the failure was sent


def test_delivered_batches_share_state_transactions(
    compiled: CompiledMapping, store: SpyStore
) -> None:
    """Up to GROUP_BATCHES delivered batches are recorded in one state transaction; ``finish``
    records the rest."""
    client = FakeClient(delay=0.0)
    w = writer(compiled, client, store, None)
    w.write(units(1200), [{}] * 1200)  # 12 batches of 100
    w.write(units(2500)[1200:], [{}] * 1300)
    assert store.cursors == [1000, 2000]  # two transactions of 10 batches so far
    assert store.get_cursor("manufacturers") == Cursor(2000, (2000,))
    w.finish()
    assert store.cursors == [1000, 2000, 2500]
    assert len(store.get_hashes("manufacturers", [key_json((i,)) for i in range(1, 2501)])) == 2500


def test_grouped_commits_with_batches_in_flight(compiled: CompiledMapping, store: SpyStore) -> None:
    client = FakeClient(delay=0.01)
    with ThreadPoolExecutor(8) as pool:
        w = writer(compiled, client, store, pool)
        for i in range(0, 3000, 500):
            w.write(units(3000)[i : i + 500], [{}] * 500)
        w.finish()
    assert store.cursors == sorted(store.cursors) and store.cursors[-1] == 3000
    assert len(store.cursors) < 30  # fewer transactions than batches
    assert w.counts.accepted == 3000

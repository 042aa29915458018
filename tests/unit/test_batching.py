"""PageWriter: several batches in flight, committed strictly in order; a failure never lets the
cursor pass a batch that was not accepted."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from connector.batching import PageWriter
from connector.destination.client import BatchResult
from connector.errors import DeliveryError, StateError
from connector.mapping import CompiledMapping, load_mapping_file
from connector.state.model import Cursor, RunCounts, key_json
from connector.state.store import StateStore
from connector.transform import Unit, payload_hash, transform_page

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

        self.sizes: list[int] = []  # items of each accepted upsert request
        self.deleted: list[int] = []
        self.delete_calls: list[list[int]] = []
        self.fail_delete: set[int] = set()  # a delete request holding one of these ids fails

    def in_flight_target(self, cap: int) -> int:
        return cap

    def delete_ids(self, path: str, body_key: str, ids: list[Any], *, what: str = "") -> None:
        with self.lock:
            pause = self.rng.uniform(0, self.delay)
        time.sleep(pause)
        with self.lock:
            got = [int(i) for i in ids]
            if self.fail_delete & set(got):
                raise DeliveryError(f"delete of {got}: HTTP 503; gave up")
            self.delete_calls.append(got)
            self.deleted.extend(got)

    def send_items(
        self, path: str, items: list[dict[str, Any]], *, what: str = "", encoded: object = None
    ) -> BatchResult:
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
            self.sizes.append(len(items))
        return BatchResult(sent_count=len(items), requests=1)


class SpyStore(StateStore):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.cursors: list[Any] = []
        self.on_cursor: Any = None  # called with each cursor value committed
        self.announced: set[str] = set()
        self.threads: set[int] = set()  # that announced
        self.announce_delay = 0.0
        self.fail_with: str | None = None  # an announce holding this key fails
        self.lock = threading.Lock()

    def announce(self, mapping: str, keys: Any) -> None:
        time.sleep(self.announce_delay)
        if self.fail_with in keys:
            raise StateError("state database: disk I/O error")
        super().announce(mapping, keys)
        with self.lock:
            self.announced.update(keys)
            self.threads.add(threading.get_ident())

    def commit_batch(
        self, mapping: str, *, accepted: Any, rejects: Any, cursor: Any, resolve: bool = True
    ) -> None:
        if cursor is not None:
            self.cursors.append(cursor.value)
            if self.on_cursor is not None:
                self.on_cursor(cursor.value)
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


# --- deletes held across batches --------------------------------------------------------------


def mixed(n: int, deleted: set[int]) -> tuple[list[Unit], list[dict[str, Any]]]:
    """Rows 1..n in cursor order; those in ``deleted`` are soft-deleted."""
    us, rows = [], []
    for u in units(n):
        i = u.key[0]
        if i in deleted:
            u = Unit("delete", u.key, u.key_text, u.position)
        us.append(u)
        rows.append({"id": i})
    return us, rows


def guard(store: SpyStore, client: FakeClient, units_: list[Unit]) -> list[str]:
    """Check at every cursor commit that each row up to it was accepted by the API."""
    problems: list[str] = []

    def check(value: int) -> None:
        with client.lock:
            done = set(client.sent) | set(client.deleted)
        missing = [u.key[0] for u in units_ if u.key[0] <= value and u.key[0] not in done]
        if missing:
            problems.append(f"cursor {value} passed rows not accepted: {missing[:5]}")

    store.on_cursor = check
    return problems


def write_pages(w: PageWriter, us: list[Unit], rows: list[dict[str, Any]], page: int) -> None:
    for i in range(0, len(us), page):
        w.write(us[i : i + page], rows[i : i + page])


def backfill(
    compiled: CompiledMapping, client: FakeClient, store: SpyStore, us: list[Unit], page: int
) -> tuple[PageWriter, list[str]]:
    """Write ``us`` in pages on a pool and finish; the writer and the cursor guard's problems."""
    problems = guard(store, client, us)
    with ThreadPoolExecutor(8) as pool:
        w = writer(compiled, client, store, pool)
        write_pages(w, us, [{"id": u.key[0]} for u in us], page)
        w.finish()
    return w, problems


@pytest.mark.parametrize("seed", [1, 2])
def test_deletes_are_grouped_across_batches_and_upserts_stay_full(
    compiled: CompiledMapping, store: SpyStore, seed: int
) -> None:
    gone = {i for i in range(1, 2001) if i % 37 == 0 or i in (1, 2, 1999)}  # 57 deletes
    client = FakeClient(delay=0.02, seed=seed)
    w, problems = backfill(compiled, client, store, mixed(2000, gone)[0], 500)
    assert problems == []
    assert sorted(client.deleted) == sorted(gone)  # everything was sent in the end
    assert sorted(client.sent) == sorted(set(range(1, 2001)) - gone)
    assert sorted(len(c) for c in client.delete_calls) == [17, 20, 20]  # not one per batch
    assert w.counts.requests == 20 + 3  # 1943 upserts: 19 full batches of 100 and one of 43
    assert w.counts.deleted == 57
    assert store.cursors == sorted(store.cursors)
    assert store.get_cursor("manufacturers") == Cursor(2000, (2000,))
    known = store.get_records("manufacturers", [key_json((i,)) for i in gone])
    assert {st for st, _ in known.values()} == {"deleted"} and len(known) == len(gone)


def test_upsert_batches_stay_full_when_deletes_fill_up(
    compiled: CompiledMapping, store: SpyStore
) -> None:
    """Deletes reaching the limit go out alone; the open upsert batch is not cut short."""
    gone = set(range(2, 1000, 3))  # a third of the rows
    client = FakeClient(delay=0.01)
    _w, problems = backfill(compiled, client, store, mixed(1000, gone)[0], 250)
    assert problems == []
    assert client.sizes[:-1] == [100] * (len(client.sizes) - 1)
    assert sum(client.sizes) == 1000 - len(gone)
    assert all(len(c) == 20 for c in client.delete_calls[:-1])
    assert sorted(client.deleted) == sorted(gone)
    assert store.get_cursor("manufacturers") == Cursor(1000, (1000,))


def test_sequential_writer_never_commits_past_a_held_delete(
    compiled: CompiledMapping, store: SpyStore
) -> None:
    """Without a pool, batches are committed as soon as GROUP_BATCHES are sent: a cursor saved
    while deletes are held stops just before the first of them."""
    us, rows = mixed(1250, {5, 150, 260})
    client = FakeClient(delay=0.0)
    problems = guard(store, client, us)
    w = writer(compiled, client, store, None)
    write_pages(w, us, rows, 100)
    assert client.deleted == []  # held: 3 deletes are fewer than 20
    assert len(client.sent) == 1200  # 12 full upsert batches were sent, 10 committed...
    assert store.cursors == [4]  # ...but none moved the cursor past row 5
    w.finish()
    assert problems == []
    assert client.delete_calls == [[5, 150, 260]]
    assert store.cursors[-1] == 1250


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_stopped_pass_does_not_commit_past_unsent_deletes(
    compiled: CompiledMapping, store: SpyStore, seed: int
) -> None:
    gone = {i for i in range(1, 1501) if i % 41 == 0}
    us, rows = mixed(1500, gone)
    client = FakeClient(delay=0.03, seed=seed)
    problems = guard(store, client, us)
    with ThreadPoolExecutor(8) as pool:
        w = writer(compiled, client, store, pool)
        write_pages(w, us[:1000], rows[:1000], 250)
        w.stop.set()
        write_pages(w, us[1000:], rows[1000:], 250)
        w.finish()
    assert problems == []
    held = min(i for i in gone if i not in client.deleted)  # 1000 rows: 24 deletes, 20 sent
    assert held == 861
    cursor = store.get_cursor("manufacturers")
    assert cursor is not None and cursor.value < held
    assert cursor.value == 860  # upserts up to 900 were sent: the cursor stops before 861


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_failed_delete_stops_the_cursor_before_it(
    compiled: CompiledMapping, store: SpyStore, seed: int
) -> None:
    gone = {i for i in range(1, 1001) if i % 23 == 0}  # 43: deletes of 20, 20, 3
    us, rows = mixed(1000, gone)
    client = FakeClient(delay=0.03, seed=seed)
    client.fail_delete = {483}  # the second group of deletes, 483..920, fails
    problems = guard(store, client, us)
    with ThreadPoolExecutor(8) as pool:
        w = writer(compiled, client, store, pool)
        with pytest.raises(DeliveryError, match="delete of"):
            write_pages(w, us, rows, 250)
            w.finish()
    assert problems == []
    cursor = store.get_cursor("manufacturers")
    assert cursor is not None and cursor.value < 483
    assert 483 not in client.deleted
    # upserts accepted after the failed delete still record their hashes
    hashes = store.get_hashes("manufacturers", [key_json((i,)) for i in client.sent])
    assert len(hashes) == len(client.sent)


def test_a_failed_delete_with_upserts_keeps_them_but_not_the_cursor(
    compiled: CompiledMapping, store: SpyStore
) -> None:
    """The last batch carries upserts and the held deletes; the deletes fail after the upserts
    were accepted: the upserts are recorded, the cursor stays before the batch."""
    us, rows = mixed(150, {120})
    client = FakeClient(delay=0.0)
    client.fail_delete = {120}
    with ThreadPoolExecutor(4) as pool:
        w = writer(compiled, client, store, pool)
        with pytest.raises(DeliveryError, match="delete of"):
            w.write(us, rows)
            w.finish()
    assert store.get_cursor("manufacturers") == Cursor(100, (100,))
    assert sorted(client.sent) == [i for i in range(1, 151) if i != 120]
    hashes = store.get_hashes("manufacturers", [key_json((i,)) for i in range(101, 151)])
    assert len(hashes) == 49


def test_a_row_read_twice_keeps_its_later_version(
    compiled: CompiledMapping, store: SpyStore
) -> None:
    """Changed while the pass ran, a row is read again later: a held delete is dropped when the
    row comes back, and an unsent upsert is dropped when the row is then deleted."""
    us, rows = mixed(60, {10})
    back = Unit("send", (10,), key_json((10,)), (61, (10,)), {"manufacturer_id": "10"}, "a" * 64)
    gone = Unit("delete", (20,), key_json((20,)), (62, (20,)))
    client = FakeClient(delay=0.0)
    with ThreadPoolExecutor(4) as pool:
        w = writer(compiled, client, store, pool)
        w.write(us, rows)
        w.write([back, gone], [{"id": 10}, {"id": 20}])
        w.finish()
    assert client.deleted == [20]
    assert sorted(client.sent) == [i for i in range(1, 61) if i != 20]
    records = store.get_records("manufacturers", [key_json((10,)), key_json((20,))])
    assert records[key_json((10,))] == ("sent", "a" * 64)
    assert records[key_json((20,))][0] == "deleted"
    assert store.get_cursor("manufacturers") == Cursor(62, (20,))


class SlowHead(FakeClient):
    """The batch starting at row 1 is answered only once ``release`` is set."""

    def __init__(self) -> None:
        super().__init__(delay=0.005)
        self.release = threading.Event()
        self.before_release = -1  # batches answered while the first one was still in flight

    def send_items(
        self, path: str, items: list[dict[str, Any]], *, what: str = "", encoded: object = None
    ) -> BatchResult:
        if items[0]["manufacturer_id"] == "1":
            self.release.wait(5)
            with self.lock:
                self.before_release = len(self.sizes)
        return super().send_items(path, items, what=what)


def test_a_slow_batch_does_not_hold_back_the_ones_after_it(
    compiled: CompiledMapping, store: SpyStore
) -> None:
    """With 4 in flight, the writer goes on sending while the oldest batch is unanswered (up to
    its backlog of 4 x 4 batches); the cursor waits for the oldest one."""
    client = SlowHead()

    def release_when_busy() -> None:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and len(client.sizes) < 12:
            time.sleep(0.01)
        client.release.set()

    helper = threading.Thread(target=release_when_busy)
    helper.start()
    with ThreadPoolExecutor(8) as pool:
        w = writer(compiled, client, store, pool)
        w.write(units(2000), [{}] * 2000)
        w.finish()
    helper.join()
    assert client.before_release >= 12  # waiting for the oldest batch only: 3
    assert client.max_in_flight <= 4
    assert store.cursors == sorted(store.cursors)
    assert store.get_cursor("manufacturers") == Cursor(2000, (2000,))
    assert sorted(client.sent) == list(range(1, 2001))


class CheckAnnounced(FakeClient):
    """Notes every item sent before its key was announced."""

    def __init__(self, store: SpyStore) -> None:
        super().__init__(delay=0.01)
        self.store = store
        store.announce_delay = 0.05
        self.early: list[int] = []

    def send_items(
        self, path: str, items: list[dict[str, Any]], *, what: str = "", encoded: object = None
    ) -> BatchResult:
        with self.store.lock:
            ids = [int(i["manufacturer_id"]) for i in items]
            self.early += [i for i in ids if key_json((i,)) not in self.store.announced]
        return super().send_items(path, items, what=what)


def test_new_keys_are_announced_on_the_pool_before_they_are_sent(
    compiled: CompiledMapping, store: SpyStore
) -> None:
    client = CheckAnnounced(store)
    _w, problems = backfill(compiled, client, store, units(1000), 200)
    assert problems == [] and client.early == []
    assert threading.get_ident() not in store.threads  # not on the writing thread
    assert len(store.announced) == 1000
    assert store.get_cursor("manufacturers") == Cursor(1000, (1000,))


def test_a_failed_announce_sends_nothing_after_it(
    compiled: CompiledMapping, store: SpyStore
) -> None:
    store.fail_with = key_json((450,))  # the announce of rows 401..600
    client = CheckAnnounced(store)
    with (
        pytest.raises(StateError, match="disk I/O"),
        ThreadPoolExecutor(8) as pool,
    ):
        w = writer(compiled, client, store, pool)
        write_pages(w, units(1000), [{}] * 1000, 200)
        w.finish()
    assert client.early == []
    assert max(client.sent) <= 400  # batches after it wait for it, then fail
    cursor = store.get_cursor("manufacturers")
    assert cursor is not None and cursor.value <= 400


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


def test_a_small_in_flight_cap_still_commits_grouped_batches(
    compiled: CompiledMapping, store: SpyStore
) -> None:
    """With max_in_flight = 2 the backlog of finished batches (4 x 2) is smaller than a commit
    group: the writer commits the done head instead of waiting for a full group (it used to spin
    forever here)."""
    client = FakeClient(delay=0.01)
    with ThreadPoolExecutor(2) as pool:
        w = writer(compiled, client, store, pool)
        w.max_in_flight = 2
        done = threading.Event()

        def run() -> None:
            for i in range(0, 3000, 500):
                w.write(units(3000)[i : i + 500], [{}] * 500)
            w.finish()
            done.set()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        assert done.wait(30), "the writer did not finish"
    assert store.cursors == sorted(store.cursors) and store.cursors[-1] == 3000
    assert w.counts.accepted == 3000


def test_a_sent_unit_carries_the_json_its_hash_is_made_of(compiled: CompiledMapping) -> None:
    """The request body reuses each unit's canonical JSON: it must be the item, and the very
    text its payload hash is computed from (so what is sent is what is recorded as accepted)."""
    rows = [{"id": 7, "name": "Acmé \u2603", "updated_at": datetime(2026, 5, 7, 8, 0)}]
    (unit,) = transform_page(compiled, rows, {})
    assert unit.kind == "send" and unit.item is not None
    assert json.loads(unit.body) == unit.item
    assert hashlib.sha256(unit.body).hexdigest() == unit.hash == payload_hash(unit.item)

"""Contract of the state database, run on every configured backend (see ``conftest.db_url``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from connector.errors import StateError, StateSchemaError, StateUnusableError
from connector.state import migrate
from connector.state import tables as t
from connector.state.model import Accepted, Cursor, Reject, RunCounts, key_json
from connector.state.store import StateStore
from tests.conftest import configured_backends, private_url, wipe

H1, H2, H3 = "1" * 64, "2" * 64, "3" * 64
LONG_KEY = key_json(("x" * 300, 1))


def k(*parts: Any) -> str:
    return key_json(parts)


@pytest.fixture
def fresh(db_url: str) -> Iterator[StateStore]:
    store = StateStore(db_url)
    yield store
    store.close()


@pytest.fixture
def store(fresh: StateStore) -> StateStore:
    fresh.upgrade()
    return fresh


def reject(key: str, payload: Any = None, errors: Any = None, mapping: str = "m") -> Reject:
    return Reject(mapping, key, payload if payload is not None else {"k": key}, errors or ["bad"])


# -- schema ---------------------------------------------------------------------------------------


def test_fresh_database_needs_upgrade_then_is_current(fresh: StateStore, db_url: str) -> None:
    head = StateStore.head_revision()
    assert fresh.schema_revision() is None
    with pytest.raises(StateSchemaError, match="db upgrade") as info:
        fresh.ensure_current()
    assert "no connector schema" in str(info.value)
    with pytest.raises(StateSchemaError, match=r"db upgrade --config /etc/shop\.toml"):
        fresh.ensure_current("/etc/shop.toml")

    assert fresh.upgrade() == (None, head)
    fresh.ensure_current()
    assert fresh.schema_revision() == head
    assert fresh.upgrade() == (head, head)  # a no-op the second time
    assert migrate.upgrade(db_url) == (head, head)


def test_schema_from_a_newer_version_is_refused(store: StateStore) -> None:
    with store._tx() as conn:
        conn.execute(sa.text("UPDATE connector_alembic_version SET version_num = '9999'"))
    assert store.schema_revision() == "9999"
    with pytest.raises(StateSchemaError, match=r"9999.*newer version"):
        store.ensure_current()
    with pytest.raises(StateSchemaError, match="9999"):
        store.upgrade()


def test_tables_module_matches_the_migrations(store: StateStore) -> None:
    def ours(name: str | None, type_: str, _parent: Any) -> bool:
        return type_ != "table" or (name or "").startswith("connector_")

    with store._read() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "version_table": migrate.VERSION_TABLE,
                "compare_type": True,
                "include_name": ours,
            },
        )
        assert compare_metadata(context, t.metadata) == []


# -- cursors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cursor",
    [
        Cursor(datetime(2024, 2, 29, 23, 59, 59, 999999), (17,)),
        Cursor(datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=2))), (1,)),
        Cursor(123456789012345, (123456789012345,)),
        Cursor(Decimal("12345678901234567890.000000001"), ("a",)),
        Cursor(datetime(2024, 1, 1, 0, 0, 0, 1), ("shop-é", 42)),
    ],
    ids=["naive-us", "aware", "int", "decimal", "composite"],
)
def test_cursor_round_trip_keeps_full_precision(store: StateStore, cursor: Cursor) -> None:
    assert store.get_cursor("m") is None
    store.set_cursor("m", cursor)
    got = store.get_cursor("m")
    assert got == cursor
    assert got is not None
    assert type(got.value) is type(cursor.value)
    assert getattr(got.value, "tzinfo", None) == getattr(cursor.value, "tzinfo", None)

    store.set_cursor("m", Cursor(1, (2,)))  # overwrite
    assert store.get_cursor("m") == Cursor(1, (2,))
    store.set_cursor("m", None)  # reset
    assert store.get_cursor("m") is None


# -- records and rejects --------------------------------------------------------------------------


def test_hashes_only_for_accepted_keys(store: StateStore) -> None:
    store.commit_batch(
        "m",
        accepted=[Accepted(k(1), H1), Accepted(k(2), H2), Accepted(k(2), H3)],
        rejects=[reject(k(3))],
        cursor=Cursor(3, (3,)),
    )
    store.commit_batch("other", accepted=[Accepted(k(4), H1)], rejects=[], cursor=None)
    assert store.get_hashes("m", [k(1), k(2), k(3), k(4)]) == {k(1): H1, k(2): H3}
    assert store.get_hashes("m", []) == {}
    assert store.get_cursor("m") == Cursor(3, (3,))
    assert store.get_cursor("other") is None

    store.commit_batch("m", accepted=[Accepted(k(1), H2)], rejects=[], cursor=None)
    assert store.get_hashes("m", [k(1)]) == {k(1): H2}


def test_keys_are_case_sensitive(store: StateStore) -> None:
    store.commit_batch(
        "m", accepted=[Accepted(k("a"), H1), Accepted(k("A"), H2)], rejects=[], cursor=None
    )
    assert store.get_hashes("m", [k("a"), k("A")]) == {k("a"): H1, k("A"): H2}


def test_get_hashes_handles_more_keys_than_one_chunk(store: StateStore) -> None:
    keys = [k(i) for i in range(1234)]
    store.commit_batch("m", accepted=[Accepted(x, H1) for x in keys], rejects=[], cursor=None)
    assert store.get_hashes("m", [*keys, k("missing")]) == dict.fromkeys(keys, H1)


@pytest.mark.parametrize("failing_step", ["store_rejects", "save_cursor"])
def test_commit_batch_is_all_or_nothing(
    store: StateStore, monkeypatch: pytest.MonkeyPatch, failing_step: str
) -> None:
    store.commit_batch(
        "m", accepted=[Accepted(k(1), H1)], rejects=[reject(k(2))], cursor=Cursor(1, (1,))
    )
    original: Callable[..., None] = getattr(t, failing_step)

    def write_then_fail(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        raise sa.exc.OperationalError("INSERT ...", {}, Exception("disk I/O error"))

    monkeypatch.setattr(t, failing_step, write_then_fail)
    with pytest.raises(StateError, match="disk I/O error") as info:
        store.commit_batch(
            "m",
            accepted=[Accepted(k(1), H2), Accepted(k(2), H2), Accepted(k(5), H2)],
            rejects=[reject(k(3)), reject(k(4))],
            cursor=Cursor(9, (9,)),
        )
    assert isinstance(info.value.__cause__, sa.exc.SQLAlchemyError)
    monkeypatch.undo()

    assert store.get_hashes("m", [k(i) for i in range(1, 6)]) == {k(1): H1}
    assert store.get_cursor("m") == Cursor(1, (1,))
    assert [(r.key, r.attempts) for r in store.list_rejects("m")] == [(k(2), 1)]


def test_reject_payload_that_is_not_json_is_kept_as_text(store: StateStore) -> None:
    odd = {"amount": Decimal("1.10"), "when": datetime(2024, 1, 1), "obj": object()}
    store.commit_batch("m", accepted=[], rejects=[reject(k(1), payload=odd)], cursor=None)
    (got,) = store.list_rejects("m")
    assert got.payload["amount"] == "1.10"
    assert got.payload["when"].startswith("2024-01-01")


def test_rejects_are_refreshed_then_resolved_by_acceptance(store: StateStore) -> None:
    first = Reject("m", k(1), {"v": 1}, [{"field": "email", "error": "invalid"}], source="local")
    store.commit_batch("m", accepted=[], rejects=[first], cursor=None)
    (r1,) = store.list_rejects("m")
    assert (r1.mapping, r1.key, r1.payload, r1.errors, r1.source, r1.attempts) == (
        "m",
        k(1),
        {"v": 1},
        [{"field": "email", "error": "invalid"}],
        "local",
        1,
    )
    assert r1.first_seen.tzinfo is UTC

    store.commit_batch(
        "m", accepted=[], rejects=[reject(k(1), {"v": 2}, ["again"]), reject("")], cursor=None
    )
    assert store.count_rejects("m") == 2
    r2 = next(r for r in store.list_rejects("m") if r.key == k(1))
    assert (r2.id, r2.attempts, r2.payload, r2.errors, r2.source) == (
        r1.id,
        2,
        {"v": 2},
        ["again"],
        "api",
    )
    assert r2.first_seen == r1.first_seen
    assert r2.last_seen >= r1.last_seen

    store.commit_batch("m", accepted=[Accepted(k(1), H1)], rejects=[], cursor=None)
    assert store.count_rejects("m") == 1
    assert [r.key for r in store.list_rejects("m")] == [""]
    resolved = store.list_rejects("m", include_resolved=True)
    assert {r.key for r in resolved} == {k(1), ""}

    store.commit_batch("m", accepted=[], rejects=[reject(k(1))], cursor=None)  # rejected anew
    again = next(r for r in store.list_rejects("m") if r.key == k(1))
    assert again.id != r1.id and again.attempts == 1
    assert len(store.list_rejects(None, limit=10, include_resolved=True)) == 3
    assert len(store.list_rejects(limit=1)) == 1


def test_reject_of_another_mapping_is_a_programming_error(store: StateStore) -> None:
    with pytest.raises(ValueError, match="mapping"):
        store.commit_batch("m", accepted=[], rejects=[reject(k(1), mapping="n")], cursor=None)


def test_commit_deleted_marks_records_and_resolves_rejects(store: StateStore) -> None:
    store.commit_batch(
        "m", accepted=[Accepted(k(1), H1), Accepted(k(2), H2)], rejects=[reject(k(3))], cursor=None
    )
    store.commit_deleted("m", [k(1), k(3), k(4), k(4)], Cursor(7, (7,)))
    assert store.get_hashes("m", [k(1), k(2), k(3), k(4)]) == {k(2): H2}
    assert store.known_keys("m", None, 10) == [(k(2), "sent")]
    assert store.count_rejects("m") == 0
    assert store.get_cursor("m") == Cursor(7, (7,))
    (st,) = store.status(["m"])
    assert (st.known_sent, st.known_deleted) == (1, 3)

    store.commit_batch("m", accepted=[Accepted(k(1), H3)], rejects=[], cursor=None)  # re-created
    assert store.get_hashes("m", [k(1)]) == {k(1): H3}


def test_known_keys_pages_in_key_order(store: StateStore) -> None:
    keys = [k(i) for i in range(12)] + [k("B"), k("a"), k("b", 2), k("A"), k(-1), k(1.5)]
    store.commit_batch("m", accepted=[Accepted(x, H1) for x in keys], rejects=[], cursor=None)
    store.commit_batch("n", accepted=[Accepted(k(100), H1)], rejects=[], cursor=None)
    store.commit_deleted("m", [k(5)], None)

    pages: list[list[tuple[str, str]]] = []
    after: str | None = None
    while page := store.known_keys("m", after, 5):
        pages.append(page)
        after = page[-1][0]
    assert [len(p) for p in pages] == [5, 5, 5, 2]
    expected = sorted(x for x in keys if x != k(5))
    assert [key for p in pages for key, _ in p] == expected
    assert {status for p in pages for _, status in p} == {"sent"}


def test_keys_longer_than_an_index_allows(store: StateStore) -> None:
    assert len(LONG_KEY) > t.KEY_MAX
    store.commit_batch(
        "m", accepted=[Accepted(LONG_KEY, H1)], rejects=[reject(LONG_KEY + "x")], cursor=None
    )
    assert store.get_hashes("m", [LONG_KEY]) == {LONG_KEY: H1}
    assert store.known_keys("m", None, 10) == [(LONG_KEY, "sent")]
    assert store.known_keys("m", LONG_KEY, 10) == []
    assert [r.key for r in store.list_rejects("m")] == [LONG_KEY + "x"]
    store.commit_deleted("m", [LONG_KEY, LONG_KEY + "x"], None)
    assert store.get_hashes("m", [LONG_KEY]) == {}
    assert store.count_rejects("m") == 0


# -- runs, status, meta, forget -------------------------------------------------------------------


def test_runs_and_status(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(datetime(2025, 3, 1, 12, 0, s, 123456, tzinfo=UTC) for s in range(60))
    for module in ("_records", "_runs", "tables"):  # each part of the store that reads the clock
        monkeypatch.setattr(f"connector.state.{module}.utc_now", lambda: next(clock))

    assert store.last_run("m") is None and store.last_ok_at("m") is None
    run1 = store.start_run("m")
    running = store.last_run("m")
    assert running is not None
    assert (running.id, running.outcome, running.ended_at) == (run1, None, None)
    assert running.started_at == datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    store.finish_run(
        run1, RunCounts(rows_read=10, items_sent=9, accepted=8, requests=2), "ok", None
    )
    ok_at = datetime(2025, 3, 1, 12, 0, 1, 123456, tzinfo=UTC)
    assert store.last_ok_at("m") == ok_at

    run2 = store.start_run("m")
    store.finish_run(run2, RunCounts(rows_read=1, rejected=1), "failed", "API unreachable")
    other = store.start_run("n")
    last = store.last_run("m")
    assert last is not None
    assert (last.id, last.outcome, last.message) == (run2, "failed", "API unreachable")
    assert last.counts == RunCounts(rows_read=1, rejected=1)
    assert last.ended_at is not None and last.ended_at.tzinfo is UTC
    assert store.last_ok_at("m") == ok_at

    store.commit_batch(
        "m", accepted=[Accepted(k(1), H1)], rejects=[reject(k(2))], cursor=Cursor(5, (1,))
    )
    st_m, st_unknown, st_n = store.status(["m", "unknown", "n", "m"])
    assert st_m.mapping == "m" and st_m.cursor == Cursor(5, (1,))
    assert st_m.cursor_saved_at is not None and st_m.cursor_saved_at.tzinfo is UTC
    assert st_m.last_run is not None and st_m.last_run.id == run2
    assert (st_m.last_ok_at, st_m.rejected, st_m.known_sent, st_m.known_deleted) == (
        ok_at,
        1,
        1,
        0,
    )
    assert st_unknown.cursor is None and st_unknown.last_run is None
    assert (st_unknown.rejected, st_unknown.known_sent, st_unknown.last_ok_at) == (0, 0, None)
    assert st_n.last_run is not None and st_n.last_run.id == other
    assert st_n.last_run.outcome is None
    assert store.status([]) == []


def test_meta(store: StateStore) -> None:
    assert store.get_meta("definition:customers") is None
    store.set_meta("definition:customers", "abc")
    store.set_meta("definition:customers", "é" * 1000)
    assert store.get_meta("definition:customers") == "é" * 1000


def test_forget_drops_one_mapping_only(store: StateStore) -> None:
    for mapping in ("m", "n"):
        store.commit_batch(
            mapping,
            accepted=[Accepted(k(1), H1)],
            rejects=[reject(k(2), mapping=mapping)],
            cursor=Cursor(1, (1,)),
        )
    run = store.start_run("m")
    store.forget("m")
    assert store.get_cursor("m") is None
    assert store.get_hashes("m", [k(1)]) == {}
    assert store.list_rejects("m", include_resolved=True) == []
    last = store.last_run("m")
    assert last is not None and last.id == run  # run history is kept
    assert store.get_cursor("n") == Cursor(1, (1,))
    assert store.get_hashes("n", [k(1)]) == {k(1): H1}
    assert store.count_rejects("n") == 1


# -- failures and SQLite specifics ----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://connector:s3cr3t-pw@127.0.0.1:1/state",
        "mysql+pymysql://connector:s3cr3t-pw@127.0.0.1:1/state",
    ],
    ids=["postgresql", "mysql"],
)
def test_unreachable_server_is_a_state_error_without_password(url: str) -> None:
    store = StateStore(url)
    assert "s3cr3t-pw" not in store.url_for_display
    for call in (store.schema_revision, store.upgrade, lambda: store.get_cursor("m")):
        with pytest.raises(StateError) as info:
            call()
        assert not isinstance(info.value, StateSchemaError)
        assert isinstance(info.value.__cause__, sa.exc.SQLAlchemyError)
        message = str(info.value)
        assert "s3cr3t-pw" not in message
        assert message.startswith(f"state database {store.url_for_display}: ")
    store.close()


def test_sqlite_in_an_unusable_place_is_a_state_file_error(tmp_path: Path) -> None:
    """Retrying cannot help: exit code 2 (no restart loop under systemd), with advice."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(StateUnusableError, match="a file stands where a folder is needed"):
        StateStore(f"sqlite:///{blocker / 'sub' / 'state.sqlite'}")

    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with StateStore(f"sqlite:///{garbage}") as store, pytest.raises(StateUnusableError) as info:
        store.upgrade()
    assert info.value.exit_code == 2
    assert isinstance(info.value.__cause__, sa.exc.SQLAlchemyError)
    assert f"{garbage} is damaged" in str(info.value) and "db upgrade" in str(info.value)


def test_invalid_url_is_a_state_error() -> None:
    with pytest.raises(StateError, match="not valid"):
        StateStore("not a url:s3cr3t-pw")


def test_sqlite_creates_its_directory_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.sqlite"
    with StateStore(f"sqlite:///{path}") as store:
        store.upgrade()
        store.ensure_current()
        with store._read() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) > 0
    assert path.exists()


def test_two_stores_on_one_sqlite_file_see_each_other(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    with StateStore(url) as a, StateStore(url) as b:
        a.upgrade()
        b.ensure_current()
        a.set_meta("x", "1")
        b.set_meta("x", "2")
        assert a.get_meta("x") == "2"


if "mysql" in configured_backends():  # collected only when MariaDB is configured

    def test_mariadb_url_scheme_gets_the_same_schema() -> None:
        """Only collected when MariaDB is configured (no skip): the mariadb:// scheme works too."""
        db_url = private_url("mysql")
        wipe(db_url)
        url = sa.make_url(db_url).set(drivername="mariadb+pymysql")
        with StateStore(url) as store:
            store.upgrade()
            store.commit_batch(
                "m", accepted=[Accepted(k("a"), H1), Accepted(k("A"), H2)], rejects=[], cursor=None
            )
            assert store.get_hashes("m", [k("a"), k("A")]) == {k("a"): H1, k("A"): H2}
            with store._read() as conn:
                assert conn.dialect.name == "mariadb"
                context = MigrationContext.configure(
                    conn, opts={"version_table": migrate.VERSION_TABLE, "compare_type": True}
                )
                diffs = compare_metadata(context, t.metadata)
            assert [d for d in diffs if d[0] != "remove_table"] == []


def test_concurrent_writers_of_the_same_keys_do_not_clash(store: StateStore) -> None:
    keys = [k(i) for i in range(100)]
    errors: list[BaseException] = []

    def work(digest: str) -> None:
        try:
            for _ in range(5):
                store.commit_batch(
                    "m",
                    accepted=[Accepted(x, digest) for x in keys[:50]],
                    rejects=[reject(x) for x in keys[50:]],
                    cursor=Cursor(digest, (1,)),
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(d,)) for d in (H1, H2, H3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(store.get_hashes("m", keys).values()) <= {H1, H2, H3}
    assert len(store.get_hashes("m", keys)) == 50
    assert store.count_rejects("m") == 50
    assert {r.attempts for r in store.list_rejects("m")} == {15}


def test_announce_and_commit_write_the_rows_tables_upsert_writes(store: StateStore) -> None:
    """The precompiled upserts (state/bulk.py) store exactly what ``tables.upsert`` stores:
    long keys under their hash id, aware UTC instants, hashes; and known keys are updated."""
    keys = [k(1), k("b"), LONG_KEY]
    store.announce("m", keys)
    store.commit_batch("m", accepted=[Accepted(k(1), H1)], rejects=[], cursor=None)
    store.announce("m", [k(1), k(2)])  # k(1) is known: left untouched
    store.commit_batch(
        "m", accepted=[Accepted(LONG_KEY, H2), Accepted(k(2), H3)], rejects=[], cursor=None
    )
    now = datetime.now(UTC)
    with store._engine.begin() as conn:  # the same rows written the general way, for "n"
        rows = [t.record_row("n", key, now, t.STATUS_SENT, None) for key in [*keys, k(2)]]
        t.upsert(conn, t.records, rows, ("mapping", "key_id"), ("mapping",))
        done = [(k(1), H1), (LONG_KEY, H2), (k(2), H3)]
        rows = [t.record_row("n", key, now, t.STATUS_SENT, h) for key, h in done]
        t.mark_records(conn, rows, ("hash", "status", "updated_at", "long_key"))
    r = t.records.c
    with store._engine.connect() as conn:
        got = {
            m: sorted(
                (kid, long, h, st)
                for kid, long, h, st in conn.execute(
                    sa.select(r.key_id, r.long_key, r.hash, r.status).where(r.mapping == m)
                )
            )
            for m in ("m", "n")
        }
        stamps = list(conn.execute(sa.select(r.updated_at).where(r.mapping == "m")).scalars())
    assert got["m"] == got["n"]
    assert (t.key_id(LONG_KEY), LONG_KEY, H2, "sent") in got["m"]
    assert store.get_hashes("m", [*keys, k(2)]) == {k(1): H1, LONG_KEY: H2, k(2): H3}
    assert all(s.tzinfo is not None and abs(s - now) < timedelta(minutes=5) for s in stamps)


def test_pass_state_in_one_read(store: StateStore) -> None:
    empty = store.pass_state("m", ["force:m", "child:m"])
    assert empty.cursor is None and not empty.open_rejects
    assert empty.meta == {"force:m": None, "child:m": None}
    store.commit_batch("m", accepted=[], rejects=[reject(k(1))], cursor=Cursor(7, (2,)))
    store.set_meta("child:m", "x")
    st = store.pass_state("m", ["force:m", "child:m"])
    assert st.cursor == Cursor(7, (2,)) and st.open_rejects
    assert st.meta == {"force:m": None, "child:m": "x"}
    other = store.pass_state("n")
    assert other.cursor is None and not other.open_rejects and other.meta == {}


def test_idle_passes_rewrite_their_run_row(store: StateStore, db_url: str) -> None:
    t0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    idle, busy = RunCounts(rows_read=3, unchanged=3), RunCounts(rows_read=1, items_sent=1)

    def ids() -> list[int]:
        with store._read() as conn:
            return list(conn.scalars(sa.select(t.runs.c.id).where(t.runs.c.mapping == "m")))

    store.end_run("m", None, t0, idle, "ok", None, idle=True, meta={"child:m": "a"})
    (first,) = ids()
    assert store.get_meta("child:m") == "a"
    store.end_run("m", None, t0 + timedelta(seconds=5), idle, "ok", None, idle=True)
    assert ids() == [first]
    last = store.last_run("m")
    assert last is not None and last.started_at == t0 + timedelta(seconds=5)
    assert last.counts == idle and last.outcome == "ok"
    assert store.last_ok_at("m") == last.ended_at

    # a pass that did something keeps its row; the idle one after it gets a new row
    store.end_run("m", None, t0, busy, "ok", None)
    store.end_run("m", None, t0, idle, "ok", None, idle=True)
    store.end_run("m", None, t0, idle, "ok", None, idle=True)
    assert len(ids()) == 3
    busy_row = ids()[1]
    with store._read() as conn:
        sent = conn.scalar(sa.select(t.runs.c.items_sent).where(t.runs.c.id == busy_row))
    assert sent == 1

    # a failed pass is never rewritten, nor is a row that is no longer the newest
    store.end_run("m", None, t0, RunCounts(), "failed", "boom")
    store.end_run("m", None, t0, idle, "ok", None, idle=True)
    assert len(ids()) == 5
    other = StateStore(db_url)  # another process wrote a newer row meanwhile
    try:
        other.finish_run(other.start_run("m"), busy, "ok", None)
    finally:
        other.close()
    store.end_run("m", None, t0, idle, "ok", None, idle=True)
    assert len(ids()) == 7

    # a long pass has its running row, finished by end_run
    running = store.start_run("m", t0)
    store.end_run("m", running, t0, busy, "interrupted", "stopped", meta={"child:m": "b"})
    last = store.last_run("m")
    assert last is not None and (last.id, last.outcome, last.counts) == (
        running,
        "interrupted",
        busy,
    )
    assert last.started_at == t0 and store.get_meta("child:m") == "b"


def test_idle_run_rows_wait_to_share_a_transaction(store: StateStore, db_url: str) -> None:
    """With ``idle_rows_every`` (the service), an idle pass ending soon after a written end
    waits; the next end written (any mapping) or ``flush_idle_runs`` writes it, in the same
    transaction; a newer end of the same mapping replaces it; closing writes what waits."""
    t0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    idle = RunCounts(rows_read=3, unchanged=3)
    store.idle_rows_every = 3600.0
    store.end_run("a", None, t0, idle, "ok", None, idle=True)
    store.end_run("b", None, t0, idle, "ok", None, idle=True)  # first idle rows: written

    def started(m: str) -> datetime:
        last = store.last_run(m)
        assert last is not None
        return last.started_at

    later = t0 + timedelta(seconds=5)
    store.end_run("a", None, later, idle, "ok", None, idle=True, meta={"child:a": "x"})
    assert started("a") == t0 and store.get_meta("child:a") is None  # waiting
    store.flush_idle_runs(older_than=3600.0)  # the last end was written just now: still waits
    assert started("a") == t0
    store.end_run("b", None, later, RunCounts(rows_read=1, items_sent=1), "ok", None)
    assert started("a") == later and store.get_meta("child:a") == "x"  # went with b's end
    assert started("b") == later

    even_later = t0 + timedelta(seconds=10)
    store.end_run("a", None, even_later, idle, "ok", None, idle=True)
    store.end_run("a", None, even_later + timedelta(seconds=5), idle, "ok", None, idle=True)
    store.flush_idle_runs()
    assert started("a") == even_later + timedelta(seconds=5)

    with store._read() as conn:
        rows = conn.scalar(sa.select(sa.func.count()).where(t.runs.c.mapping == "a"))
    assert rows == 1  # every idle end of ``a`` rewrote its one row
    store.end_run("a", None, t0 + timedelta(seconds=30), idle, "ok", None, idle=True)
    store.close()  # closing writes what waits
    reopened = StateStore(db_url)
    try:
        last = reopened.last_run("a")
        assert last is not None and last.started_at == t0 + timedelta(seconds=30)
    finally:
        reopened.close()


def test_a_batch_with_nothing_to_record_opens_no_transaction(store: StateStore) -> None:
    """An idle pass re-reads its lookback window and finds every row unchanged: its writer
    commits an empty batch, which must not cost a state transaction."""
    begins: list[int] = []
    sa.event.listen(store._engine, "begin", lambda conn: begins.append(1))
    store.commit_batch("m", accepted=[], rejects=[], cursor=None)
    assert begins == []
    store.commit_batch("m", accepted=[], rejects=[], cursor=Cursor(3, (1,)))
    assert len(begins) == 1 and store.get_cursor("m") == Cursor(3, (1,))

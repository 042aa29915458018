"""The shop reader's connection handling: one connection per session, dead ones replaced."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from connector.mapping import load_mapping_file
from connector.mapping.spec import Mapping
from connector.source.reader import ShopReader


@pytest.fixture
def reader(db_url: str) -> Iterator[ShopReader]:
    with sa.create_engine(db_url).begin() as conn:
        conn.execute(sa.text("CREATE TABLE seen (id INTEGER PRIMARY KEY)"))
    with ShopReader(sa.make_url(db_url)) as r:
        yield r


def _count(reader: ShopReader) -> int:
    return int(reader.scalar(sa.text("SELECT COUNT(*) FROM seen")))


def test_a_session_reads_on_one_connection_and_sees_new_commits(
    reader: ShopReader, db_url: str
) -> None:
    checkouts = [0]
    sa.event.listen(
        reader.engine, "checkout", lambda *a: checkouts.__setitem__(0, checkouts[0] + 1)
    )
    writer = sa.create_engine(db_url)
    try:
        with reader.session():
            assert _count(reader) == 0
            with writer.begin() as conn:
                conn.execute(sa.text("INSERT INTO seen (id) VALUES (1)"))
            assert _count(reader) == 1  # no snapshot is held between the reads of a session
            with reader.session():  # nested: the same connection
                assert reader.fetch(sa.text("SELECT id FROM seen")) == [{"id": 1}]
        assert checkouts[0] == 1
        assert _count(reader) == 1
        assert checkouts[0] == 2  # outside a session: one checkout per read
    finally:
        writer.dispose()


KILL = {
    "postgresql": ("SELECT pg_backend_pid()", "SELECT pg_terminate_backend({})"),
    "mysql": ("SELECT CONNECTION_ID()", "KILL {}"),
    "mariadb": ("SELECT CONNECTION_ID()", "KILL {}"),
}


@pytest.mark.server_only  # a SQLite connection has no server side to kill
@pytest.mark.parametrize("in_session", [True, False])
def test_a_dead_connection_is_replaced_and_the_read_runs_again(
    reader: ShopReader, db_url: str, in_session: bool
) -> None:
    assert reader.dialect in KILL, reader.dialect
    which, kill = KILL[reader.dialect]
    admin = sa.create_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        with reader.session() if in_session else contextlib.nullcontext():
            for _ in range(2):  # the second time, on the connection that replaced the first
                pid = reader.scalar(sa.text(which))
                with admin.connect() as conn:
                    conn.execute(sa.text(kill.format(int(pid))))
                assert _count(reader) == 0
                assert reader.scalar(sa.text(which)) != pid
    finally:
        admin.dispose()


def _manufacturers(tmp_path: Path, source: str) -> Mapping:
    path = tmp_path / "products_manufacturers.toml"
    path.write_text(
        f'resource = "products_manufacturers"\n[source]\n{source}\nkey = ["id"]\n'
        '[fields]\nmanufacturer_id = "id"\nname = "name"\nis_active = { const = true }\n'
        'created_at = "at"\nupdated_at = "at"\n',
        encoding="utf-8",
    )
    return load_mapping_file(path)


def test_the_reader_knows_when_the_schema_rules_out_null_cursors(
    db_url: str, tmp_path: Path
) -> None:
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE TABLE stamped (id INTEGER PRIMARY KEY, name VARCHAR(20) NOT NULL, "
                    "at TIMESTAMP NOT NULL, maybe_at TIMESTAMP NULL)"
                )
            )
        dialect = engine.dialect.name
    finally:
        engine.dispose()
    strict = dialect in ("postgresql", "sqlite")  # MariaDB's IS NULL also finds zero dates
    cases = {
        'table = "stamped"\ncursor = "at"': strict,
        'table = "stamped"\ncursor = "maybe_at"': False,
        'table = "stamped"\ncursor = "maybe_at"\ncursor_fallback = "at"': strict,
        'query = "SELECT * FROM stamped"\ncursor = "at"': False,  # a query promises nothing
    }
    reads: list[str] = []
    with ShopReader(sa.make_url(db_url)) as reader:
        sa.event.listen(reader.engine, "before_cursor_execute", lambda *a: reads.append(a[2]))
        for source, expected in cases.items():
            mapping = _manufacturers(tmp_path, source)
            assert reader.cursor_never_null(mapping) is expected, source
            read = len(reads)
            assert read > 0 or not expected  # the schema was read
            # then answered from memory until NOT_NULL_RECHECK has passed
            assert reader.cursor_never_null(mapping) is expected
            assert len(reads) == read


@pytest.mark.server_only  # the zero date is MariaDB/MySQL's
def test_mariadb_is_null_finds_zero_dates_of_a_not_null_column(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        if engine.dialect.name not in ("mysql", "mariadb"):
            return
        with engine.begin() as conn:
            conn.execute(sa.text("SET SESSION sql_mode = ''"))
            conn.execute(sa.text("CREATE TABLE zero (id INT PRIMARY KEY, at DATETIME NOT NULL)"))
            conn.execute(sa.text("INSERT INTO zero VALUES (1, '0000-00-00 00:00:00')"))
            found = conn.execute(sa.text("SELECT id FROM zero WHERE at IS NULL")).scalars().all()
        assert found == [1]  # why cursor_never_null answers False on these databases
    finally:
        engine.dispose()


def test_the_database_clock_is_carried_forward_between_readings(reader: ShopReader) -> None:
    """``db_clock`` reads the server's clock once in ``reread`` seconds and adds this machine's
    monotonic time in between; the estimate is never ahead of the server's own clock."""
    statements: list[str] = []
    sa.event.listen(
        reader.engine, "before_cursor_execute", lambda c, cur, stmt, *a: statements.append(stmt)
    )
    first = reader.db_clock(reread=60.0)
    assert len(statements) == 1
    time.sleep(0.05)
    carried = reader.db_clock(reread=60.0)
    assert len(statements) == 1  # no statement: carried forward
    assert carried - first >= timedelta(seconds=0.05)
    server = reader.db_now_utc()  # read after the estimate: at or after it (SQLite's clock
    assert server >= carried - timedelta(milliseconds=1), (server, carried)  # has ms only)
    again = reader.db_clock(reread=0.0)  # too old: read again
    assert len(statements) == 3 and again >= server

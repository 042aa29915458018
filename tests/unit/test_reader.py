"""The shop reader's connection handling: one connection per session, dead ones replaced."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

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

"""The instance lock on every state database backend: one holder, named when refused, released
when the holder ends — even by SIGKILL."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from connector import lock
from connector.errors import LockedError, StateUnusableError
from connector.state.store import StateStore
from tests.conftest import private_url, wipe


@pytest.fixture
def state_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'state.sqlite'}"
    url = private_url(backend)
    wipe(url)
    with StateStore(url) as store:
        store.upgrade()  # the holder is kept in the meta table
    return url


def test_second_holder_is_refused_with_the_holder_named_then_allowed(state_url: str) -> None:
    first = lock.acquire(state_url, "run")
    try:
        with pytest.raises(LockedError) as err:
            lock.acquire(state_url, "sync")
        text = str(err.value)
        assert "another connector instance is using the state database" in text
        assert f"pid {first.info['pid']}" in text
        assert f"host {socket.gethostname()}" in text
        assert f"since {first.info['since']}" in text and "`run`" in text
        assert err.value.exit_code == 1
        first.check()  # keeps holding
        with pytest.raises(LockedError):
            lock.acquire(state_url, "sync")
    finally:
        first.release()
    with lock.acquire(state_url, "sync") as second:
        assert second.info["command"] == "sync"


HOLD = textwrap.dedent(
    """
    import sys, time
    from connector import lock
    held = lock.acquire(sys.argv[1], "run")
    print("held", flush=True)
    time.sleep(60)
    """
)


def test_lock_is_released_when_the_holder_is_killed(state_url: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, state_url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(LockedError) as err:
            lock.acquire(state_url, "sync")
        assert f"pid {proc.pid}" in str(err.value)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the OS (flock) or the server (session end) released it; a server may need a moment to
    # notice the closed connection
    for _ in range(50):
        try:
            held = lock.acquire(state_url, "sync")
            break
        except LockedError:
            time.sleep(0.1)
    else:
        pytest.fail("the lock of a killed holder was not released")
    held.release()


def test_sqlite_lock_file_beside_the_database_holds_the_holder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    with lock.acquire(url, "run") as held:
        text = (tmp_path / "state.sqlite.lock").read_text()
        assert f'"pid": {held.info["pid"]}' in text
    assert (tmp_path / "state.sqlite.lock").read_text() == ""  # released: holder cleared


def test_in_memory_state_needs_no_lock() -> None:
    with lock.acquire("sqlite://", "sync"), lock.acquire("sqlite:///:memory:", "sync"):
        pass


def test_unopenable_lock_file_is_a_state_file_error(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("")
    url = f"sqlite:///{tmp_path / 'plain-file' / 'state.sqlite'}"
    with pytest.raises(StateUnusableError) as err:
        lock.acquire(url, "run")
    assert "cannot open the lock file" in str(err.value)
    assert err.value.exit_code == 2


def test_unknown_holder_still_refused(backend: str, tmp_path: Path) -> None:
    """No meta table yet (server) or an unreadable lock file (SQLite): the holder cannot be
    named, the lock still works."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    else:
        url = private_url(backend)
        wipe(url)
    with lock.acquire(url, "run"):
        if backend == "sqlite":
            (tmp_path / "state.sqlite.lock").write_text("not json")
        with pytest.raises(LockedError) as err:
            lock.acquire(url, "sync")
        assert "holder unknown" in str(err.value)


def test_check_takes_the_lock_again_after_the_connection_was_killed(state_url: str) -> None:
    import sqlalchemy as sa

    held = lock.acquire(state_url, "run")
    try:
        if isinstance(held, lock.ServerLock):
            conn = held._conn
            assert conn is not None
            postgres = held.dialect == "postgresql"
            session = conn.scalar(
                sa.text("SELECT pg_backend_pid()" if postgres else "SELECT CONNECTION_ID()")
            )
            admin = sa.create_engine(state_url, poolclass=sa.pool.NullPool)
            with admin.connect() as other:
                if postgres:
                    other.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": session})
                else:
                    other.exec_driver_sql(f"KILL {int(session)}")
                other.commit()
            admin.dispose()
        held.check()  # notices the lost session, reconnects and takes the lock again
        with pytest.raises(LockedError):
            lock.acquire(state_url, "sync")
    finally:
        held.release()

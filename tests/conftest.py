"""Shared fixtures: database URLs for SQLite always, PostgreSQL and MariaDB when configured.

``SHOPIMIND_TEST_POSTGRES_URL`` / ``SHOPIMIND_TEST_MYSQL_URL`` switch the real databases on. A
configured database that does not answer fails the tests that use it (never a skip).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

BACKENDS = ["sqlite", "postgresql", "mysql"]
_ENV = {"postgresql": "SHOPIMIND_TEST_POSTGRES_URL", "mysql": "SHOPIMIND_TEST_MYSQL_URL"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run the long soak variants")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soak variants (marked ``slow``) are not collected unless ``--soak`` is given: they are a
    separate, longer run (``make soak``), not skipped tests. Tests marked ``server_only`` exist
    only for PostgreSQL and MariaDB: their SQLite variant is deselected, not skipped."""
    soak = bool(config.getoption("--soak"))

    def unwanted(item: pytest.Item) -> bool:
        if "slow" in item.keywords and not soak:
            return True
        params = getattr(item, "callspec", None)
        backend = params.params.get("backend") if params is not None else None
        return "server_only" in item.keywords and backend == "sqlite"

    dropped = [item for item in items if unwanted(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not unwanted(item)]


def configured_backends() -> list[str]:
    return ["sqlite", *[b for b, env in _ENV.items() if os.environ.get(env)]]


def wipe(url: str) -> None:
    """Drop every table in the database behind ``url`` (PostgreSQL/MariaDB test databases)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            md = sa.MetaData()
            md.reflect(conn)
            if conn.dialect.name == "mysql":
                conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=0")
            md.drop_all(conn)
            if conn.dialect.name == "mysql":
                conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=1")
    except sa.exc.OperationalError as exc:  # configured but down: fail loudly
        pytest.fail(f"test database configured but not reachable: {type(exc).__name__}")
    finally:
        engine.dispose()


@pytest.fixture(params=configured_backends())
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


_private: dict[str, str] = {}


def private_url(backend: str) -> str:
    """A database of this test process's own on the configured server (``<db>_p<pid>``), so two
    test runs on one machine never drop each other's tables; created on first use."""
    if backend in _private:
        return _private[backend]
    base = sa.engine.make_url(os.environ[_ENV[backend]])
    name = f"{base.database}_p{os.getpid()}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if backend == "postgresql":
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
                conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
    except sa.exc.OperationalError as exc:
        pytest.fail(f"{backend} test database configured but not reachable: {exc.orig}")
    finally:
        admin.dispose()
    _private[backend] = base.set(database=name).render_as_string(hide_password=False)
    return _private[backend]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for backend, url in _private.items():
        base = sa.engine.make_url(os.environ[_ENV[backend]])
        name = sa.engine.make_url(url).database
        admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                q = '"' if backend == "postgresql" else "`"
                if backend == "postgresql":
                    conn.exec_driver_sql(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                    )
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {q}{name}{q}")
        except sa.exc.SQLAlchemyError:
            pass
        finally:
            admin.dispose()


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each configured backend."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'shop.sqlite'}"
        return
    url = private_url(backend)
    wipe(url)
    yield url
    wipe(url)

"""Cached benchmark shop databases: the demo schema bulk-loaded with ``datagen``'s rows.

* SQLite: ``.bench/shop-<key>-<size>.sqlite``, loaded with ``executemany`` in 100k-row chunks
  (journal off while loading), then renamed into place.
* PostgreSQL: database ``<base>_bench_<key>_<size>`` on the configured server, ``COPY`` through
  psycopg (foreign-key triggers off while loading when allowed).
* MariaDB: the same name, ``LOAD DATA LOCAL INFILE`` (multi-row INSERTs when refused).

``<key>`` combines the generator version and a fingerprint of the demo schema, so a schema change
rebuilds the databases. Secondary indexes are built after loading, then statistics; the table
``bench_meta`` is written last, so an interrupted load is rebuilt and a complete one reused.

Besides the demo schema's indexes (``updated_at`` everywhere), the databases get the indexes a shop
has on the foreign-key columns the example mappings join or look up by (MariaDB creates them by
itself): see ``EXTRA_INDEXES``.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from connector.demo import shop
from tests.benchmarks.datagen import CACHE, COLUMNS, NULL, VERSION, data_dir

EXTRA_INDEXES = (
    ("order_lines", "order_id"),
    ("product_images", "product_id"),
    ("product_images", "variation_id"),
    ("product_variations", "product_id"),
    ("addresses", "customer_id"),
    ("cart_lines", "cart_id"),
)


def cache_key() -> str:
    md = shop.metadata()
    text = repr(
        (
            VERSION,
            EXTRA_INDEXES,
            [(t.name, [(c.name, str(c.type)) for c in t.columns]) for t in md.sorted_tables],
            sorted((t.name, i.name) for t in md.sorted_tables for i in t.indexes),
        )
    )
    return f"v{VERSION}{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _check_columns() -> None:
    tables = shop.metadata().tables
    for name, cols in COLUMNS.items():
        missing = [c for c in cols if name not in tables or c not in tables[name].c]
        if missing:
            raise RuntimeError(
                f"benchmark data: the demo schema has no {name}.{missing[0]}; update "
                "tests/benchmarks/datagen.py COLUMNS to the schema of connector/demo/shop.py"
            )


def _create_tables(conn: sa.Connection) -> None:
    for table in shop.metadata().sorted_tables:
        conn.execute(sa.schema.CreateTable(table))


def _create_indexes(conn: sa.Connection) -> None:
    for table in shop.metadata().sorted_tables:
        for idx in table.indexes:
            idx.create(conn)
    for name, col in EXTRA_INDEXES:
        conn.exec_driver_sql(f"CREATE INDEX ix_bench_{name}_{col} ON {name} ({col})")


def _meta_ok(engine: sa.Engine, size: int) -> bool:
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql("SELECT cache_key, size FROM bench_meta").first()
    except sa.exc.SQLAlchemyError:
        return False
    return row is not None and tuple(row) == (cache_key(), size)


def _write_meta(conn: sa.Connection, size: int, seconds: float) -> None:
    conn.exec_driver_sql(
        "CREATE TABLE bench_meta (cache_key VARCHAR(40), size INTEGER, seconds FLOAT)"
    )
    conn.exec_driver_sql(f"INSERT INTO bench_meta VALUES ('{cache_key()}', {size}, {seconds:.3f})")


def _rows(path: Path, chunk: int) -> Iterator[list[list[str | None]]]:
    out: list[list[str | None]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            out.append([None if v == NULL else v for v in line.rstrip("\n").split("\t")])
            if len(out) >= chunk:
                yield out
                out = []
    if out:
        yield out


def sqlite_db(size: int) -> tuple[str, float]:
    """URL of the cached SQLite shop of ``size`` (built when missing) and the seconds spent."""
    path = CACHE / f"shop-{cache_key()}-{size}.sqlite"
    if path.is_file():
        engine = sa.create_engine(f"sqlite:///{path}")
        ok = _meta_ok(engine, size)
        engine.dispose()
        if ok:
            return f"sqlite:///{path}", 0.0
        path.unlink()
    _check_columns()
    started = time.monotonic()
    folder = data_dir(size)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    engine = sa.create_engine(f"sqlite:///{tmp}")
    with engine.begin() as conn:
        _create_tables(conn)
    engine.dispose()
    raw = sqlite3.connect(tmp)
    raw.execute("PRAGMA journal_mode = OFF")
    raw.execute("PRAGMA synchronous = OFF")
    for name, cols in COLUMNS.items():
        sql = f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
        for chunk in _rows(folder / f"{name}.tsv", 100_000):
            raw.executemany(sql, chunk)
        raw.commit()
    raw.close()
    engine = sa.create_engine(f"sqlite:///{tmp}")
    with engine.begin() as conn:
        _create_indexes(conn)
        conn.exec_driver_sql("ANALYZE")
        _write_meta(conn, size, time.monotonic() - started)
    engine.dispose()
    tmp.rename(path)
    return f"sqlite:///{path}", time.monotonic() - started


def server_db(base_url: str, size: int) -> tuple[str, float]:
    """URL of the cached PostgreSQL/MariaDB shop of ``size`` next to ``base_url``'s database
    (built when missing) and the seconds spent."""
    base = sa.engine.make_url(base_url)
    backend = base.get_backend_name()
    name = f"{base.database}_bench_{cache_key()}_{size}"
    url = base.set(database=name)
    text_url = url.render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    try:
        if _meta_ok(engine, size):
            return text_url, 0.0
    finally:
        engine.dispose()
    _check_columns()
    started = time.monotonic()
    folder = data_dir(size)
    _recreate(base, name)
    if backend in ("mysql", "mariadb"):
        url = url.update_query_dict({"local_infile": "1"})
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            _create_tables(conn)
        if backend == "postgresql":
            _copy_postgres(engine, folder)
        else:
            _load_mysql(engine, folder)
        with engine.begin() as conn:
            _create_indexes(conn)
            if backend == "postgresql":
                conn.exec_driver_sql("ANALYZE")
            else:
                for t in shop.metadata().tables:
                    conn.exec_driver_sql(f"ANALYZE TABLE {t}")
            _write_meta(conn, size, time.monotonic() - started)
    finally:
        engine.dispose()
    return text_url, time.monotonic() - started


def _recreate(base: sa.URL, name: str) -> None:
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    q = '"' if base.get_backend_name() == "postgresql" else "`"
    try:
        with admin.connect() as conn:
            if base.get_backend_name() == "postgresql":
                conn.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                )
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {q}{name}{q}")
            conn.exec_driver_sql(f"CREATE DATABASE {q}{name}{q}")
    finally:
        admin.dispose()


def _copy_postgres(engine: sa.Engine, folder: Path) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        try:  # skip the row-by-row foreign-key triggers while loading (superuser only)
            cur.execute("SET session_replication_role = replica")
        except Exception:  # not a superuser: load with the checks on (the rows are consistent)
            raw.rollback()
        for name, cols in COLUMNS.items():
            with (
                open(folder / f"{name}.tsv", "rb") as f,
                cur.copy(f"COPY {name} ({', '.join(cols)}) FROM STDIN") as cp,
            ):
                while block := f.read(1 << 20):
                    cp.write(block)
        raw.commit()
    finally:
        raw.close()


def _load_mysql(engine: sa.Engine, folder: Path) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("SET FOREIGN_KEY_CHECKS = 0")
        cur.execute("SET UNIQUE_CHECKS = 0")
        for name, cols in COLUMNS.items():
            path = folder / f"{name}.tsv"
            try:
                cur.execute(
                    f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE {name} "
                    f"CHARACTER SET utf8mb4 ({', '.join(cols)})"
                )
            except Exception:  # local_infile refused: multi-row INSERTs instead
                raw.rollback()
                marks = ", ".join("%s" for _ in cols)
                sql = f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({marks})"
                for chunk in _rows(path, 20_000):
                    cur.executemany(sql, chunk)
            raw.commit()
    finally:
        raw.close()

"""Benchmark suite settings and fixtures; collected only when ``tests/benchmarks`` is named.

``make bench`` runs ``pytest -q tests/benchmarks`` (``BENCH_ARGS=--quick`` for a small first
look). ``make test`` passes ``--ignore=tests/benchmarks``, and this file also refuses to collect
the benchmarks when they were not named on the command line (a plain ``pytest`` in the repo).

Databases: SQLite always; PostgreSQL and MariaDB when ``SHOPIMIND_TEST_POSTGRES_URL`` /
``SHOPIMIND_TEST_MYSQL_URL`` are set (the benchmark databases are created next to them).
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.benchmarks import report, shopdb
from tests.benchmarks.common import MAP_WORKERS_ENV

HERE = Path(__file__).resolve().parent
SERVERS = {"postgresql": "SHOPIMIND_TEST_POSTGRES_URL", "mysql": "SHOPIMIND_TEST_MYSQL_URL"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("benchmarks")
    group.addoption(
        "--quick", action="store_true", help="benchmarks: 100k rows and short runs (first look)"
    )
    group.addoption(
        "--strict-targets",
        action="store_true",
        help="benchmarks: fail a figure whose target is missed (default: report it)",
    )


def _named(config: pytest.Config) -> bool:
    for arg in config.args:
        path = Path(arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    inside = collection_path == HERE or HERE in collection_path.parents
    if inside and not _named(config):
        return True
    return None


@dataclass
class Settings:
    quick: bool
    strict: bool
    size: int  # customers = orders
    small: int  # the memory figure's reference backfill
    extract_rows: int  # rows per extraction measurement
    budget_seconds: float
    idle_seconds: float
    idle_passes: int
    latency_samples: int
    servers: dict[str, str] = field(default_factory=dict)
    budget_rpm: int = 6000
    poll: float = 5.0

    @property
    def backends(self) -> list[str]:
        return ["sqlite", *self.servers]

    @property
    def main(self) -> str:
        """The backend of the single-backend figures: PostgreSQL when configured."""
        return "postgresql" if "postgresql" in self.servers else "sqlite"


@pytest.fixture(scope="session")
def settings(pytestconfig: pytest.Config) -> Settings:
    quick = bool(pytestconfig.getoption("--quick"))
    servers = {b: os.environ[env] for b, env in SERVERS.items() if os.environ.get(env)}
    if quick:
        return Settings(True, False, 100_000, 10_000, 30_000, 25, 20, 10, 8, servers)
    return Settings(False, False, 1_000_000, 100_000, 100_000, 75, 60, 20, 24, servers)


class Shops:
    """The cached benchmark databases, built on first use; build times go into the report."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.urls: dict[tuple[str, int], str] = {}
        self.built: list[tuple[str, int, float]] = []

    def url(self, backend: str, size: int | None = None) -> str:
        size = size or self.settings.size
        if (backend, size) not in self.urls:
            if backend == "sqlite":
                url, seconds = shopdb.sqlite_db(size)
            else:
                url, seconds = shopdb.server_db(self.settings.servers[backend], size)
            self.urls[backend, size] = url
            self.built.append((backend, size, seconds))
        return self.urls[backend, size]


@pytest.fixture(scope="session")
def shops(settings: Settings) -> Shops:
    return Shops(settings)


class Recorder:
    """Stamps a figure with time, load and command, stores it; fails it under --strict-targets."""

    def __init__(self, settings: Settings, nodeid: str) -> None:
        self.settings = settings
        self.nodeid = nodeid
        self.started = time.monotonic()
        self.load = report.loadavg()

    def __call__(self, fig: report.Figure) -> None:
        args, skip = [], False
        for a in sys.argv[1:]:  # the run's own arguments without its -k selection
            if skip or a.startswith("-k"):
                skip = a == "-k"
                continue
            args.append(a)
        command = shlex.join(["python", "-m", "pytest", *args])
        workers = os.environ.get(MAP_WORKERS_ENV)
        if workers:
            command = f"{MAP_WORKERS_ENV}={shlex.quote(workers)} {command}"
        test = self.nodeid.split("::")[-1]
        report.stamp(fig, self.started, self.load, f"{command} -k {test}")
        report.store(fig, self.settings.quick)
        if self.settings.strict and fig.missed:
            names = "; ".join(f"{r.what}: {r.value:.3g} {r.unit} ({r.target})" for r in fig.missed)
            pytest.fail(f"{fig.key}: target missed: {names}")


@pytest.fixture
def record(settings: Settings, request: pytest.FixtureRequest) -> Recorder:
    settings.strict = bool(request.config.getoption("--strict-targets"))
    return Recorder(settings, request.node.nodeid)


@pytest.fixture(scope="session", autouse=True)
def _write_report(settings: Settings, shops: Shops) -> Iterator[None]:
    yield
    urls = {b: url for (b, _size), url in shops.urls.items()}
    if shops.built:
        _data_figure(settings, shops)
    figures = report.load(settings.quick)
    if figures:
        path = report.write(figures, report.machine(urls), settings.quick)
        print(f"\nbenchmark report written to {path}")


def _data_figure(settings: Settings, shops: Shops) -> None:
    fig = report.Figure(
        "0-data",
        "Benchmark data",
        "Generated once (seeded) as tab-separated files, bulk-loaded per database and cached "
        "(`tests/benchmarks/datagen.py`, `shopdb.py`): customers and orders = size, order lines "
        "≈ 3 per order, products = size/10 in 2 languages, addresses size/10, newsletter size/20.",
    )
    before = {r.what: r for f in report.load(settings.quick) if f.key == "0-data" for r in f.rows}
    for backend, size, seconds in shops.built:
        what = f"{backend}, size {size:,}: generate + load + index"
        old = before.pop(what, None)
        if seconds == 0 and old is not None and old.value > 0:
            fig.add(report.Row(what, old.value, "s", note="built by an earlier run, cached since"))
        else:
            fig.add(report.Row(what, seconds, "s", note="" if seconds else "cached"))
    fig.rows += before.values()
    report.stamp(fig, time.monotonic(), report.loadavg(), "(any benchmark run)")
    report.store(fig, settings.quick)

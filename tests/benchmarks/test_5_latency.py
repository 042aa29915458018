"""Figure 5: a change reaches the API within the poll interval + 1 s while a backfill runs.

The real service (``python -m connector.cli run``) polls ``products_manufacturers`` and
``customers`` every 5 s against the sandbox (in this process: 600 requests/min, 300 ms added to
every answer); ``customers`` starts a backfill of the 1M-row table that lasts the whole test.
Meanwhile a manufacturer row is renamed (``updated_at`` = now) every 0.5-2.5 s, at random phases
of the poll; each rename's latency is the time from its commit to the sandbox storing the new
name (polled every 20 ms).
"""

from __future__ import annotations

import math
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from connector.sandbox import Sandbox
from tests.benchmarks.common import KEY, REPO, TZ, config_dict, make_config, write_config
from tests.benchmarks.conftest import Recorder, Settings, Shops
from tests.benchmarks.report import Figure, Row

LAG = 0.5  # source.safety_lag of this run (the default is 2 s)


def _now(engine: sa.Engine) -> object:
    local = datetime.now(ZoneInfo(TZ)).replace(tzinfo=None)
    return local.isoformat(" ", "microseconds") if engine.dialect.name == "sqlite" else local


def test_latency_during_backfill(
    settings: Settings, shops: Shops, record: Recorder, tmp_path: Path
) -> None:
    url = shops.url(settings.main)
    poll, n = settings.poll, settings.latency_samples
    fig = Figure(
        "5-latency",
        "Latency: a change on one mapping while another backfills",
        f"`python -m connector.cli run` with `products_manufacturers` and `customers` "
        f"({settings.size:,} rows, {settings.main}, backfilling throughout), poll interval "
        f"{poll:.0f} s, source.safety_lag {LAG} s; sandbox at 600 requests/min with 300 ms added "
        f"to every answer. {n} manufacturer renames at random phases of the poll; latency = "
        "commit of the rename to the sandbox storing it. Reference: poll interval + 1 s.",
    )
    rng = random.Random(5)
    engine = sa.create_engine(url)
    with Sandbox({KEY}, requests_per_minute=600) as sb:
        sb.inject_delay(0.3)
        names = ["products_manufacturers", "customers"]
        sections = {"sync": {"poll_interval": poll}, "source": {"safety_lag": LAG}}
        data = config_dict(tmp_path, url, sb.url, names, **sections)
        make_config(tmp_path, url, sb.url, names, **sections)
        path = write_config(tmp_path / "config.toml", data)
        env = {**os.environ, "PYTHONPATH": str(REPO), "SHOPIMIND_API_KEY": KEY}
        proc = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "run", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "service.log", "w"),  # noqa: SIM115
            cwd=tmp_path,
            env=env,
        )
        latencies: list[float] = []
        try:
            deadline = time.monotonic() + 60
            while len(sb.records("products_manufacturers")) < 200:  # its first pass
                assert proc.poll() is None, (tmp_path / "service.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "the first pass did not finish in 60 s"
                time.sleep(0.2)
            sent_before = len(sb.context.store.send_counts("customers"))
            pending: dict[str, tuple[str, float]] = {}
            started, made = time.monotonic(), 0
            next_at = started
            while made < n or pending:
                now = time.monotonic()
                if made < n and now >= next_at:
                    ident = str(1 + made)
                    name = f"Maker {ident} {time.time_ns()}"  # new to the sandbox
                    with engine.begin() as conn:
                        conn.execute(
                            sa.text(
                                "UPDATE manufacturers SET name = :n, updated_at = :t WHERE id = :i"
                            ),
                            {"n": name, "t": _now(engine), "i": int(ident)},
                        )
                    pending[ident] = (name, time.monotonic())
                    made += 1
                    next_at = now + rng.uniform(0.5, 2.5)
                stored = sb.records("products_manufacturers")
                for ident, (name, t0) in list(pending.items()):
                    if stored.get(ident, {}).get("name") == name:
                        latencies.append(time.monotonic() - t0)
                        del pending[ident]
                    elif time.monotonic() - t0 > 60:
                        raise AssertionError(f"rename of manufacturer {ident} not seen in 60 s")
                time.sleep(0.02)
            backfilled = len(sb.context.store.send_counts("customers")) - sent_before
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            engine.dispose()
    ordered = sorted(latencies)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    fig.add(
        Row(
            "95th percentile latency",
            p95,
            "s",
            poll + 1,
            "poll interval + 1 s",
            target="<= 1",
            met=p95 <= poll + 1,
            goal=1,
            on_ratio=True,
            lower=True,
            note=f"median {statistics.median(ordered):.2f} s, max {ordered[-1]:.2f} s, "
            f"min {ordered[0]:.2f} s over {len(ordered)} renames",
        )
    )
    fig.add(
        Row(
            "customers stored by the sandbox meanwhile (the backfill)",
            backfilled,
            "customers",
            note=f"in {time.monotonic() - started:.0f} s",
        )
    )
    fig.notes.append(
        "A change is read by the first pass that starts at least safety_lag after it (the "
        "pass's upper bound is the database clock minus the lag), and passes start every poll "
        "interval: latency = lag + a uniform share of the interval + the pass and the send "
        f"(300 ms here). So the 95th percentile is about lag + 0.95 x {poll:.0f} s + the send; "
        f"with the default safety_lag of 2 s it is 1.5 s more than with the {LAG} s used here."
    )
    record(fig)
    assert backfilled > 0, "the customers backfill was not running"

"""Figure 3: what a pass that finds nothing costs, and the idle service's CPU.

(a) Every mapping's cursor is set after its last row, as a finished backfill leaves it, then one
pass records what lies in the lookback window; then ``idle_passes`` passes of each mapping are
timed (wall clock of ``run_pass``, shop and state statements counted). On PostgreSQL, the page
query a pass runs with the saved cursor (minus the lookback) is EXPLAINed (ANALYZE, BUFFERS).

(b) The service (``python -m connector.cli run``) with the 12 mappings at a 5 s poll interval on
the same data, nothing changing: its process CPU time (``/proc/<pid>/stat``) over
``idle_seconds`` after a warm-up, as a share of one core.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from connector.mapping import load_mapping_file
from connector.runtime import Runtime
from connector.sandbox import Sandbox
from connector.source import query as q
from tests.benchmarks.common import (
    KEY,
    MAPPINGS,
    REPO,
    TWELVE,
    config_dict,
    count_queries,
    cpu_seconds,
    cursors_to_end,
    make_config,
    sink_transport,
    write_config,
)
from tests.benchmarks.conftest import Recorder, Settings, Shops
from tests.benchmarks.report import Figure, Row

BIG = ("customers", "orders")
# seconds: the longest source.lookback of the example mappings the idle service runs (their
# windows settle that long after the service's first passes)
LOOKBACK = max(load_mapping_file(MAPPINGS / f"{name}.toml").source.lookback for name in TWELVE)


def _explain(rt: Runtime, name: str) -> str:
    m = rt.compiled[name].mapping
    saved = rt.store.get_cursor(name)
    assert saved is not None
    start = q.Position(q.shift_back(saved.value, m.source.lookback, rt.config.shop_tz), None)
    upper = q.upper_bound(rt.reader.db_now_utc(), 2.0, saved.value, rt.config.shop_tz)
    stmt = q.page_query(m.source, start, upper, rt.syncer(name).page_size)
    sql = str(stmt.compile(rt.reader.engine, compile_kwargs={"literal_binds": True}))
    with rt.reader.engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql).scalars()
        return "\n".join(plan)


def _idle_passes(rt: Runtime, names: tuple[str, ...], passes: int) -> dict[str, list[float]]:
    # the state store keeps its engine private; counting its statements needs it
    shop_q, state_q = count_queries(rt.reader.engine), count_queries(rt.store._engine)
    out: dict[str, list[float]] = {}
    for name in names:
        times = []
        shop0, state0 = shop_q[0], state_q[0]
        for _ in range(passes):
            started = time.perf_counter()
            res = rt.syncer(name).run_pass()
            times.append((time.perf_counter() - started) * 1000)
            assert res.outcome == "ok", res.message
            assert res.counts.items_sent == 0, f"{name}: an idle pass sent {res.counts.items_sent}"
        out[name] = [
            statistics.median(times),
            sorted(times)[max(0, int(len(times) * 0.95) - 1)],
            (shop_q[0] - shop0) / passes,
            (state_q[0] - state0) / passes,
        ]
    return out


def test_idle_cost(settings: Settings, shops: Shops, record: Recorder, tmp_path: Path) -> None:
    fig = Figure(
        "3-idle",
        "Idle cost: a pass that finds no change, and the idle service",
        "(a) Cursors set after the last row (as a finished backfill leaves them), one pass to "
        f"record the lookback window, then {settings.idle_passes} timed passes per mapping "
        "(median and 95th percentile wall time of `run_pass`, statements per pass on the shop "
        "and state databases; the state database is SQLite). (b) `python -m connector.cli run` "
        f"with the 12 example mappings but vouchers and carts, poll interval {settings.poll:.0f} "
        f"s, nothing changing: process CPU time over {settings.idle_seconds:.0f} s after a "
        "warm-up, while the passes still re-read their lookback windows, and (not with "
        f"--quick) again over {settings.idle_seconds:.0f} s once nothing has changed for the "
        f"lookback ({LOOKBACK / 60:.0f} min) and the windows have settled. Reference for (b): "
        "one core.",
    )
    main = settings.main
    for backend in settings.backends:
        names = TWELVE if backend == main else BIG
        cfg = make_config(tmp_path / f"a-{backend}", shops.url(backend), "http://sink", names)
        with Runtime.open(cfg, transport=sink_transport()) as rt:
            cursors_to_end(rt)
            for result in rt.run_once():
                assert result.outcome == "ok", result.message
            timed = _idle_passes(rt, names, settings.idle_passes)
            if backend == "postgresql":
                for name in BIG:
                    plan = _explain(rt, name)
                    fig.blocks.append((f"EXPLAIN of the `{name}` page query (PostgreSQL):", plan))
                    seq = f"Seq Scan on {name}" in plan or "Seq Scan on o " in plan
                    fig.add(
                        Row(
                            f"{name}: page query uses the cursor index",
                            0 if seq else 1,
                            "",
                            target="index scan, no Seq Scan",
                            met=not seq and "Index Cond" in plan,
                            note="orders: the cursor predicate is pushed into the query "
                            "source's subquery (Index Cond on o.updated_at)"
                            if name == "orders"
                            else "two index-ordered branches (cursor, fallback) merged",
                        )
                    )
        for name, (median, p95, shop_n, state_n) in timed.items():
            big = name in BIG
            fig.add(
                Row(
                    f"idle pass, {name} on {backend}",
                    median,
                    "ms",
                    target="<= 10 ms" if big and backend == "postgresql" else "",
                    met=median <= 10 if big and backend == "postgresql" else None,
                    goal=10,
                    lower=True,
                    note=f"p95 {p95:.1f} ms; {shop_n:.0f} shop + {state_n:.0f} state statements",
                )
            )
    _service(settings, shops, fig, tmp_path)
    slow = [r for r in fig.rows if r.what.startswith("idle pass") and r.value > 10]
    expr = [r for r in slow if r.what.split(", ")[1].split(" on ")[0] in _expression_cursors()]
    if expr:
        fig.notes.append(
            "Idle passes of mappings whose cursor is an expression: "
            + ", ".join(f"{r.what.split(', ')[1]} {r.value:.0f} ms" for r in expr)
            + ". Their cursor (CASE WHEN t.updated_at > p.updated_at ... AS sync_updated_at in "
            "the example mappings) cannot use any index, so every pass scans and sorts the "
            "whole query. Such a mapping should take an indexed column as its cursor and "
            "watch the other table through a [changes.NAME] section (its own cursor)."
        )
    other = [r for r in slow if r not in expr]
    if other:
        fig.notes.append(
            "Other idle passes over 10 ms: "
            + ", ".join(f"{r.what.split(', ')[1]} {r.value:.1f} ms" for r in other)
            + " (fixed per-pass statements, see the counts; "
            "the target applies to PostgreSQL)."
        )
    record(fig)


def _expression_cursors() -> set[str]:
    """Example mappings whose cursor column is computed by a CASE expression in their query."""
    out = set()
    for name in TWELVE:
        text = (MAPPINGS / f"{name}.toml").read_text()
        found = re.search(r'^cursor\s*=\s*"([^"]+)"', text, re.M)
        if found and re.search(rf"CASE\b.*?\bAS\s+{found.group(1)}\b", text, re.S | re.I):
            out.add(name)
    return out


def _counter(port: int, name: str) -> int:
    """A counter of the service's Prometheus endpoint, summed over its labels: passes made,
    rows read. Not its log (consecutive idle passes are logged at DEBUG) nor its run rows (they
    share one)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found = re.findall(rf"^shopimind_connector_{name}_total(?:{{.*}})? (\S+)$", text, re.M)
    return round(sum(float(v) for v in found))


@dataclass
class _Idle:
    cpu: float
    wall: float
    passes: int
    rows: int
    sent: int


def _measure(proc: subprocess.Popen[bytes], port: int, sb: Sandbox, seconds: float) -> _Idle:
    passes0, rows0 = _counter(port, "passes"), _counter(port, "rows_read")
    cpu0, t0, sent0 = cpu_seconds(proc.pid), time.monotonic(), len(sb.requests)
    time.sleep(seconds)
    cpu, wall = cpu_seconds(proc.pid) - cpu0, time.monotonic() - t0
    return _Idle(
        cpu,
        wall,
        _counter(port, "passes") - passes0,
        _counter(port, "rows_read") - rows0,
        len(sb.requests) - sent0,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _service(settings: Settings, shops: Shops, fig: Figure, tmp: Path) -> None:
    url = shops.url(settings.main)
    folder = tmp / "service"
    with Sandbox({KEY}, requests_per_minute=600) as sb:
        port = _free_port()
        data = config_dict(
            folder,
            url,
            sb.url,
            TWELVE,
            sync={"poll_interval": settings.poll},
            metrics={"listen": f"127.0.0.1:{port}"},
        )
        folder.mkdir(parents=True, exist_ok=True)
        cfg = make_config(folder, url, sb.url, TWELVE, sync={"poll_interval": settings.poll})
        with Runtime.open(cfg, transport=sink_transport()) as rt:
            cursors_to_end(rt)
            for result in rt.run_once():
                assert result.outcome == "ok", result.message
        path = write_config(folder / "config.toml", data)
        env = {**os.environ, "PYTHONPATH": str(REPO), "SHOPIMIND_API_KEY": KEY}
        proc = subprocess.Popen(
            [sys.executable, "-m", "connector.cli", "run", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=open(folder / "service.log", "w"),  # noqa: SIM115
            cwd=folder,
            env=env,
        )
        try:
            started = time.monotonic()
            time.sleep(2 * settings.poll + 2)  # start-up and the first passes
            assert proc.poll() is None, (folder / "service.log").read_text()[-2000:]
            phases = [("windows re-read", _measure(proc, port, sb, settings.idle_seconds))]
            if not settings.quick:  # windows settle LOOKBACK after the service's first passes
                time.sleep(max(0.0, started + LOOKBACK + 2 * settings.poll + 2 - time.monotonic()))
                assert proc.poll() is None, (folder / "service.log").read_text()[-2000:]
                phases.append(("windows settled", _measure(proc, port, sb, settings.idle_seconds)))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    settled = phases[-1][0] == "windows settled"
    for phase, m in phases:
        share = m.cpu / m.wall * 100
        goal = phase == "windows settled" or not settled
        fig.add(
            Row(
                f"service CPU, 12 mappings idle, {settings.poll:.0f} s poll ({settings.main}), "
                + phase,
                share,
                "% of one core",
                100.0,
                "one core",
                target="< 1 %" if goal else "",
                met=share < 1.0 if goal else None,
                goal=1 if goal else None,
                lower=True,
                note=f"{m.cpu:.2f} s CPU in {m.wall:.0f} s; {m.passes} passes meanwhile "
                f"({m.passes / m.wall * settings.poll / 12:.2f} per mapping and poll interval), "
                f"{m.rows:,} shop rows read; {m.sent} API requests while idle",
            )
        )
        assert m.sent == 0, f"the idle service sent {m.sent} requests"
    if settled:
        fig.notes.append(
            "The idle service is measured twice: in its first minute, while every pass still "
            "re-reads its lookback window (the rows changed in the 5 minutes before the "
            "cursor, with their child rows and stored hashes; no target), and once nothing "
            f"has changed for the lookback ({LOOKBACK / 60:.0f} min) and the windows have "
            "settled: idle passes then start just after their cursor and read no row "
            "(README, 'When the window settles'). The target applies to the second."
        )
    else:
        fig.notes.append(
            "--quick measures the idle service only in its first minute (windows re-read); "
            f"the settled figure needs {LOOKBACK / 60:.0f} minutes without a change."
        )
    share = phases[-1][1].cpu / phases[-1][1].wall * 100
    if share >= 1.0:
        fig.notes.append(
            f"The idle service used {share:.2f}% of a core: each pass runs a fixed number of "
            "statements on the shop and state databases (see the statement counts above), and "
            "12 mappings every 5 s are 2.4 passes a second, spread over the interval. What is "
            "left is mostly SQLAlchemy's and the drivers' cost per statement and the "
            "scheduler's per job; this shared 2-core VM's speed also varies from run to run."
        )

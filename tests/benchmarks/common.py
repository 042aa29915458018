"""Shared pieces of the benchmarks: configs, the instant API sink, cursors at the end, RSS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from connector import sync as sync_module
from connector.config import Config, config_from_dict
from connector.mapping.spec import Mapping
from connector.runtime import Runtime
from connector.source import query as q
from connector.state.model import Cursor
from connector.state.store import StateStore
from connector.sync import CHILD_META

KEY = "bench-key-0123456789abcdefXYZ"
TZ = "Europe/Paris"
REPO = Path(__file__).resolve().parents[2]
MAPPINGS = REPO / "mappings"

# the twelve mappings of the idle-service figure: every example mapping but vouchers and carts
TWELVE = (
    "customers_groups",
    "orders_statuses",
    "orders_carriers",
    "products_categories",
    "products_manufacturers",
    "customers",
    "newsletter_subscribers",
    "customers_addresses",
    "products",
    "products_variations",
    "products_images",
    "orders",
)


def copy_mappings(folder: Path, names: Sequence[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.toml"):
        old.unlink()
    for n in names:
        shutil.copy(MAPPINGS / f"{n}.toml", folder / f"{n}.toml")
    return folder


MAP_WORKERS_ENV = "SHOPIMIND_BENCH_MAP_WORKERS"


def config_dict(
    tmp: Path,
    shop_url: str,
    base_url: str,
    mappings: Sequence[str],
    **sections: dict[str, Any],
) -> dict[str, Any]:
    data: dict[str, dict[str, Any]] = {
        "source": {"url": shop_url, "timezone": TZ},
        "shopimind": {"base_url": base_url, "api_key_env": "SHOPIMIND_API_KEY"},
        "state": {"url": f"sqlite:///{tmp / 'state.sqlite'}"},
        "sync": {"mappings_dir": str(copy_mappings(tmp / "mappings", mappings))},
    }
    workers = os.environ.get(MAP_WORKERS_ENV)  # to compare: unset = the machine's default
    if workers:
        data["sync"]["map_workers"] = int(workers)
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def make_config(
    tmp: Path, shop_url: str, base_url: str, mappings: Sequence[str], **kw: Any
) -> Config:
    """A config in memory, its state database created (``db upgrade``)."""
    os.environ["SHOPIMIND_API_KEY"] = KEY
    cfg = config_from_dict(config_dict(tmp, shop_url, base_url, mappings, **kw), base_dir=tmp)
    with StateStore(cfg.state_url()) as store:
        store.upgrade()
    return cfg


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """The same config as a TOML file (for the CLI run as a subprocess)."""
    lines: list[str] = []
    for name, values in data.items():
        lines.append(f"[{name}]")
        for k, v in values.items():
            lines.append(f"{k} = {json.dumps(v)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


ENVELOPE = b'{"statusCode":200,"rejected_count":0,"rejected_items":[]}'


def sink_transport() -> httpx.MockTransport:
    """An API that accepts everything instantly (the body is not parsed: no sent_count, so the
    client counts the items it sent)."""

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=ENVELOPE, headers={"Content-Type": "application/json"})

    return httpx.MockTransport(handle)


def last_position(rt: Runtime, mapping: Mapping) -> tuple[Any, tuple[Any, ...]] | None:
    """The (cursor, key) of the last row in the mapping's page order."""
    spec = mapping.source
    rel = q.source_relation(spec)
    cur = q.cursor_expr(spec, rel)
    keys = [rel.c[k] for k in spec.key]
    stmt = (
        sa.select(cur.label("c"), *keys)
        .select_from(rel)
        .where(cur.is_not(None))
        .order_by(cur.desc(), *(k.desc() for k in keys))
        .limit(1)
    )
    with rt.reader.engine.connect() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        return None
    return row[0], tuple(row[1:])


def cursors_to_end(rt: Runtime) -> None:
    """Save every mapping's cursor after its last row and its child cursors at the DB clock, as
    a finished backfill leaves them (the hashes of rows in the lookback window are recorded by
    the first pass that follows)."""
    now = rt.reader.db_now_utc()
    for m in rt.mappings:
        pos = last_position(rt, m)
        if pos is not None:
            rt.store.set_cursor(m.name, Cursor(pos[0], pos[1]))
        for cname, child in m.children.items():
            if child.cursor is None:
                continue
            sample = rt.reader.sample_child_cursor(m, child)
            if sample is None:
                continue
            upper = q.upper_bound(now, 0.0, sample, rt.config.shop_tz)
            rt.store.set_meta(CHILD_META.format(m.name, cname), Cursor(upper, ()).to_json())


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's peak resident set size (VmHWM), MB (this process's by default)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class SandboxProc:
    """``sandbox_proc`` as a child process: ``url``, ``cmd("delay 0.3")``; a context manager."""

    def __init__(self, rpm: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.benchmarks.sandbox_proc", str(rpm)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        assert self.proc.stdout is not None
        self.url = str(json.loads(self.proc.stdout.readline())["url"])

    def cmd(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        if not answer.get("ok"):
            raise RuntimeError(f"sandbox_proc: {line}: {answer}")
        return answer

    def __enter__(self) -> SandboxProc:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


AHEAD = "read ahead (shop queries)"


class Stages:
    """Wall time spent in the stages of a pass, on the thread running it: shop reads, mapping
    (transform), state lookups and commits. Reads on the read-ahead thread (``read-<mapping>``)
    overlap the pass thread's work: they are timed apart, in ``self.ahead``. Patches the
    runtime's objects; ``restore`` undoes."""

    def __init__(self, rt: Runtime, send_threads: Sequence[str] = ()) -> None:
        """``send_threads``: state store methods run on the send threads, timed apart (in
        ``self.send``), when the store has them."""
        self.seconds: dict[str, float] = {}
        self.send: dict[str, float] = {}
        self.ahead: dict[str, float] = {AHEAD: 0.0}
        self.calls: dict[str, int] = {}
        self._undo: list[tuple[Any, str, Any]] = []
        for name in send_threads:
            if hasattr(rt.store, name):
                self._patch(rt.store, name, name, self.send)
        self._patch(rt.reader, "fetch", "read (shop queries)")
        self._patch(sync_module, "transform_page", "map (transform_page)")
        if getattr(rt, "map_pool", None) is not None:  # full pages are mapped in workers
            self._patch(rt.map_pool, "units", "waiting for the mapping workers")
        lookup = "get_records" if hasattr(rt.store, "get_records") else "get_hashes"
        self._patch(rt.store, lookup, "state: hash lookups")
        self._patch(rt.store, "commit_batch", "state: batch commits")

    def _patch(self, obj: Any, name: str, label: str, into: dict[str, float] | None = None) -> None:
        fn = getattr(obj, name)
        box = self.seconds if into is None else into
        box[label] = 0.0
        self.calls[label] = 0
        lock = threading.Lock()

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                took = time.perf_counter() - started
                with lock:
                    if into is None and threading.current_thread().name.startswith("read-"):
                        self.ahead[AHEAD] += took  # off the pass thread
                    else:
                        box[label] += took
                        self.calls[label] += 1

        self._undo.append((obj, name, obj.__dict__.get(name) if hasattr(obj, "__dict__") else None))
        setattr(obj, name, timed)

    def restore(self) -> None:
        for obj, name, old in reversed(self._undo):
            if old is None:
                delattr(obj, name)
            else:
                setattr(obj, name, old)
        self._undo.clear()


def count_queries(engine: sa.Engine) -> list[int]:
    """A one-element list counting the statements run on ``engine`` from now on."""
    box = [0]

    def before(*_args: Any) -> None:
        box[0] += 1

    sa.event.listen(engine, "before_cursor_execute", before)
    return box

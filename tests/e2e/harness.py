"""End-to-end harness: a demo shop in a real database, the sandbox on loopback, a config file,
and the real ``shopimind-connector`` CLI run in-process or as a subprocess."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from connector import cli
from connector.demo import shop
from connector.mapping import CompiledMapping, load_mappings
from connector.sandbox import Sandbox
from connector.sandbox.store import key_text
from connector.state.store import StateStore

KEY = "e2e-key-0123456789abcdefXYZ"
TZ = ZoneInfo("Europe/Paris")
REPO = Path(__file__).resolve().parents[2]
MAPPINGS = REPO / "mappings"


def shop_now() -> datetime:
    return datetime.now(TZ).replace(tzinfo=None)


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


@dataclass
class Env:
    tmp: Path
    shop_url: str
    engine: sa.Engine
    sandbox: Sandbox
    mappings: Path
    config: Path = field(init=False)
    extra: dict[str, dict[str, object]] = field(default_factory=dict)

    def write_config(self, **sections: dict[str, object]) -> Path:
        base: dict[str, dict[str, object]] = {
            "source": {"url": self.shop_url, "timezone": "Europe/Paris", "safety_lag": "0s"},
            "shopimind": {
                "base_url": self.sandbox.url,
                "api_key_env": "SHOPIMIND_API_KEY",
                "max_retries": 2,
                "backoff_base": "50ms",
                "backoff_cap": "200ms",
                "timeout": "5s",
            },
            "state": {"url": f"sqlite:///{self.tmp / 'state.sqlite'}"},
            "sync": {"mappings_dir": str(self.mappings), "poll_interval": "1s"},
        }
        for name, values in sections.items():
            base.setdefault(name, {}).update(values)
        lines: list[str] = []
        for name, values in base.items():
            lines.append(f"[{name}]")
            for k, v in values.items():
                lines.append(f"{k} = {_toml(v)}")
        self.config = self.tmp / "config.toml"
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return self.config

    def cli(self, *args: str) -> Result:
        """Run a command in this process (the real CLI code path)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main([*args, "--config", str(self.config), "--log-format", "human"])
        return Result(code, out.getvalue(), err.getvalue())

    def cli_subprocess(
        self, *args: str, timeout: float = 120, env: dict[str, str] | None = None
    ) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "connector.cli", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            cwd=self.tmp,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def use_mappings(self, names: Sequence[str]) -> None:
        """Copy only these example mapping files into a private mappings folder."""
        target = self.tmp / "mappings"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        for n in names:
            shutil.copy(MAPPINGS / f"{n}.toml", target / f"{n}.toml")
        self.mappings = target
        self.write_config()

    def add_mapping(self, name: str, text: str) -> Path:
        """Write a mapping file into this env's private mappings folder (made if needed)."""
        target = self.tmp / "mappings"
        if self.mappings != target:
            self.use_mappings([])
        path = target / f"{name}.toml"
        path.write_text(text, encoding="utf-8")
        return path

    def edit_mapping(self, name: str, old: str, new: str) -> None:
        """Replace ``old`` (which must occur) by ``new`` in a private mapping file."""
        path = self.tmp / "mappings" / f"{name}.toml"
        assert self.mappings == path.parent, "call use_mappings first"
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {path.name}"
        path.write_text(text.replace(old, new), encoding="utf-8")

    def state(self) -> StateStore:
        """The connector's state store (the caller closes it)."""
        return StateStore(f"sqlite:///{self.tmp / 'state.sqlite'}")

    def status(self) -> dict[str, dict[str, Any]]:
        """``status --json`` by mapping name."""
        res = self.cli("status", "--json")
        assert res.code == 0, res.text
        return {row["mapping"]: row for row in json.loads(res.out)}

    def wait_idle(self, timeout: float = 60) -> int:
        """Wait until a running service settles: every mapping had a successful pass that started
        after the last request the sandbox saw and sent nothing, and no row is behind its
        cursor. Returns how many requests the sandbox has seen; fails after ``timeout``.

        Call it once the last write is older than the database clock minus ``safety_lag``: a
        pass does not read newer rows yet, and ``rows_behind`` does not count them."""
        deadline = time.monotonic() + timeout
        mark, seen = datetime.now(UTC), len(self.sandbox.requests)
        while time.monotonic() < deadline:
            time.sleep(0.2)
            rows = self.status().values()
            if not all(_ok_since(r, mark) for r in rows):
                continue
            now_seen = len(self.sandbox.requests)
            if now_seen == seen and all(r["rows_behind"] == 0 for r in rows):
                return seen
            mark, seen = datetime.now(UTC), now_seen
        raise AssertionError(f"the connector did not settle within {timeout}s: {self.status()}")

    def expected(self, mapping: str) -> dict[str, dict[str, Any]]:
        """What ShopiMind should hold for a mapping: every live (not soft-deleted) source row
        mapped with the connector's own CompiledMapping, rows and children read with plain SQL
        (no change capture involved); key text → item as JSON would carry it."""
        (m,) = load_mappings(self.mappings, [mapping])
        compiled = CompiledMapping(m, TZ)
        rows = self.sql(_select_all(m.source.table, m.source.query))
        kids: dict[str, dict[tuple[object, ...], list[dict[str, object]]]] = {}
        for name, child in m.children.items():
            grouped: dict[tuple[object, ...], list[dict[str, object]]] = {}
            for r in self.sql(_select_all(child.table, child.query)):
                grouped.setdefault(tuple(r[c] for c in child.child_columns), []).append(r)
            for group in grouped.values():
                group.sort(key=lambda r: tuple(_sortable(r[c]) for c in child.order_by))
            kids[name] = grouped
        out: dict[str, dict[str, Any]] = {}
        for row in rows:
            if m.source.deleted is not None and row[m.source.deleted.column] is not None:
                continue
            children = {
                name: kids[name].get(tuple(row[c] for c in child.parent_columns), [])
                for name, child in m.children.items()
            }
            built = compiled.build(row, children)
            assert built.item is not None, (mapping, row, built.problems)
            item = json.loads(json.dumps(built.item))
            out[key_text(m.resource, item)] = item
        return out

    def sql(self, text: str, **params: object) -> list[dict[str, object]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(text), params).mappings()]

    def execute(self, text: str, **params: object) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(text), params)


def _ok_since(status: dict[str, Any], mark: datetime) -> bool:
    last = status.get("last_run")
    if not last or last.get("outcome") != "ok" or not last.get("started_at"):
        return False
    started = datetime.fromisoformat(str(last["started_at"]))
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    return started > mark


def _select_all(table: str | None, query: str | None) -> str:
    return f"SELECT * FROM {table}" if table else f"SELECT * FROM ({query}) src"


def _sortable(v: object) -> tuple[bool, str]:
    return (v is None, f"{v:>20}" if isinstance(v, int) else str(v))


class ServiceProcess:
    """``shopimind-connector run`` as a child process that tests may SIGKILL and restart; its
    output goes to ``service.log`` in the env's folder (appended across restarts)."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.log = env.tmp / "service.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self.unexpected: list[int] = []  # exit codes of runs that ended without kill/stop

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._reap()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "connector.cli", "run", "--config", str(self.env.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.env.tmp,
            )
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.kills += 1
            self.proc = None
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.unexpected.append(int(self.proc.returncode))
            self.proc = None

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; returns the exit code."""
        proc = self.proc
        assert proc is not None, "not running"
        self.proc = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
                raise
        return int(proc.returncode)

    def output(self, tail: int = 4000) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return text[-tail:]


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextlib.contextmanager
def make_env(db_url: str, tmp: Path, *, scale: float = 0.1, rpm: int = 6000) -> Iterator[Env]:
    engine = sa.create_engine(db_url)
    shop.create_schema(engine)
    shop.populate(engine, scale=scale, now=shop_now())
    os.environ["SHOPIMIND_API_KEY"] = KEY
    try:
        with Sandbox(api_keys={KEY}, requests_per_minute=rpm) as sb:
            env = Env(tmp, db_url, engine, sb, MAPPINGS)
            env.write_config()
            yield env
    finally:
        engine.dispose()

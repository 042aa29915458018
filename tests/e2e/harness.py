"""End-to-end harness: a demo shop in a real database, the sandbox on loopback, a config file,
and the real ``shopimind-connector`` CLI run in-process or as a subprocess."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from connector import cli
from connector.demo import shop
from connector.sandbox import Sandbox

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

    def sql(self, text: str, **params: object) -> list[dict[str, object]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(text), params).mappings()]

    def execute(self, text: str, **params: object) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(text), params)


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

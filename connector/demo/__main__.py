"""``make demo``: a demo shop in SQLite, the local sandbox, a full sync, changes, a second sync.

Every step runs the real ``shopimind-connector`` commands (in this process) against the sandbox
over HTTP on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from connector import cli
from connector.demo import shop
from connector.sandbox import Sandbox

DEMO_KEY = "demo-key-0123456789abcdef"
DEMO_TZ = ZoneInfo("Europe/Paris")


def shop_now() -> datetime:
    """The demo shop writes naive wall-clock times in its own zone, as many shops do."""
    return datetime.now(DEMO_TZ).replace(tzinfo=None)


REPO = Path(__file__).resolve().parents[2]


def write_config(directory: Path, sandbox_url: str, mappings: Path) -> Path:
    cfg = directory / "config.toml"
    cfg.write_text(
        f"""# written by `make demo`
[source]
url = "{shop.shop_url_sqlite(directory / "shop.sqlite")}"
timezone = "Europe/Paris"
safety_lag = "0s"

[shopimind]
base_url = "{sandbox_url}"
api_key_env = "SHOPIMIND_API_KEY"
max_retries = 3
backoff_base = "100ms"

[state]
url = "sqlite:///state.sqlite"

[sync]
mappings_dir = "{mappings}"
poll_interval = "5s"
""",
        encoding="utf-8",
    )
    return cfg


def _summary(tables: dict[str, list[object]]) -> str:
    return ", ".join(f"{t}: {len(ids)}" for t, ids in tables.items()) or "none"


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(list(argv))
    return code, out.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m connector.demo")
    ap.add_argument("--dir", default=".demo", help="working folder (recreated)")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--mappings", default=str(REPO / "mappings"))
    args = ap.parse_args(argv)

    work = Path(args.dir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ["SHOPIMIND_API_KEY"] = DEMO_KEY

    engine = sa.create_engine(shop.shop_url_sqlite(work / "shop.sqlite"))
    try:
        t0 = time.monotonic()
        shop.create_schema(engine)
        counts = shop.populate(engine, scale=args.scale, now=shop_now())
        total = sum(counts.values())
        print(
            f"demo shop: {total} rows in {len(counts)} tables "
            f"({time.monotonic() - t0:.1f}s) -> {work / 'shop.sqlite'}"
        )

        with Sandbox(api_keys={DEMO_KEY}, requests_per_minute=600) as sb:
            cfg = write_config(work, sb.url, Path(args.mappings).resolve())
            print(f"local ShopiMind sandbox: {sb.url}")
            steps: list[tuple[str, list[str]]] = [
                ("state database", ["db", "upgrade"]),
                ("check", ["check"]),
                ("first sync (full)", ["sync", "--log-level", "warning"]),
            ]
            for title, cmd in steps:
                code, out = _run(*cmd, "--config", str(cfg))
                print(f"\n== {title}: shopimind-connector {' '.join(cmd)}")
                print(out.rstrip())
                if code != 0:
                    print(f"demo: step failed with exit code {code}", file=sys.stderr)
                    return code

            time.sleep(1.1)  # the changes get a later timestamp than the first pass's upper bound
            changed = shop.mutate(engine, now=shop_now())
            edits = {t: ids for t, ids in changed.items() if ids and not t.startswith("deleted:")}
            gone = {t[8:]: ids for t, ids in changed.items() if ids and t.startswith("deleted:")}
            print("\n== changes made in the shop: " + _summary(edits))
            print("   rows deleted from the shop (hard deletes): " + _summary(gone))
            time.sleep(0.1)
            for title, cmd in [
                ("second sync (only the changes, soft deletes)", ["sync"]),
                ("hard deletes", ["reconcile"]),
            ]:
                code, out = _run(*cmd, "--config", str(cfg), "--log-level", "warning")
                print(f"\n== {title}: shopimind-connector {' '.join(cmd)}")
                print(out.rstrip())
                if code != 0:
                    return code
            code, out = _run("status", "--config", str(cfg))
            print("\n== shopimind-connector status")
            print(out.rstrip())
            stats = sb.stats()
            print(
                "\nthe sandbox holds: "
                + ", ".join(f"{k}={len(sb.records(k))}" for k in sorted(stats.get("records", {})))
            )
            deleted = stats.get("deleted", {})
            print(
                "deleted on the sandbox: "
                + (", ".join(f"{k}={v}" for k, v in sorted(deleted.items())) or "nothing")
            )
    finally:
        engine.dispose()
    print(f"\ndemo files in {work} (config.toml, shop.sqlite, state.sqlite)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

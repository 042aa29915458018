"""The ``shopimind-connector`` command line.

Exit codes: 0 success; 1 a pass failed or the API refused the key; 2 invalid config, mapping
files or state database version.

The commands and their options are declared in :mod:`connector._cli_parser`; each command's
handler is here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from connector import logsetup
from connector._cli_parser import parse_args
from connector.config import Config, load_config
from connector.errors import ConfigError, ConnectorError, FatalError, MappingError
from connector.mapping import load_mappings

log = logging.getLogger("connector")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logsetup.setup(args.log_level, args.log_format)
    try:
        return _dispatch(args)
    except FatalError as exc:
        _error(str(exc))
        return exc.exit_code
    except ConnectorError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130


def _error(message: str) -> None:
    if logsetup.structured():  # journald priorities / JSON lines: through the log handler
        log.error("%s", message)
        return
    print(f"error: {logsetup.REDACT.redact(message)}", file=sys.stderr)


def _config(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    logsetup.REDACT.add(cfg.secret_values())
    for warning in cfg.warnings():
        log.warning("%s", warning)
    return cfg


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "sandbox":
        return _sandbox(args)
    cfg = _config(args)
    handler = {
        "check": _check,
        "preview": _preview,
        "draft": _draft,
        "sync": _sync,
        "run": _run,
        "health": _health,
        "status": _status,
        "reset": _reset,
        "rejected": _rejected,
        "db": _db,
        "contact": _contact,
        "reconcile": _reconcile,
        "audit": _audit,
    }[args.command]
    return handler(cfg, args)


def _check(cfg: Config, args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from connector.drivers import require_driver
    from connector.source.reader import ShopReader

    # what the config promises must work without connecting: the drivers, the password's place
    shop_url = cfg.source_url()
    require_driver(sa.make_url(cfg.state_url()), "state database")
    mappings = load_mappings(cfg.mappings_path)
    print(f"config ok: {cfg.file}")
    print(f"{len(mappings)} mapping file(s) valid: {', '.join(m.name for m in mappings)}")
    if args.offline:
        return 0
    with ShopReader(shop_url, connect_timeout=cfg.source.connect_timeout) as reader:
        problems = [p for m in mappings for p in reader.check(m)]
    for p in problems:
        print(str(p), file=sys.stderr)
    errors = [p for p in problems if not p.warning]
    if errors:
        raise MappingError(errors)
    print(f"shop database ok: every mapped table and column exists ({len(problems)} warning(s))")
    return 0


def _preview(cfg: Config, args: argparse.Namespace) -> int:
    from connector.preview import preview

    return preview(cfg, args.mapping, args.limit)


def _draft(cfg: Config, args: argparse.Namespace) -> int:
    from connector.draft import run_draft

    return run_draft(cfg, args.resource, args.table, args.all, args.out, args.force)


def _sync(cfg: Config, args: argparse.Namespace) -> int:
    from connector import lock
    from connector.progress import Progress
    from connector.runtime import Runtime, log_pass

    with (
        lock.acquire(cfg.state_url(), "sync"),
        Runtime.open(cfg, only=args.mapping or None) as rt,
        Progress(enabled=sys.stderr.isatty()) as progress,
    ):
        results = []
        for m in rt.mappings:
            if not m.enabled or rt.stop.is_set():
                continue
            total, rate = _backlog(rt, m.name) if progress.enabled else (None, None)
            progress.start(m.name, total, rate)
            syncer = rt.syncer(m.name, progress.update)
            syncer.remap_pages = None  # one pass: a re-read after a mapping change ends in it
            res = syncer.run_pass()
            progress.finish(m.name)
            log_pass(res)
            results.append(res)
    print(_table(results))
    return 0 if all(r.outcome == "ok" for r in results) else 1


def _backlog(rt: Any, name: str) -> tuple[int | None, float | None]:
    """Rows a pass of ``name`` has to read (pending count) and the rows per second the API
    budget allows it (for the ETA)."""
    from connector.status import rows_behind

    mapping = rt.compiled[name].mapping
    rate = rt.client.budget.rate * mapping.resource.batch_limit if rt.client else None
    try:
        now = rt.reader.db_now_utc()
        total = rows_behind(rt.reader, mapping, rt.store.get_cursor(name), now, rt.config)
    except ConnectorError:
        return None, rate
    return total, rate


def _table(results: Sequence[Any]) -> str:
    head = (
        f"{'mapping':<24} {'outcome':<11} {'read':>7} {'sent':>7} {'accepted':>8} "
        f"{'rejected':>8} {'deleted':>7}"
    )
    lines = [head]
    for r in results:
        c = r.counts
        lines.append(
            f"{r.mapping:<24} {r.outcome:<11} {c.rows_read:>7} {c.items_sent:>7} {c.accepted:>8} "
            f"{c.rejected:>8} {c.deleted:>7}"
        )
    return "\n".join(lines)


def _run(cfg: Config, args: argparse.Namespace) -> int:
    from connector import lock
    from connector.daemon import serve

    with lock.acquire(cfg.state_url(), "run") as held:
        return serve(cfg, lock=held)


def _health(cfg: Config, args: argparse.Namespace) -> int:
    from connector import timeutil
    from connector.health import check_health, format_health

    if args.max_age:
        try:
            max_age = timeutil.parse_duration(args.max_age)
        except ValueError:
            raise ConfigError(f"--max-age {args.max_age!r}: write a duration like 15m") from None
    else:
        max_age = args.intervals * cfg.sync.poll_interval
    rows = check_health(cfg, max_age)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(format_health(rows, max_age))
    return 0 if all(r["healthy"] for r in rows) else 1


def _status(cfg: Config, args: argparse.Namespace) -> int:
    from connector.status import collect_status, format_status

    rows = collect_status(cfg)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(format_status(rows))
    return 0


def _reset(cfg: Config, args: argparse.Namespace) -> int:
    from connector.status import reset

    print(reset(cfg, args.mapping, args.to))
    return 0


def _rejected(cfg: Config, args: argparse.Namespace) -> int:
    from connector.runtime import load_state

    if args.rejected_command == "retry":
        return _retry(cfg, args)

    with load_state(cfg) as store:
        items = store.list_rejects(args.mapping, limit=args.limit)
    if args.json:
        print(json.dumps([r.__dict__ for r in items], indent=2, default=str))
        return 0
    if not items:
        print("no open rejected items")
        return 0
    for r in items:
        print(
            f"#{r.id} {r.mapping} key={r.key} source={r.source} attempts={r.attempts} "
            f"last={_ts(r.last_seen)}"
        )
        print(f"    errors: {json.dumps(r.errors, default=str)[:500]}")
    return 0


def _retry(cfg: Config, args: argparse.Namespace) -> int:
    from connector import lock
    from connector.runtime import Runtime
    from connector.state.model import key_from_json

    with (
        lock.acquire(cfg.state_url(), "rejected retry"),
        Runtime.open(cfg, only=[args.mapping] if args.mapping else None) as rt,
    ):
        total = 0
        for m in rt.mappings:
            rejects = rt.store.list_rejects(m.name, limit=100_000)
            keys = [key_from_json(r.key) for r in rejects if r.key.startswith("[")]
            if not keys:
                continue
            counts = rt.syncer(m.name).retry_rejected(keys)
            left = rt.store.count_rejects(m.name)
            total += left
            print(
                f"{m.name}: {len(keys)} rejected row(s) re-read: {counts.rows_read} found, "
                f"{counts.accepted} accepted, {counts.rejected} rejected again; {left} still open"
            )
    return 0 if total == 0 else 1


def _ts(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%SZ")


def _reconcile(cfg: Config, args: argparse.Namespace) -> int:
    from connector import lock
    from connector.reconcile import format_results, reconcile_all
    from connector.runtime import Runtime

    with (
        lock.acquire(cfg.state_url(), "reconcile"),
        Runtime.open(cfg, only=args.mapping or None, with_api=not args.dry_run) as rt,
    ):
        results = reconcile_all(rt, dry_run=args.dry_run, max_delete_share=args.max_delete_share)
    print(format_results(results))
    return 0 if all(r.ok for r in results) else 1


def _audit(cfg: Config, args: argparse.Namespace) -> int:
    from connector.audit.cli import run_audit

    return run_audit(cfg, args)


def _contact(cfg: Config, args: argparse.Namespace) -> int:
    from connector.customdata import get_contact
    from connector.destination.budget import Budget
    from connector.destination.client import ApiClient, RetryPolicy

    sm = cfg.shopimind
    retry = RetryPolicy(sm.max_retries, sm.backoff_base, sm.backoff_cap)
    budget = Budget(sm.requests_per_minute)
    with ApiClient(sm.base_url, cfg.api_key(), budget=budget, timeout=sm.timeout, retry=retry) as c:
        found = get_contact(c, email=args.email, customer_id=args.customer_id)
    who = f"email {args.email}" if args.email is not None else f"customer id {args.customer_id}"
    if found is None:
        print(f"no ShopiMind contact for {who}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(found, indent=2, ensure_ascii=False, default=str))
    elif isinstance(found, dict):
        width = max((len(str(k)) for k in found), default=0)
        for k, v in found.items():
            print(f"{k:<{width}}  {'-' if v is None else v}")
    else:
        print(found)
    return 0


def _db(cfg: Config, args: argparse.Namespace) -> int:
    from connector.state.store import StateStore

    with StateStore(cfg.state_url()) as store:
        before, after = store.upgrade()
        where = store.url_for_display
    if before == after:
        print(f"state database {where} already at revision {after}")
    else:
        print(f"state database {where} upgraded: {before or 'empty'} -> {after}")
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    import os

    from connector.sandbox import serve

    key = os.environ.get(args.api_key_env, "")
    if not key:
        _error(f"set {args.api_key_env} to the API key the sandbox should accept")
        return 2
    serve(args.host, args.port, {key}, args.requests_per_minute)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``shopimind-connector audit``: options from the command line and the config, a progress bar
on a terminal, the report as text or JSON. Exit code 0 when nothing differs (or everything was
repaired), 1 otherwise."""

from __future__ import annotations

import argparse
import json
import sys

from connector import lock, timeutil
from connector.audit.report import format_text
from connector.audit.resume import audit_all
from connector.audit.run import AuditOptions
from connector.config import Config
from connector.errors import ConfigError
from connector.progress import Progress
from connector.runtime import Runtime


def options(cfg: Config, args: argparse.Namespace) -> AuditOptions:
    s = cfg.sync
    opts = AuditOptions(
        sample=None if args.full else args.sample,
        repair=args.repair,
        recheck_delay=s.audit_recheck_delay,
        max_delete_share=s.audit_max_delete_share,
        share=s.audit_share,
    )
    if opts.sample is not None and opts.sample < 1:
        raise ConfigError("--sample N: N must be at least 1")
    if args.max_delete_share is not None:
        if not 0 <= args.max_delete_share <= 1:
            raise ConfigError("--max-delete-share: write a share between 0 and 1, e.g. 0.5")
        opts.max_delete_share = args.max_delete_share
    if args.share is not None:
        if not 0 < args.share <= 1:
            raise ConfigError("--share: write a share above 0 and at most 1, e.g. 0.2")
        opts.share = args.share
    if args.recheck_delay is not None:
        try:
            opts.recheck_delay = timeutil.parse_duration(args.recheck_delay)
        except ValueError:
            raise ConfigError(
                f"--recheck-delay {args.recheck_delay!r}: write a duration like 30s"
            ) from None
    return opts


def run_audit(cfg: Config, args: argparse.Namespace) -> int:
    opts = options(cfg, args)
    with (
        lock.acquire(cfg.state_url(), "audit"),
        Runtime.open(cfg, only=args.mapping or None) as rt,
        Progress(enabled=sys.stderr.isatty() and not args.json) as progress,
    ):
        results = audit_all(rt, args.mapping or None, opts, progress=progress)
    if args.json:
        print(json.dumps([r.as_json() for r in results], indent=2, ensure_ascii=False, default=str))
    else:
        print(format_text(results))
    unrepaired = any(
        r.differences
        and (r.repair is None or r.repair.outcome != "ok" or r.repair.kept or r.repair.rejected)
        for r in results
    )
    return 0 if all(r.ok for r in results) and not unrepaired else 1

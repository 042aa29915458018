"""The ``shopimind-connector`` argument parser: every command, its options and their help texts.

:mod:`connector.cli` parses with it and runs the command.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from connector import __version__

# the options every command takes, before or after the command's name, and their defaults
GLOBAL_DEFAULTS: dict[str, str | None] = {
    "config": None,
    "log_level": "info",
    "log_format": "auto",
}


class _GlobalOption(argparse.Action):
    """Stores a global option wherever it stands; a second, different value is an error.

    argparse parses a command's own options into a fresh namespace and copies it over the
    top-level one, so an option declared at both levels with a default would lose a value
    written before the command. These options have no default at any level (defaults are
    filled in by :func:`parse_args`), and each parse records what it saw in ``seen``.
    """

    def __init__(self, *args: Any, seen: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen = seen

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        before = self.seen.get(self.dest)
        same = os.path.abspath if self.dest == "config" else str
        if before is not None and same(before) != same(values):
            parser.error(
                f"{'/'.join(self.option_strings)} given twice with different values "
                f"({before!r} and {values!r}): give it once"
            )
        self.seen[self.dest] = values
        setattr(namespace, self.dest, values)


def _global_options(seen: dict[str, str]) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    extra: dict[str, Any] = {"action": _GlobalOption, "default": argparse.SUPPRESS, "seen": seen}
    common.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="config file (default: $SHOPIMIND_CONNECTOR_CONFIG, else ./config.toml, else "
        "/etc/shopimind-connector/config.toml); before or after the command",
        **extra,
    )
    common.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="default: info", **extra
    )
    common.add_argument(
        "--log-format",
        choices=["auto", "human", "journal", "json"],
        help="default: auto (journal under systemd, else human)",
        **extra,
    )
    return common


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line; the global options not given get their defaults."""
    args = build_parser().parse_args(argv)
    for dest, default in GLOBAL_DEFAULTS.items():
        if not hasattr(args, dest):
            setattr(args, dest, default)
    return args


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``shopimind-connector``: the common options and every command's own."""
    common = _global_options({})

    p = argparse.ArgumentParser(
        prog="shopimind-connector",
        description="Sync an in-house shop's SQL database into ShopiMind.",
        parents=[common],
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, parents=[common])

    c = cmd(
        "check", "validate the config and mapping files, then check them against the shop database"
    )
    c.add_argument("--offline", action="store_true", help="do not connect to the shop database")

    c = cmd(
        "preview",
        "print the exact JSON items a mapping would send next (no API call, no cursor move)",
    )
    c.add_argument("mapping")
    c.add_argument("--limit", type=int, default=5, help="rows to show (default 5)")

    c = cmd(
        "draft",
        "write a first mapping file for a resource from the shop's schema and a sample of its "
        "rows (only reads the shop database)",
    )
    c.add_argument("resource", nargs="?", help="the ShopiMind resource, e.g. customers")
    c.add_argument("--table", help="the shop table of its rows (default: picked by name)")
    c.add_argument("--all", action="store_true", help="a draft for every resource found")
    c.add_argument(
        "--out",
        metavar="PATH",
        help="file to write (with --all: folder; default: the mappings folder)",
    )
    c.add_argument("--force", action="store_true", help="overwrite existing files")

    c = cmd("sync", "run one pass of every mapping (or of the named ones), then exit")
    c.add_argument(
        "--mapping", "-m", action="append", default=[], help="only this mapping (repeatable)"
    )

    cmd(
        "run",
        "run as a service: a pass of every mapping each poll interval until SIGTERM "
        "(SIGHUP re-reads the config and mapping files)",
    )

    c = cmd(
        "health",
        "exit 0 when every enabled mapping completed a successful pass recently, else 1 "
        "(for monitoring probes; reads only the state database)",
    )
    c.add_argument(
        "--intervals",
        type=float,
        default=3.0,
        metavar="N",
        help="recent = within N poll intervals (default 3)",
    )
    c.add_argument(
        "--max-age", metavar="DURATION", help="recent = within this duration, e.g. 15m (wins)"
    )
    c.add_argument("--json", action="store_true", help="machine-readable output")

    c = cmd(
        "reconcile",
        "delete on ShopiMind the rows deleted outright in the shop (compares the keys sent with "
        "the shop's rows)",
    )
    c.add_argument(
        "--mapping", "-m", action="append", default=[], help="only this mapping (repeatable)"
    )
    c.add_argument("--dry-run", action="store_true", help="compare and report; delete nothing")
    c.add_argument(
        "--max-delete-share",
        type=float,
        default=0.5,
        metavar="SHARE",
        help="delete nothing when more than this share of a mapping's records would go "
        "(default 0.5; 1 = no limit)",
    )

    c = cmd(
        "audit",
        "read back what ShopiMind holds and report what differs from the shop's rows mapped "
        "(missing, stale, ghost); --repair fixes it",
    )
    c.add_argument(
        "--mapping", "-m", action="append", default=[], help="only this mapping (repeatable)"
    )
    how = c.add_mutually_exclusive_group()
    how.add_argument(
        "--sample", type=int, metavar="N", help="check N random keys per mapping (where cheaper)"
    )
    how.add_argument("--full", action="store_true", help="check every record (the default)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_argument(
        "--repair",
        action="store_true",
        help="re-send missing and stale records, delete ghosts (with the reconciliation's guards)",
    )
    c.add_argument(
        "--max-delete-share",
        type=float,
        metavar="SHARE",
        help="delete no ghost when more than this share of a mapping's records would go "
        "(default sync.audit_max_delete_share, 0.5; 1 = no limit)",
    )
    c.add_argument(
        "--share",
        type=float,
        metavar="SHARE",
        help="share of the request budget the audit may use while live changes flow "
        "(default sync.audit_share, 0.2; all of it when idle)",
    )
    c.add_argument(
        "--recheck-delay",
        metavar="DURATION",
        help="wait this long before reading a difference again (default sync.audit_recheck_delay)",
    )

    c = cmd("contact", "show ShopiMind's unified contact of an email or a shop customer id")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--email", help="the contact's email (case-insensitive)")
    who.add_argument("--customer-id", metavar="ID", help="the shop's customer id")
    c.add_argument("--json", action="store_true", help="machine-readable output")

    c = cmd("status", "per mapping: cursor, last run, rows behind, rejected items")
    c.add_argument("--json", action="store_true", help="machine-readable output")

    c = cmd("reset", "move a mapping's cursor back (re-send from a time), or to the start")
    c.add_argument("mapping")
    c.add_argument(
        "--to",
        metavar="TIMESTAMP",
        help="shop-local time like '2026-05-01 00:00' (default: the start)",
    )

    c = cmd("rejected", "rejected items kept in the state database")
    rsub = c.add_subparsers(dest="rejected_command", required=True, metavar="ACTION")
    rl = rsub.add_parser("list", help="list open rejected items", parents=[common])
    rl.add_argument("--mapping", "-m")
    rl.add_argument("--limit", type=int, default=50)
    rl.add_argument("--json", action="store_true")
    rr = rsub.add_parser(
        "retry",
        help="re-read the rows behind open rejected items and send them again (after fixing a "
        "mapping or the data)",
        parents=[common],
    )
    rr.add_argument("--mapping", "-m")

    c = cmd("db", "state database maintenance")
    dsub = c.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    dsub.add_parser("upgrade", help="create or upgrade the state database schema", parents=[common])

    c = cmd("sandbox", "serve the local ShopiMind sandbox on loopback (for tests and demos)")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=8765)
    c.add_argument(
        "--api-key-env",
        default="SHOPIMIND_API_KEY",
        help="environment variable holding the key the sandbox accepts",
    )
    c.add_argument("--requests-per-minute", type=int, default=600)
    return p

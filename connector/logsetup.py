"""Logging: human lines on a terminal, journald-friendly lines under systemd, JSON on request.

* ``human``: ``2026-05-01 12:00:00 INFO    message`` (the default on a terminal).
* ``journal``: ``<6>logger: message`` — journald reads the priority and adds the timestamp itself;
  every line of a multi-line message carries the priority. Chosen automatically when systemd
  started the process (``$JOURNAL_STREAM`` / ``$INVOCATION_ID``).
* ``json``: one JSON object per line (``time``, ``level``, ``logger``, ``message``, ``exception``).

Every handler carries a filter that replaces known secret values with ``***``, and every formatter
redacts its finished text again (tracebacks included), so an API key or a database password can
never reach a log line, whatever code path formats it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable

_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class RedactFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def add(self, secrets: Iterable[str]) -> None:
        self.secrets.extend(s for s in secrets if s and len(s) >= 4 and s not in self.secrets)

    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self.redact(record.getMessage())
            record.args = None
            if record.exc_text:
                record.exc_text = self.redact(record.exc_text)
        return True


class HumanFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return REDACT.redact(super().format(record))


class JournalFormatter(logging.Formatter):
    """``<6>connector.sync: message`` — journald reads the priority and adds the timestamp."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        text = REDACT.redact(super().format(record))
        first, *rest = text.splitlines() or [""]
        return "\n".join([f"<{prio}>{record.name}: {first}", *(f"<{prio}>  {x}" for x in rest)])


class JsonFormatter(logging.Formatter):
    def converter(self, secs: float | None) -> time.struct_time:
        return time.gmtime(secs)  # "time" is UTC, marked with Z

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": REDACT.redact(record.getMessage()),
        }
        if record.exc_info:
            data["exception"] = REDACT.redact(self.formatException(record.exc_info))
        return json.dumps(data, ensure_ascii=False)


REDACT = RedactFilter()
_FORMAT = "human"


def structured() -> bool:
    """True when log lines are for a machine (journald or JSON), not a person at a terminal."""
    return _FORMAT in ("journal", "json")


def under_journal() -> bool:
    """stderr goes to journald: ``$JOURNAL_STREAM`` names stderr's device and inode (systemd
    sets it for services), or systemd started us (``$INVOCATION_ID``) without saying where."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if stream:
        try:
            st = os.fstat(sys.stderr.fileno())
        except (OSError, ValueError, AttributeError):
            return False
        return stream == f"{st.st_dev}:{st.st_ino}"
    return bool(os.environ.get("INVOCATION_ID"))


def setup(level: str = "info", fmt: str = "auto") -> None:
    """``fmt``: auto (journal under systemd, human otherwise), human, journal, json."""
    if fmt == "auto":
        fmt = "journal" if under_journal() else "human"
    global _FORMAT
    _FORMAT = fmt
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif fmt == "journal":
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(HumanFormatter())
    handler.addFilter(REDACT)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for noisy in ("httpx", "httpcore", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # "skipped: maximum number of running instances reached" is a pass longer than the poll
    # interval (a backfill), which is expected; the service logs job errors itself
    logging.getLogger("apscheduler").setLevel(logging.ERROR)

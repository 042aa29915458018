"""Every error the connector raises, grouped by what the caller should do.

::

    ConnectorError                 base; ``str(err)`` is a complete, secret-free message
    ├── FatalError                 stop the command; a person must act (exit code 2 or 1)
    │   ├── ConfigError            config file invalid or unreadable              → exit 2
    │   ├── MappingError           mapping files invalid (carries every problem)  → exit 2
    │   ├── StateSchemaError       state database behind/ahead of this version   → exit 2
    │   ├── StateUnusableError     state database unreadable, damaged, half made  → exit 2
    │   ├── AuthError              401/403: API key missing, invalid, not allowed → exit 1
    │   └── LockedError            another instance holds the state database     → exit 1
    ├── RetriableError             stop this mapping's pass; the next pass retries; cursor kept
    │   ├── SourceError            shop database unreachable / query failed
    │   ├── StateError             state database unreachable / write failed
    │   ├── DeliveryError          API unreachable, 5xx/429 after retries, bad answer
    │   └── SchemaMismatchError    the rows lack a column the mapping names: fix the mapping
    └── BadDataError               one row cannot become a valid item: rejected, kept, reported

Foreign exceptions (SQLAlchemy, httpx, tomllib) are translated into these at one boundary each:
``source.reader``, ``state.store``, ``destination.client``, ``config``/``mapping.load``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ConnectorError(Exception):
    """Base class; the message is meant for a person and never contains a secret."""


class FatalError(ConnectorError):
    exit_code = 1


class ConfigError(FatalError):
    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One problem in one file: ``file: key.path: message``."""

    file: str
    path: str
    message: str
    line: int | None = None
    warning: bool = False

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.path:
            where += f": {self.path}"
        prefix = "warning: " if self.warning else ""
        return f"{where}: {prefix}{self.message}"


class MappingError(FatalError):
    exit_code = 2

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in mapping files:"
        super().__init__("\n".join([head, *("  " + str(p) for p in self.problems)]))


class StateSchemaError(FatalError):
    exit_code = 2


class StateUnusableError(FatalError):
    """The state database cannot be used as it is (a file that cannot be opened or is no
    database, a server that refuses the login or lacks the database, tables without a version):
    restarting would not help, a person must repair or replace it."""

    exit_code = 2


class AuthError(FatalError):
    exit_code = 1


class LockedError(FatalError):
    exit_code = 1


class RetriableError(ConnectorError):
    pass


class SourceError(RetriableError):
    pass


class StateError(RetriableError):
    pass


class DeliveryError(RetriableError):
    pass


class SchemaMismatchError(RetriableError):
    """The source rows lack a column the mapping uses: no row of the page is sent, the cursor
    stays; other mappings go on. Detected before sending so a typo never rejects every row."""


class BadDataError(ConnectorError):
    pass

"""Plain values the state store reads and writes; no I/O here.

Cursor values are kept exactly as the shop database returned them (a naive ``datetime`` stays
naive, microseconds included, an integer stays an integer) so that the next query compares the
same value at the column's full precision. ``encode_value``/``decode_value`` round-trip them
through JSON without loss.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

Scalar = Any  # a value from a shop database row: int, str, Decimal, datetime, date, bytes, None


def encode_value(value: Scalar) -> Any:
    """A JSON-safe, type-tagged form of a shop database value."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return {"float": repr(value)}
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    if isinstance(value, time):
        return {"time": value.isoformat()}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"hex": bytes(value).hex()}
    raise TypeError(f"cannot store a value of type {type(value).__name__} in a cursor or key")


def decode_value(data: Any) -> Scalar:
    if not isinstance(data, dict):
        return data
    ((tag, text),) = data.items()
    if tag == "float":
        return float(text)
    if tag == "decimal":
        return Decimal(text)
    if tag == "datetime":
        return datetime.fromisoformat(text)
    if tag == "date":
        return date.fromisoformat(text)
    if tag == "time":
        return time.fromisoformat(text)
    if tag == "hex":
        return bytes.fromhex(text)
    raise ValueError(f"unknown value tag {tag!r}")


def key_json(key: tuple[Scalar, ...]) -> str:
    """The canonical text form of a row key, used as the identity of a record in the state DB."""
    return json.dumps([encode_value(v) for v in key], separators=(",", ":"), sort_keys=True)


def key_from_json(text: str) -> tuple[Scalar, ...]:
    return tuple(decode_value(v) for v in json.loads(text))


@dataclass(frozen=True)
class Cursor:
    """Position after the last row delivered: ``(value, key)`` compared as a tuple."""

    value: Scalar
    key: tuple[Scalar, ...]

    def to_json(self) -> str:
        return json.dumps(
            {"value": encode_value(self.value), "key": [encode_value(v) for v in self.key]},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Cursor:
        data = json.loads(text)
        return cls(decode_value(data["value"]), tuple(decode_value(v) for v in data["key"]))


@dataclass(frozen=True)
class Reject:
    """One item that could not be delivered: kept until the row changes and is accepted."""

    mapping: str
    key: str  # key_json of the row, or "" when the API's answer could not be matched to a row
    payload: Any  # the item as built (JSON-able), or None when it could not be built
    errors: Any  # JSON-able: the API's rejected entry whole, or the connector's own messages
    source: str = "api"  # "api" (rejected_items) or "local" (failed validation before sending)


@dataclass(frozen=True)
class Accepted:
    """A record ShopiMind accepted: its key and the hash of the payload that was sent."""

    key: str
    hash: str


@dataclass
class RunCounts:
    rows_read: int = 0
    items_sent: int = 0
    accepted: int = 0
    rejected: int = 0
    unchanged: int = 0
    deleted: int = 0
    requests: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RunRecord:
    id: int
    mapping: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None  # "ok" | "failed" | "interrupted" | None while running
    message: str | None
    counts: RunCounts = field(default_factory=RunCounts)


@dataclass(frozen=True)
class RejectRecord:
    id: int
    mapping: str
    key: str
    payload: Any
    errors: Any
    source: str
    first_seen: datetime
    last_seen: datetime
    attempts: int


@dataclass(frozen=True)
class MappingStatus:
    mapping: str
    cursor: Cursor | None
    cursor_saved_at: datetime | None
    last_run: RunRecord | None
    last_ok_at: datetime | None
    rejected: int
    known_sent: int
    known_deleted: int
    known_pending: int = 0  # marked 'pending_delete' by a reconciliation, not deleted yet

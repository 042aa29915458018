"""Pure transformation of a page of rows: row → API item + content hash, or delete, or reject."""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import orjson

from connector.mapping.compile import CompiledMapping, MissingColumn
from connector.mapping.compile import get_column as _get
from connector.mapping.convert import to_bool
from connector.mapping.spec import ChildSpec, DeletedSpec, Mapping
from connector.source.query import CURSOR_LABEL
from connector.state.model import key_json

Row = dict[str, Any]
_MISSING: Any = object()


def get_column(row: Row, column: str, path: str = "source") -> Any:
    try:
        return _get(row, column)
    except KeyError:
        raise MissingColumn(path, column) from None


# what json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False) does, built once;
# items are trees built afresh for each row, so the check for reference cycles is skipped
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False
)


def payload_hash(item: Any) -> str:
    """A stable hash of an item's JSON: the same content always gives the same hash."""
    return hashed_json(item)[0]


def hashed_json(item: Any) -> tuple[str, bytes]:
    """The payload hash and the canonical JSON it hashes (UTF-8), which is also a valid request
    body for the item: the send threads reuse it instead of encoding the item a second time."""
    data = canonical_json(item)
    return hashlib.sha256(data).hexdigest(), data


# orjson writes the same text as the standard encoder above, 2-3x faster, except: some small
# floats (1e-05 as 0.00001, 1e-09 as 1e-9: see _float_text_differs, which never misses one;
# tests/unit/test_canonical_json.py checks it), NaN and infinities (null; the converters refuse
# them), and types the standard encoder refuses (it raises for them here too: passthrough)
_FAST = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_SHORT_EXPONENT = re.compile(rb"e-\d(?!\d)")  # starts with a literal: a fast scan
_DIGITS = frozenset(b"0123456789")


def _float_text_differs(data: bytes) -> bool:
    """Whether orjson's text may hold a float the standard encoder writes otherwise: a run of
    zeros after a decimal point (0.00001) or a one-digit negative exponent (1e-9; Python writes
    1e-09). Text inside strings can match too: it is then encoded the standard way, same bytes."""
    if b".0000" in data:
        return True
    for found in _SHORT_EXPONENT.finditer(data):
        at = found.start()
        if at and data[at - 1] in _DIGITS:
            return True
    return False


def canonical_json(item: Any) -> bytes:
    """``json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` in
    UTF-8, byte for byte (payload hashes stored by earlier versions stay valid)."""
    try:
        data = orjson.dumps(item, option=_FAST)
        if not _float_text_differs(data):  # else maybe a float written differently
            return data
    except TypeError:  # orjson.JSONEncodeError: integers over 64 bits, lone surrogates, ...
        pass
    return _CANONICAL.encode(item).encode("utf-8")


DELETE_HASH = "deleted"


class Unit(NamedTuple):
    """What to do with one source row. A named tuple: made for every row, and sent back from
    the mapping worker processes, where a tuple pickles several times faster than an object."""

    kind: Literal["send", "delete", "reject"]
    key: tuple[Any, ...]
    key_text: str
    position: tuple[Any, tuple[Any, ...]] | None  # (cursor value, key); None for NULL cursors
    item: dict[str, Any] | None = None
    hash: str = ""
    problems: tuple[str, ...] = ()
    body: bytes = b""  # the item's canonical JSON (what ``hash`` hashes), for the request

    @property
    def payload(self) -> dict[str, Any] | None:
        """The item; a unit mapped in a worker process carries only its JSON (``body``)."""
        if self.item is None and self.body:
            return orjson.loads(self.body)  # type: ignore[no-any-return]
        return self.item


def row_key(row: Row, mapping: Mapping) -> tuple[Any, ...]:
    return tuple(get_column(row, k, "source.key") for k in mapping.source.key)


def is_deleted(row: Row, spec: DeletedSpec | None) -> bool:
    if spec is None:
        return False
    v = get_column(row, spec.column, "source.deleted")
    if spec.when == "not_null":
        return v is not None
    if spec.when == "true":
        try:
            return v is not None and to_bool(v)
        except ValueError:
            return False
    return v is not None and str(v) == str(spec.value)


def group_children(child: ChildSpec, rows: Sequence[Row]) -> dict[tuple[Any, ...], list[Row]]:
    out: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    cols = child.child_columns
    where = f"{child.path}.parent_key"
    if len(cols) == 1:  # the usual one-column link, without a generator per row
        (col,) = cols
        for r in rows:
            v = r.get(col, _MISSING)
            out[(get_column(r, col, where) if v is _MISSING else v,)].append(r)
        return out
    for r in rows:
        out[tuple([get_column(r, c, where) for c in cols])].append(r)
    return out


def parent_link(row: Row, child: ChildSpec) -> tuple[Any, ...]:
    cols = child.parent_columns
    if len(cols) == 1 and cols[0] in row:  # the usual one-column link
        return (row[cols[0]],)
    return tuple([get_column(row, c, f"{child.path}.parent_key") for c in cols])


class Recent:
    """What the rows of a mapping's last short pages mapped to, so that a row read again
    unchanged is not mapped and hashed again.

    A pass re-reads the lookback window behind its cursor (and every row whose cursor is NULL)
    each time; on an idle shop these rows are the same on every pass. A row is reused only if
    it equals, column by column, the row it was mapped from, with equal child rows, under the
    same compiled mapping: a mapping's output depends on nothing else, so the unit is the one
    mapping it again would give. The unit still goes through the writer, which compares its
    hash with the stored one (a ``reset`` or a rejected item is sent again as before).

    Entries live for one pass (what the previous pass recorded is read, what this pass sees
    is recorded for the next one) and are capped, so a backfill does not grow it."""

    LIMIT = 2000

    def __init__(self) -> None:
        self._compiled: CompiledMapping | None = None
        self._old: dict[str, tuple[Row, dict[str, list[Row]], Unit]] = {}
        self._new: dict[str, tuple[Row, dict[str, list[Row]], Unit]] = {}

    def begin(self, compiled: CompiledMapping) -> None:
        """A pass starts: what the previous pass recorded is what can be reused."""
        if compiled is not self._compiled:  # a reloaded mapping maps rows differently
            self._compiled, self._new = compiled, {}
        self._old, self._new = self._new, {}

    def get(self, key: str, row: Row, kids: dict[str, list[Row]]) -> Unit | None:
        old = self._old.get(key)
        if old is None or old[0] != row or old[1] != kids:
            return None
        if len(self._new) < self.LIMIT:
            self._new[key] = old
        return old[2]

    def put(self, key: str, row: Row, kids: dict[str, list[Row]], unit: Unit) -> None:
        if len(self._new) < self.LIMIT:
            self._new[key] = (row, kids, unit)


def transform_page(
    compiled: CompiledMapping,
    rows: Sequence[Row],
    children: dict[str, dict[tuple[Any, ...], list[Row]]],
    recent: Recent | None = None,
    *,
    keep_items: bool = True,
) -> list[Unit]:
    """Turn a page of rows (with their children grouped by parent link) into units, in order;
    with ``recent``, rows mapped unchanged by the previous pass are not mapped again. Without
    ``keep_items`` a unit to send carries its JSON only (see ``Unit.payload``)."""
    mapping = compiled.mapping
    keys = mapping.source.key
    deleted = mapping.source.deleted
    links = [
        (name, child.parent_columns, children.get(name, {}), f"{child.path}.parent_key")
        for name, child in mapping.children.items()
    ]
    build = compiled.build
    units: list[Unit] = []
    append = units.append
    for row in rows:
        key = tuple([get_column(row, k, "source.key") for k in keys])
        # key_json of the usual one-integer key, without the JSON encoder (the same text)
        ktext = f"[{key[0]}]" if len(key) == 1 and type(key[0]) is int else key_json(key)
        cur = row.get(CURSOR_LABEL)
        pos = (cur, key) if cur is not None else None
        if deleted is not None and is_deleted(row, deleted):
            append(Unit("delete", key, ktext, pos, hash=DELETE_HASH))
            continue
        kids = {
            name: grouped.get(tuple([get_column(row, c, where) for c in cols]), [])
            for name, cols, grouped, where in links
        }
        if recent is not None:
            unit = recent.get(ktext, row, kids)
            if unit is not None:
                append(unit)
                continue
        built = build(row, kids)
        if built.item is None:
            append(Unit("reject", key, ktext, pos, problems=built.problems))
        else:
            digest, body = hashed_json(built.item)
            item = built.item if keep_items else None
            unit = Unit("send", key, ktext, pos, item, digest, body=body)
            if recent is not None:
                recent.put(ktext, row, kids, unit)
            append(unit)
    return units

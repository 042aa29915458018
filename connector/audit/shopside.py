"""The shop's side of an audit: its rows, mapped exactly as a pass maps them
(:meth:`MappingSync.map_rows`: same compiled mapping, same child reads, same conversions).

A row is *implied* when it maps to an item (not soft-deleted, not rejected by the mapping); the
item's API key (:func:`~connector.audit.compare.api_key`) is what ShopiMind's record must carry.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from connector.audit.compare import Item, api_key, id_text
from connector.mapping.spec import ValueSpec
from connector.runtime import Runtime
from connector.source import query as q
from connector.state.model import key_from_json
from connector.sync import MappingSync

Implied = dict[str, tuple[str, Item]]  # API key -> (source key text, item)


class ShopSide:
    def __init__(self, rt: Runtime, name: str) -> None:
        self.syncer: MappingSync = rt.syncer(name)
        self.mapping = self.syncer.mapping
        self.spec = self.mapping.source
        self.reader = rt.reader
        self.page_size = max(1, rt.config.sync.page_size)
        self._kinds: list[bool] | None = None
        self.rejected = 0  # rows the mapping cannot turn into an item (kept as rejected items)

    def _what(self, text: str) -> str:
        return f"{self.mapping.file}: audit: {text}"

    def implied(self, rows: Sequence[dict[str, Any]]) -> Implied:
        out: Implied = {}
        for u in self.syncer.map_rows(rows):
            if u.kind == "send" and u.payload is not None:
                out[api_key(self.mapping.resource, u.payload)] = (u.key_text, u.payload)
            elif u.kind == "reject":
                self.rejected += 1
        return out

    def pages(self) -> Iterator[Implied]:
        """Every row, mapped, a page at a time in key order."""
        after: tuple[Any, ...] | None = None
        while True:
            keys = [
                tuple(r[k] for k in self.spec.key)
                for r in self.reader.fetch(
                    q.keys_query(self.spec, after, self.page_size), self._what("reading keys")
                )
            ]
            if not keys:
                return
            yield self.implied(self.rows(keys))
            after = keys[-1]
            if len(keys) < self.page_size:
                return

    def rows(self, keys: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i in range(0, len(keys), self.page_size):
            chunk = list(keys[i : i + self.page_size])
            stmt = q.rows_by_key_query(self.spec, self.spec.key, chunk)
            out += self.reader.fetch(stmt, self._what(f"reading {len(chunk)} row(s) by key"))
        return out

    def by_source_keys(self, texts: Sequence[str]) -> Implied:
        """The rows of these source key texts (as the state stores them), mapped."""
        return self.implied(self.rows([key_from_json(t) for t in texts])) if texts else {}

    def sample(self, n: int) -> Implied:
        """``n`` rows picked at random that map to items (soft-deleted and rejected rows are
        passed over: twice as many are picked), mapped."""
        rel = q.source_relation(self.spec)
        rnd = sa.func.rand() if self.reader.dialect in ("mysql", "mariadb") else sa.func.random()
        stmt = sa.select(*(rel.c[k] for k in self.spec.key)).select_from(rel)
        rows = self.reader.fetch(stmt.order_by(rnd).limit(2 * n), self._what(f"picking {n} rows"))
        implied = self.implied(self.rows([tuple(r[k] for k in self.spec.key) for r in rows]))
        return dict(list(implied.items())[:n])

    def key_columns(self) -> list[tuple[str, str]] | None:
        """(API key field, shop column) when each API key field is a plain column (so a record
        read from ShopiMind can be looked up in the shop); None otherwise."""
        out = []
        for name in self.mapping.resource.key:
            spec = self.mapping.fields.get(name)
            if not (
                isinstance(spec, ValueSpec)
                and spec.kind == "column"
                and spec.column
                and not spec.converts
                and spec.value_map is None
            ):
                return None
            out.append((name, spec.column))
        return out

    def lookup(self, records: Sequence[Item]) -> Implied | None:
        """The shop's rows carrying the keys of these ShopiMind records, mapped; None when the
        mapping's key cannot be looked up (see :meth:`key_columns`)."""
        cols = self.key_columns()
        if cols is None:
            return None
        numeric = self._numeric([c for _, c in cols])
        values = []
        for r in records:
            texts = [id_text(r.get(f)) for f, _ in cols]
            if all(not num or _is_int(t) for t, num in zip(texts, numeric, strict=True)):
                values.append(
                    tuple(int(t) if num else t for t, num in zip(texts, numeric, strict=True))
                )
        if not values:
            return {}  # e.g. a text key on ShopiMind where the shop's key is a number: no row
        stmt = q.rows_by_key_query(self.spec, [c for _, c in cols], list(dict.fromkeys(values)))
        rows = self.reader.fetch(stmt, self._what(f"looking up {len(values)} ShopiMind key(s)"))
        return self.implied(rows)

    def _numeric(self, columns: Sequence[str]) -> list[bool]:
        """Whether the shop stores each column as an integer (seen on one row; text if none)."""
        if self._kinds is None:
            rel = q.source_relation(self.spec, columns)
            stmt = sa.select(*(rel.c[c] for c in columns)).select_from(rel).limit(1)
            rows = self.reader.fetch(stmt, self._what("reading the key columns' types"))
            self._kinds = [
                bool(rows) and isinstance(rows[0][c], int) and not isinstance(rows[0][c], bool)
                for c in columns
            ]
        return self._kinds


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()

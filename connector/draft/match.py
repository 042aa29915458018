"""Match ShopiMind fields to the shop's columns: by name (multilingual synonyms), by type, and by
sampled values; propose conversions from the samples. Every match says how confident it is.

The columns a field may take are :class:`Avail` entries: the base table's own columns, and
columns of other tables reached through a foreign key (``lookup``: a scalar subquery in the
draft's query)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from connector.draft import words
from connector.draft.schema import Column, Table
from connector.registry import Field

CONFIDENCE = {"high": 0.85, "medium": 0.55, "low": 0.0}
BASE_URL = "https://YOUR-SHOP.example"  # a placeholder the merchant replaces

_EMAIL = re.compile(r"^\s*[^@\s]+@[^@\s]+\.[^@\s]+\s*$")
_LANG = re.compile(r"^[A-Za-z]{2}([_-][A-Za-z]{2})?$")
_URL = re.compile(r"^(https?://|/)\S+$")
# fmt: off
LANGS = frozenset((
    "ar", "bg", "ca", "cs", "da", "de", "el", "en", "es", "et", "eu", "fi", "fr", "ga", "gl",
    "he", "hr", "hu", "id", "it", "ja", "ko", "lt", "lv", "mt", "nl", "no", "nb", "pl", "pt",
    "ro", "ru", "sk", "sl", "sr", "sv", "th", "tr", "uk", "vi", "zh",
))
CURRENCIES = frozenset((
    "EUR", "USD", "GBP", "CHF", "CAD", "AUD", "JPY", "SEK", "NOK", "DKK", "PLN", "CZK", "HUF",
    "RON", "BGN", "CNY", "BRL", "MXN", "INR", "ZAR", "NZD", "SGD", "HKD", "TRY", "RUB", "ISK",
))
# fmt: on


@dataclass
class Avail:
    """A column a field can take: ``name`` as the draft's source rows carry it."""

    name: str
    col: Column
    table: str
    expr: str | None = None  # SQL for a column that is not the base table's own
    fk_table: str | None = None  # the table this column refers to, when it is a foreign key
    lookup: bool = False


@dataclass
class Choice:
    """One mapped field: its TOML value (a column name or a table), why, and how sure."""

    field: str
    spec: Any
    note: str
    confidence: str
    columns: tuple[str, ...] = ()


@dataclass
class Todo:
    field: str
    required: bool
    note: str
    is_list: bool = False  # mapped under [children.NAME]


@dataclass
class Matched:
    choices: list[Choice] = field(default_factory=list)
    todos: list[Todo] = field(default_factory=list)

    def get(self, name: str) -> Choice | None:
        return next((c for c in self.choices if c.field == name), None)


def level(score: float) -> str:
    return "high" if score >= CONFIDENCE["high"] else "medium" if score >= 0.55 else "low"


def looks_email(col: Column) -> bool:
    vals = [str(v) for v in col.values]
    return bool(vals) and sum(bool(_EMAIL.match(v)) for v in vals) >= 0.9 * len(vals)


def looks_lang(col: Column) -> bool:
    vals = [str(v) for v in col.values]
    return bool(vals) and all(_LANG.match(v) and v[:2].lower() in LANGS for v in vals)


def looks_currency(col: Column) -> bool:
    vals = [str(v).strip().upper() for v in col.values]
    return bool(vals) and all(v in CURRENCIES for v in vals)


def looks_url(col: Column) -> bool:
    vals = [str(v) for v in col.values]
    return bool(vals) and all(_URL.match(v) for v in vals)


def _compatible(f: Field, c: Column) -> bool:
    t, k = f.type, c.kind
    if t == "timestamp":
        return k in ("ts", "date")
    if t == "date":
        return k in ("date", "ts")
    if t == "boolean":
        return c.flag_like() or k in ("ts", "date")  # a timestamp: is_not_null
    if t in ("money", "number"):
        return k in ("int", "decimal")
    if t == "integer":
        return k in ("int", "decimal")
    if t == "money_string":
        return k in ("int", "decimal", "str")
    if t in ("id_string", "id_number", "id_strings", "id_numbers"):
        return k in ("int", "str")
    if t == "lang":
        return k == "str" and (looks_lang(c) or not c.values)
    if t == "currency":
        return k == "str" and (looks_currency(c) or not c.values)
    if t in ("string", "enum"):
        return (k in ("str", "int", "decimal") and not c.flag_like()) or k == "str"
    return True


def _name_score(names: tuple[str, ...], column: str) -> float:
    n = words.norm(column)
    if n in names:
        return 1.0
    toks = words.tokens(column)
    for s in names:
        if len(s) >= 4 and (n.startswith(s) or n.endswith(s) or s in toks):
            return 0.6
    return 0.0


def id_thing(fname: str) -> str:
    """``address_delivery_id`` → ``addressdelivery``; ``group_ids`` → ``group``."""
    base = re.sub(r"_ids?$", "", fname)
    return words.norm(base)


def id_score(fname: str, a: Avail, tables: dict[str, Table]) -> float:
    """How well ``a`` holds the id field ``fname`` (``manufacturer_id``)."""
    thing = id_thing(fname)
    syns = (thing, *words.THINGS.get(thing, ()))
    n = words.norm(a.name)
    if a.fk_table is not None and words.norm(a.fk_table) in {words.norm(s) for s in syns}:
        return 0.95
    names = {s + "id" for s in syns} | {"id" + s for s in syns} | {words.norm(fname)}
    if n in names:
        return 0.9
    if "id" in n and any(len(s) >= 4 and s in n for s in syns):
        return 0.6
    return 0.0


def field_score(f: Field, a: Avail, tables: dict[str, Table]) -> tuple[float, str]:
    """(score, why) of column ``a`` for field ``f``; 0 when it cannot hold it."""
    if not _compatible(f, a.col):
        return 0.0, ""
    if f.type.startswith("id_"):
        s = id_score(f.name, a, tables)
        why = f"foreign key to {a.fk_table}" if s == 0.95 else "name"
        return s, why
    names = (*words.FIELDS.get(f.name, ()), words.norm(f.name))
    s = _name_score(names, a.name)
    why = "name" if s else ""
    if f.type == "boolean" and a.col.kind in ("ts", "date") and s < 0.6:
        return 0.0, ""
    if s < 0.6:  # by the sampled values
        if f.name == "email" and looks_email(a.col):
            s, why = 0.6, "values look like e-mail addresses"
        elif f.type == "lang" and a.col.values and looks_lang(a.col):
            s, why = 0.6, "values are ISO 639-1 language codes"
        elif f.type == "currency" and a.col.values and looks_currency(a.col):
            s, why = 0.6, "values are ISO 4217 currency codes"
        elif f.name in ("url", "image_link") and looks_url(a.col):
            s, why = 0.5, "values look like URLs"
    if a.lookup:
        s *= 0.95
    return s, why


def _most_common(col: Column) -> Any:
    vals = [v for v in col.values if v is not None]
    return Counter(vals).most_common(1)[0][0] if vals else None


def value_spec(f: Field, a: Avail, why: str, score: float) -> Choice:
    """The TOML value mapping ``a`` to ``f``, with the conversions its samples call for."""
    col = a.col
    spec: dict[str, Any] = {"column": a.name}
    notes = [f"{a.table}.{a.col.name}" + (" (through its foreign key)" if a.lookup else "")]
    notes.append(f"by {why}")
    conv: list[str] = []
    if f.name == "email":
        vals = [str(v) for v in col.values]
        odd = sum(v != v.strip().lower() for v in vals)
        conv = ["trim", "lower"]
        notes.append(
            f"trim/lower: {odd} of {len(vals)} sampled values have capitals or spaces"
            if odd
            else "trim/lower: e-mails are compared case-insensitively"
        )
    elif f.type == "boolean" and col.kind in ("ts", "date"):
        conv = ["is_not_null"]
        notes.append("true when the timestamp is set")
    elif (
        f.type in ("string", "enum")
        and col.kind == "str"
        and not f.required
        and any(isinstance(v, str) and not v.strip() for v in col.values)
    ):
        conv = ["trim", "nullif_empty"]
        notes.append("some sampled values are empty strings: sent as null")
    if f.type == "enum" and f.choices:
        mapped = _enum_map(f, col)
        if mapped:
            spec["map"] = mapped
            notes.append("value map guessed from the choices' initials: check it")
            score = min(score, 0.5)
    if f.required and col.nullable and col.kind == "str" and f.type == "string" and not conv:
        spec["default"] = ""
        notes.append('NULL in the shop, required by the API: sent as ""')
    elif f.required and f.type in ("lang", "currency") and (col.nullable or col.has_nulls):
        common = _most_common(col)
        if common is not None:
            spec["default"] = str(common)
            notes.append(f"NULL → {common!s} (the most common sampled value)")
    if f.type.startswith("id_") and not f.required and 0 in col.values:
        notes.append(
            "TODO: 0 seems to mean none here; the mapping language has no such conversion "
            "yet, so 0 is sent as an id"
        )
    if conv:
        spec["convert"] = conv if len(conv) > 1 else conv[0]
    value: Any = a.name if list(spec) == ["column"] else spec
    confidence = level(score)
    if f.type == "string" and _relative_urls(col):
        confidence = "placeholder"
        if col.nullable or col.has_nulls:
            notes.append(
                f"TODO: the values are relative URLs; prefix them with your shop's base URL in "
                f"a query (e.g. '{BASE_URL}' || {a.name}, NULL kept NULL)"
            )
        else:
            value = {"template": BASE_URL + "{" + a.name + "}"}
            notes.append(f"TODO: the values are relative URLs; replace {BASE_URL} by your shop's")
    return Choice(f.name, value, "; ".join(notes), confidence, (a.name,))


def _relative_urls(col: Column) -> bool:
    vals = [str(v) for v in col.values]
    return bool(vals) and all(v.startswith("/") and not v.startswith("//") for v in vals)


def _enum_map(f: Field, col: Column) -> dict[str, str] | None:
    vals = sorted({str(v) for v in col.values})
    if not vals or set(vals) <= set(f.choices):
        return None
    out: dict[str, str] = {}
    for v in vals:
        hits = [c for c in f.choices if c.lower().startswith(v.lower()[:1])]
        if len(hits) != 1:
            return None
        out[v] = hits[0]
    return out


def match_fields(
    defs: tuple[Field, ...],
    avail: list[Avail],
    tables: dict[str, Table],
    skip: set[str],
) -> Matched:
    """Each field of ``defs`` (but ``skip``) matched to at most one column; own columns before
    looked-up ones, a column used once."""
    out = Matched()
    cands: list[tuple[float, int, str, Field, Avail]] = []
    for f in defs:
        if (
            f.name in skip
            or f.type in ("object", "objects")
            or (f.type.endswith("s") and (f.type in ("id_strings", "id_numbers")))
        ):
            continue
        for i, a in enumerate(avail):
            s, why = field_score(f, a, tables)
            if s >= 0.5:
                cands.append((s, -i, why, f, a))
    cands.sort(key=lambda c: (c[0], c[1]), reverse=True)
    used: set[str] = set()
    done: set[str] = set()
    for s, _, why, f, a in cands:
        if f.name in done or a.name in used:
            continue
        done.add(f.name)
        used.add(a.name)
        choice = value_spec(f, a, why, s)
        rival = next(
            (
                b
                for s2, _, _, g, b in cands
                if g is f and b.table != a.table and b.name not in used and s2 >= s - 0.05
            ),
            None,
        )
        if rival is not None:  # as good a column in another table: the person decides
            choice.confidence = "ambiguous"
            choice.note += f"; TODO: {rival.table}.{rival.col.name} fits as well, choose"
        out.choices.append(choice)
    order = {f.name: i for i, f in enumerate(defs)}
    out.choices.sort(key=lambda c: order[c.field])
    return out

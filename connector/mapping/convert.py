"""Pure value conversions: declared conversions (``convert = [...]``) and the registry's types.

Every function takes a shop value and returns a JSON-ready value or raises ``ValueError`` with a
message that completes the sentence "field X: ...".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from connector import timeutil
from connector.registry import Field

_TRUE = {"1", "y", "yes", "true", "t", "on", "o", "oui"}
_FALSE = {"0", "n", "no", "false", "f", "off", "non", ""}


def to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, Decimal)) or (isinstance(v, float) and not math.isnan(v)):
        if v == 0 or v == 1:
            return bool(v)
        raise ValueError(f"cannot read {v!r} as a boolean (expected 0/1, 'Y'/'N', true/false)")
    if isinstance(v, (bytes, bytearray)):
        text: str = bytes(v).decode("latin-1")
        if text in ("\x00", "\x01"):
            return text == "\x01"
        v = text
    if isinstance(v, str):
        s = v.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
    raise ValueError(f"cannot read {v!r} as a boolean (expected 0/1, 'Y'/'N', true/false)")


def _decimal(v: Any) -> Decimal:
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {v!r}")
    try:
        d = Decimal(str(v).strip()) if not isinstance(v, Decimal) else v
    except InvalidOperation:
        raise ValueError(f"expected a number, got {v!r}") from None
    if not d.is_finite():
        raise ValueError(f"expected a finite number, got {v!r}")
    return d


_CENT = Decimal("0.01")


def to_money(v: Any) -> float:
    """The amount rounded half-up to cents, as a float.

    The fast paths give exactly what the general one (through ``Decimal``) gives: a float whose
    shortest text has at most two decimals is already rounded; one with more than three (or
    three not ending in 5) cannot sit on a half-cent tie, so ``round`` (correctly rounded from
    the exact binary value) agrees with half-up rounding of its text. Ties and large or odd
    values take the general path."""
    t = type(v)
    if t is float and -1e9 < v < 1e9:
        s = repr(v)
        if "e" not in s:
            decimals = len(s) - s.index(".") - 1
            if decimals <= 2:
                return v  # type: ignore[no-any-return]
            if decimals > 3 or s[-1] != "5":
                return round(v, 2)  # type: ignore[no-any-return]
    elif t is int and -(2**53) < v < 2**53:
        return float(v)
    elif t is Decimal and v.is_finite():  # PostgreSQL's and MariaDB's NUMERIC
        money = _MONEY.get(v)
        if money is None:
            money = float(v.quantize(_CENT, rounding=ROUND_HALF_UP))
            if v:  # not zero: -0.00 equals 0.00 but gives -0.0, another JSON text
                if len(_MONEY) >= _MONEY_SIZE:
                    _MONEY.clear()
                _MONEY[v] = money
        return money
    return float(_decimal(v).quantize(_CENT, rounding=ROUND_HALF_UP))


# NUMERIC amounts already rounded: a shop has few distinct prices, and an equal Decimal (1.5,
# 1.50) rounds to the same float; clearing it when full keeps it small
_MONEY: dict[Decimal, float] = {}
_MONEY_SIZE = 4096


def to_number(v: Any) -> int | float:
    t = type(v)
    if t is int and -(2**53) < v < 2**53:
        return v  # type: ignore[no-any-return]
    if t is float and math.isfinite(v):  # what Decimal(repr(v)) gives back
        return int(v) if v.is_integer() and -(2**53) < v < 2**53 else v
    d = _decimal(v)
    return int(d) if d == d.to_integral_value() and abs(d) < 2**53 else float(d)


def to_integer(v: Any) -> int:
    if type(v) is int:
        return v
    d = _decimal(v)
    if d != d.to_integral_value():
        raise ValueError(f"expected a whole number, got {v!r}")
    return int(d)


def to_string(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8")
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, Decimal):
        return format(v.normalize(), "f") if v == v.to_integral_value() else str(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, date):
        return v.isoformat()
    return str(v)


def to_id_string(v: Any) -> str:
    if type(v) is int:  # the common case; an int's text is never blank
        return str(v)
    s = to_string(v).strip()
    if not s:
        raise ValueError("an id must not be empty")
    return s


def to_id_number(v: Any) -> int | str:
    """The API types these ids as numbers; a non-numeric shop id is sent as a string."""
    if isinstance(v, bool):
        raise ValueError(f"expected an id, got {v!r}")
    if isinstance(v, int):
        return v
    s = to_id_string(v)
    try:
        d = Decimal(s)
    except InvalidOperation:
        return s
    return int(d) if d == d.to_integral_value() else s


def to_timestamp(v: Any, tz: tzinfo) -> str:
    if type(v) is str:  # SQLite's timestamps are text: parsed, then the fast path below
        try:
            v = timeutil.parse_timestamp(v)
        except ValueError:
            raise ValueError(f"cannot read {v!r} as a timestamp") from None
    if type(v) is datetime and v.tzinfo is None:
        # the common case, shop wall-clock time: what iso_utc(to_utc(v, tz)) gives, computed
        # as astimezone does (minus the zone's offset for this wall time and fold)
        off = tz.utcoffset(v)
        if off is not None:
            u = v - off
            if u.year >= 1000:  # isoformat pads years to 4 digits, strftime does not
                return u.isoformat(timespec="milliseconds") + "Z"
    if isinstance(v, datetime):
        dt = v
    elif isinstance(v, date):
        dt = datetime(v.year, v.month, v.day)
    elif isinstance(v, str):
        try:
            dt = timeutil.parse_timestamp(v)
        except ValueError:
            raise ValueError(f"cannot read {v!r} as a timestamp") from None
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        dt = datetime.fromtimestamp(float(v), tz=tz).astimezone(tz)
    else:
        raise ValueError(f"cannot read {v!r} as a timestamp")
    return timeutil.iso_utc(timeutil.to_utc(dt, tz))


def to_date(v: Any) -> str:
    try:
        return timeutil.as_date(v).isoformat()
    except ValueError:
        raise ValueError(f"cannot read {v!r} as a date (YYYY-MM-DD)") from None


def to_lang(v: Any) -> str:
    s = to_string(v).strip().lower().replace("_", "-")
    code = s.split("-", 1)[0]
    if len(code) != 2 or not code.isalpha():
        raise ValueError(f"{v!r} is not an ISO 639-1 language code like 'fr'")
    return code


def to_currency(v: Any) -> str:
    s = to_string(v).strip().upper()
    if len(s) != 3 or not s.isalpha():
        raise ValueError(f"{v!r} is not an ISO 4217 currency code like 'EUR'")
    return s


def to_money_string(v: Any) -> str:
    if isinstance(v, str):
        return v.strip()
    return format(_decimal(v).quantize(_CENT, rounding=ROUND_HALF_UP), "f")


def to_json(v: Any) -> Any:
    if isinstance(v, Decimal):
        return to_number(v)
    if isinstance(v, datetime):
        return timeutil.iso_utc(v) if v.tzinfo else v.isoformat()
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", errors="replace")
    _finite(v)
    return v


def _finite(v: Any) -> None:
    """JSON has no NaN or infinity (the API would refuse the whole request)."""
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"expected a finite number, got {v!r}")
    elif isinstance(v, dict):
        for x in v.values():
            _finite(x)
    elif isinstance(v, (list, tuple)):
        for x in v:
            _finite(x)


def coerce(f: Field, v: Any, tz: tzinfo) -> Any:
    """Convert a non-NULL shop value to the API type of field ``f``."""
    t = f.type
    if t == "string":
        return to_string(v)
    if t == "integer":
        return to_integer(v)
    if t == "number":
        return to_number(v)
    if t == "money":
        return to_money(v)
    if t == "money_string":
        return to_money_string(v)
    if t == "boolean":
        return to_bool(v)
    if t == "timestamp":
        return to_timestamp(v, tz)
    if t == "date":
        return to_date(v)
    if t == "id_string":
        return to_id_string(v)
    if t == "id_number":
        return to_id_number(v)
    if t == "lang":
        return to_lang(v)
    if t == "currency":
        return to_currency(v)
    if t == "enum":
        s = to_string(v)
        if s not in f.choices:
            raise ValueError(f"{s!r} is not one of {', '.join(f.choices)} (add a value map)")
        return s
    if t == "json":
        return to_json(v)
    if t in ("id_strings", "id_numbers"):
        one = to_id_string if t == "id_strings" else to_id_number
        if isinstance(v, (list, tuple)):
            return [one(x) for x in v if x is not None]
        return [one(x) for x in to_string(v).split(",") if x.strip()]
    raise ValueError(f"type {t} cannot hold a single column value")


_SIMPLE: dict[str, Callable[[Any], Any]] = {
    "string": to_string,
    "integer": to_integer,
    "number": to_number,
    "money": to_money,
    "money_string": to_money_string,
    "boolean": to_bool,
    "date": to_date,
    "id_string": to_id_string,
    "id_number": to_id_number,
    "lang": to_lang,
    "currency": to_currency,
    "json": to_json,
}


def coercer(f: Field, tz: tzinfo) -> Callable[[Any], Any]:
    """``coerce`` for one field, resolved once: a non-NULL shop value → the field's API type."""
    simple = _SIMPLE.get(f.type)
    if simple is not None:
        return simple
    if f.type == "timestamp":

        def timestamp(v: Any) -> str:
            return to_timestamp(v, tz)

        return timestamp

    def general(v: Any) -> Any:
        return coerce(f, v, tz)

    return general


# --- declared conversions (convert = "..." / [...]) ---------------------------------------------


def _trim(v: Any) -> Any:
    return v.strip() if isinstance(v, str) else v


def _lower(v: Any) -> Any:
    return v.lower() if isinstance(v, str) else v


def _upper(v: Any) -> Any:
    return v.upper() if isinstance(v, str) else v


def _nullif_empty(v: Any) -> Any:
    return None if isinstance(v, str) and v.strip() == "" else v


def _not(v: Any) -> Any:
    return None if v is None else not to_bool(v)


CONVERSIONS: dict[str, Callable[[Any], Any]] = {
    "trim": _trim,
    "lower": _lower,
    "upper": _upper,
    "nullif_empty": _nullif_empty,
    "is_null": lambda v: v is None,
    "is_not_null": lambda v: v is not None,
    "not": _not,
    "string": lambda v: None if v is None else to_string(v),
    "integer": lambda v: None if v is None else to_integer(v),
    "boolean": lambda v: None if v is None else to_bool(v),
}

# conversions that look at NULL themselves (the others pass NULL through untouched)
NULL_AWARE = frozenset({"is_null", "is_not_null"})

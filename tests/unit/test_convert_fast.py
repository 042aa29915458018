"""The fast paths of the value conversions give exactly what the general paths give (payload
hashes depend on it: a different text would re-send every record once)."""

from __future__ import annotations

import random
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from connector import timeutil
from connector.mapping.convert import _CENT, _decimal, to_integer, to_money, to_number, to_timestamp


def money_reference(v: Any) -> float:
    return float(_decimal(v).quantize(_CENT, rounding=ROUND_HALF_UP))


def number_reference(v: Any) -> int | float:
    d = _decimal(v)
    return int(d) if d == d.to_integral_value() and abs(d) < 2**53 else float(d)


def floats() -> list[float]:
    rng = random.Random(7)
    out = [0.125, 2.675, 1.005, -2.675, -0.0, 0.0, 4.0833, 76.6667, 1e-05, 0.015, -1.115]
    out += [123456789.125, 999999999.995, 1e20, 5e-324, 2.0**53, -(2.0**60)]
    for _ in range(20000):
        out.append(rng.randint(-(10**7), 10**7) / 1000)
        out.append(rng.randint(-(10**8), 10**8) / 10000)
        out.append(rng.randint(-(10**6), 10**6) / 1000 + 0.0005)
        out.append(rng.uniform(-1e4, 1e4))
        out.append(rng.randint(-(10**6), 10**6) / 200)
    return out


def test_money_and_number_of_floats() -> None:
    for v in floats():
        assert repr(to_money(v)) == repr(money_reference(v)), v
        assert repr(to_number(v)) == repr(number_reference(v)), v


@pytest.mark.parametrize(
    "v",
    [0, 1, -5, 2**53 - 1, 2**53, 2**60, -(2**60), Decimal("1.2"), Decimal("1.25"),
     Decimal("1.255"), Decimal("-1.005"), Decimal("100"), Decimal("1E+3"), Decimal("-0.00"),
     Decimal("12345678901234567890.12"), "12.345", " 3.5 "],
)  # fmt: skip
def test_money_and_number_of_other_values(v: Any) -> None:
    assert repr(to_money(v)) == repr(money_reference(v))
    assert repr(to_number(v)) == repr(number_reference(v))
    if not isinstance(v, str) and v == int(v):
        assert to_integer(v) == int(v) and type(to_integer(v)) is int


def test_money_of_decimals_read_again_is_the_same() -> None:
    rng = random.Random(11)
    values = [
        Decimal(rng.randint(-(10**9), 10**9)).scaleb(-rng.randint(0, 5)) for _ in range(30000)
    ]
    values += [Decimal("-0.00"), Decimal("0.00"), Decimal("-0.004"), Decimal("0"), Decimal("-0")]
    values += [
        Decimal("1.5"),
        Decimal("1.50"),
        Decimal("1.500"),
        Decimal("-2.675"),
        Decimal("-2.6750"),
    ]
    for _round in range(2):  # the second time from the cache of rounded amounts (cleared when full)
        for v in values:
            assert repr(to_money(v)) == repr(money_reference(v)), v
    assert repr(to_money(Decimal("0.00"))) == "0.0" and repr(to_money(Decimal("-0.00"))) == "-0.0"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), Decimal("NaN"), True, "x"])
def test_money_refuses_what_it_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        to_money(bad)


@pytest.mark.parametrize("zone", ["Europe/Paris", "America/New_York", "UTC"])
def test_timestamp_text_as_its_datetime(zone: str) -> None:
    tz = ZoneInfo(zone)
    for text in [
        "2024-12-12 08:28:55.579815",
        "2024-03-31 02:30:00",  # skipped hour in Paris
        "2024-10-27 02:30:00",  # repeated hour in Paris
        "2024-11-03 01:30:00.5",
        " 2025-01-01T00:00:00Z",
        "2025-06-01 12:00:00+02:00",
    ]:
        slow = timeutil.iso_utc(timeutil.to_utc(timeutil.parse_timestamp(text), tz))
        assert to_timestamp(text, tz) == slow
        assert to_timestamp(datetime.fromisoformat(text.strip().replace("Z", "+00:00")), tz) == slow
    with pytest.raises(ValueError, match="cannot read 'soon' as a timestamp"):
        to_timestamp("soon", tz)

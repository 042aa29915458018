"""Time helpers: durations in config files, UTC instants, the API's timestamp format."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: str | int | float) -> float:
    """'90s', '5m', '1h', '250ms' or a bare number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration like '30s', '5m' or '1h'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration must not be negative")
        return float(value)
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a duration; write e.g. '30s', '5m', '1h' or '250ms'")
    return float(m.group(1)) * _UNITS[m.group(2)]


def zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name like 'Europe/Paris')"
        ) from exc


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_utc(value: datetime, shop_tz: tzinfo) -> datetime:
    """An aware UTC datetime; naive values are wall-clock times in the shop's time zone.

    For the repeated hour of a daylight-saving change, ``fold=0`` (the first occurrence) is used,
    as Python does; the skipped hour is shifted forward by the zone rules.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=shop_tz)
    return value.astimezone(UTC)


def iso_utc(value: datetime) -> str:
    """'2026-05-07T08:00:00.000Z' — the API's timestamp format."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_timestamp(value: str) -> datetime:
    """Parse a timestamp the way shop databases print them ('2026-01-02 03:04:05.123456')."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def as_date(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        return date.fromisoformat(value.strip()[:10])
    raise ValueError(f"cannot read {value!r} as a date")


def seconds(td: timedelta) -> float:
    return td.total_seconds()

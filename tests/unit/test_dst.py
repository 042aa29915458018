"""Daylight-saving changes in the shop's time zone: the pure pieces of change capture.

Europe/Paris, 2026: on 2026-03-29 the clock jumps from 02:00 to 03:00 (02:xx never exists); on
2026-10-25 it goes back from 03:00 CEST to 02:00 CET (02:00-02:59 happens twice). A shop that
stores naive wall-clock times writes, in the second pass through the repeated hour, timestamps
that sort *before* a cursor saved during the first pass.

The brute-force tests walk real instants across each change and check the one property that
matters: a row written at (or up to ``lookback`` before) the moment the cursor was saved is inside
the next pass's window, ``shift_back(cursor) <= row``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest

from connector import timeutil
from connector.source import query as q

PARIS = ZoneInfo("Europe/Paris")
FALL = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)  # 03:00 CEST -> 02:00 CET
SPRING = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 02:00 CET -> 03:00 CEST
FMT = "%Y-%m-%d %H:%M:%S.%f"


def wall(instant: datetime, tz: tzinfo = PARIS) -> datetime:
    """What a shop writing naive local times stores at ``instant``."""
    return instant.astimezone(tz).replace(tzinfo=None, fold=0)


def instants(around: datetime, minutes: int = 150, step: int = 5) -> list[datetime]:
    return [around + timedelta(minutes=m) for m in range(-minutes, minutes + 1, step)]


@pytest.mark.parametrize("change", [FALL, SPRING], ids=["repeated-hour", "skipped-hour"])
@pytest.mark.parametrize("lookback", [0, 60, 300, 1800])
def test_rows_written_after_the_cursor_are_inside_the_next_window(
    change: datetime, lookback: int
) -> None:
    """For every pair of instants (cursor saved at ``tc``, row written at ``tr >= tc - lookback``):
    the window of the next pass starts at or before the row's wall-clock time, for datetimes
    and for SQLite's text timestamps alike."""
    misses = []
    for tc in instants(change):
        start = q.shift_back(wall(tc), lookback, PARIS)
        start_text = q.shift_back(wall(tc).strftime(FMT), lookback, PARIS)
        for tr in instants(change):
            if tr < tc - timedelta(seconds=lookback):
                continue
            row = wall(tr)
            if not (start <= row and start_text <= row.strftime(FMT)):
                misses.append((wall(tc), row))
    assert not misses, f"{len(misses)} rows outside the window, e.g. {misses[:3]}"


def test_widening_is_one_hour_and_only_near_the_repeated_hour() -> None:
    first_occurrence = datetime(2026, 10, 25, 2, 30)
    assert q.shift_back(first_occurrence, 300, PARIS) == datetime(2026, 10, 25, 1, 25)
    assert q.shift_back(datetime(2026, 10, 25, 3, 10), 300, PARIS) == datetime(2026, 10, 25, 3, 5)
    ordinary = datetime(2026, 10, 24, 2, 30)
    assert q.shift_back(ordinary, 300, PARIS) == datetime(2026, 10, 24, 2, 25)
    # aware cursors (timestamptz) need no widening: they are instants
    aware = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert q.shift_back(aware, 300, PARIS) == aware - timedelta(minutes=5)
    # a zone without daylight saving never widens
    assert q.shift_back(first_occurrence, 300, UTC) == datetime(2026, 10, 25, 2, 25)


def test_the_cursor_never_passes_a_row_of_the_second_occurrence() -> None:
    """During the second 02:xx the upper bound is the second occurrence's wall-clock time, so a
    pass then reads the rows written in it; the bound is never ahead of the DB clock's wall time."""
    second = datetime(2026, 10, 25, 1, 15, tzinfo=UTC)  # 02:15 CET
    first = datetime(2026, 10, 25, 0, 15, tzinfo=UTC)  # 02:15 CEST
    like = datetime(2026, 1, 1)
    assert q.upper_bound(second, 0, like, PARIS) == datetime(2026, 10, 25, 2, 15)
    assert q.upper_bound(first, 0, like, PARIS) == datetime(2026, 10, 25, 2, 15)
    assert q.upper_bound(second, 2.5, "2026-01-01 00:00:00", PARIS) == (
        "2026-10-25 02:14:57.500000"
    )
    # aware cursors get an aware UTC bound, whatever the shop's zone says
    aware = datetime(2026, 1, 1, tzinfo=UTC)
    assert q.upper_bound(second, 1, aware, PARIS) == second - timedelta(seconds=1)
    for t in instants(FALL, step=1):
        assert q.upper_bound(t, 0, like, PARIS) == wall(t)


def test_upper_bound_never_lands_in_the_skipped_hour() -> None:
    like = datetime(2026, 1, 1)
    bounds = [q.upper_bound(t, 0, like, PARIS) for t in instants(SPRING, step=1)]
    assert not [b for b in bounds if b.date() == SPRING.date() and b.hour == 2]
    assert bounds == sorted(bounds)


def test_to_utc_repeated_hour_takes_the_first_occurrence() -> None:
    assert timeutil.to_utc(datetime(2026, 10, 25, 2, 30), PARIS) == datetime(
        2026, 10, 25, 0, 30, tzinfo=UTC
    )
    assert timeutil.to_utc(datetime(2026, 10, 25, 3, 0), PARIS) == datetime(
        2026, 10, 25, 2, 0, tzinfo=UTC
    )
    # an explicit fold=1 (a caller who knows) is honoured
    assert timeutil.to_utc(datetime(2026, 10, 25, 2, 30, fold=1), PARIS) == datetime(
        2026, 10, 25, 1, 30, tzinfo=UTC
    )


def test_to_utc_skipped_hour_converts_forward_without_error() -> None:
    # 02:30 never happened on 2026-03-29: read with the offset before the jump (+01:00), which is
    # 03:30 CEST, an hour after the last valid 01:59 CET and never before it
    got = timeutil.to_utc(datetime(2026, 3, 29, 2, 30), PARIS)
    assert got == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert got.astimezone(PARIS).replace(tzinfo=None) == datetime(2026, 3, 29, 3, 30)
    before = timeutil.to_utc(datetime(2026, 3, 29, 1, 59), PARIS)
    after = timeutil.to_utc(datetime(2026, 3, 29, 3, 0), PARIS)
    assert before < got and after <= got
    assert timeutil.iso_utc(got) == "2026-03-29T01:30:00.000Z"

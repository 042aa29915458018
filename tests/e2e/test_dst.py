"""Daylight-saving changes end to end (shop time zone Europe/Paris, naive wall-clock columns).

The database clock cannot be moved, so the transitions used are in the past (2026-10-25: 02:00 to
02:59 happens twice; 2026-03-29: 02:00 to 02:59 never happens) and the passes run "later": the
upper bound is now, and what is tested is where each pass starts — the saved cursor minus the
lookback, widened over the repeated hour. The pure pieces are tested in tests/unit/test_dst.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e import ticks
from tests.e2e.harness import Env, make_env


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    with make_env(db_url, tmp_path, scale=0.02) as e:
        assert e.cli("db", "upgrade").code == 0
        ticks.use(e, lookback="5m")
        yield e


def sync(env: Env) -> None:
    res = env.cli("sync")
    assert res.code == 0, res.text


def test_rows_of_the_second_repeated_hour_are_delivered(env: Env) -> None:
    table = ticks.create(env, ticks.micro_ts())
    day = datetime(2026, 10, 25)
    at = lambda h, m: day.replace(hour=h, minute=m)  # noqa: E731
    # first pass through 02:xx (CEST)
    ticks.insert(env, table, [(1, at(2, 20)), (2, at(2, 30))])
    sync(env)
    assert set(ticks.sent(env)) == {"1", "2"}
    assert ticks.cursor_value(env) == at(2, 30)  # the cursor sits in the first occurrence

    # the clock went back: the second 02:xx (CET) writes wall-clock times before the cursor;
    # 02:05 is 25 minutes "before" it, far outside a plain 5-minute lookback
    ticks.insert(env, table, [(3, at(2, 5)), (4, at(2, 25)), (5, at(2, 45))])
    sync(env)
    assert set(ticks.sent(env)) == {"1", "2", "3", "4", "5"}
    assert ticks.cursor_value(env) == at(2, 45)
    ticks.insert(env, table, [(6, at(2, 10))])  # still the second 02:xx, cursor now at 02:45
    sync(env)
    assert "6" in ticks.sent(env)
    # nothing was sent twice: the re-read hour is hash-checked
    assert ticks.counts(env) == {str(i): 1 for i in range(1, 7)}
    # the repeated hour is read as its first occurrence (the API gets UTC)
    assert ticks.sent(env)["3"]["updated_at"] == "2026-10-25T00:05:00.000Z"


def test_rows_in_and_around_the_skipped_hour_are_delivered(env: Env) -> None:
    table = ticks.create(env, ticks.micro_ts())
    day = datetime(2026, 3, 29)
    at = lambda h, m: day.replace(hour=h, minute=m)  # noqa: E731
    ticks.insert(env, table, [(1, at(1, 50)), (2, at(3, 1))])
    sync(env)
    assert ticks.cursor_value(env) == at(3, 1)
    # 02:30 never existed (an app computing local time by hand writes it anyway) and 01:58 CET
    # is three real minutes before 03:01 CEST, though 63 wall-clock minutes earlier
    ticks.insert(env, table, [(3, at(2, 30)), (4, at(1, 58))])
    sync(env)
    got = ticks.sent(env)
    assert set(got) == {"1", "2", "3", "4"}
    assert got["3"]["updated_at"] == "2026-03-29T01:30:00.000Z"  # converted forward (03:30 CEST)
    assert got["4"]["updated_at"] == "2026-03-29T00:58:00.000Z"
    assert got["2"]["updated_at"] == "2026-03-29T01:01:00.000Z"
    assert ticks.counts(env) == {str(i): 1 for i in range(1, 5)}

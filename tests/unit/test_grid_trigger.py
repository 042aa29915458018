"""The service spreads the mappings' passes over the poll interval (``service.GridTrigger``)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.interval import IntervalTrigger

from connector.service import GridTrigger

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def test_passes_keep_their_offset_after_the_first_pass_at_start_up() -> None:
    trigger = GridTrigger(seconds=5, start_date=T0 + s(2), timezone=UTC)
    # the first pass ran at start-up (next_run_time=now); the next one is on the job's grid
    first = trigger.get_next_fire_time(T0, T0 + 3 * MS)
    assert first == T0 + s(2)
    # asked at the very instant of the run, the next point is one interval later, not the same
    assert trigger.get_next_fire_time(first, first) == T0 + s(7)
    assert trigger.get_next_fire_time(first, first + 40 * MS) == T0 + s(7)
    # a pass longer than the interval: the next point of the grid after it, none in between
    assert trigger.get_next_fire_time(T0 + s(7), T0 + s(18)) == T0 + s(22)
    # APScheduler's own interval trigger counts from the start-up run: every mapping's passes
    # would fall on the same instant (what this trigger is for)
    plain = IntervalTrigger(seconds=5, start_date=T0 + s(2), timezone=UTC)
    assert plain.get_next_fire_time(T0, T0 + 3 * MS) == T0 + s(5)


def test_twelve_mappings_at_a_5_s_poll_run_apart() -> None:
    triggers = [
        GridTrigger(seconds=5, start_date=T0 + s(5 * i / 12), timezone=UTC) for i in range(12)
    ]
    times = []
    for trigger in triggers:
        at = T0  # every first pass at start-up
        for _ in range(3):
            at = trigger.get_next_fire_time(at, at + 10 * MS)
            times.append(at)
    later = sorted(t for t in times if t >= T0 + s(5))
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(later)]
    assert min(gaps) >= 5 / 12 - 1e-6

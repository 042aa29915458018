"""The audit's share of the request budget, on a simulated timeline (injected clock, no
sleeping): a backfill and an audit take tokens from one Budget; counts per window are checked."""

from __future__ import annotations

import heapq

import pytest

from connector.audit.share import AuditShare
from connector.destination.budget import Budget
from tests.unit.test_budget import FakeClock, max_in_window

RPM = 600
SHARE = 0.2
STEADY = RPM - RPM // 60  # the budget's steady rate per minute (its burst is refilled too)


def simulate(
    backfill_until: float, end: float, backfill_threads: int = 2
) -> tuple[list[float], list[float]]:
    """Send times of a backfill (``backfill_threads`` requests in flight, each sent as soon as
    the budget allows, until ``backfill_until``) and of an audit (one request at a time, each
    waiting for its share first) sharing one budget."""
    clock = FakeClock()
    budget = Budget(RPM, clock=clock, sleep=clock.sleep)
    share = AuditShare(budget, SHARE, idle_after=30.0, clock=clock)
    backfill: list[float] = []
    audit: list[float] = []
    # (time, order, actor, phase): actor "b" = a backfill thread, "a" = the audit
    events: list[tuple[float, int, str, str]] = [
        (0.0, i, "b", "budget") for i in range(backfill_threads)
    ]
    events.append((0.0, 99, "a", "share"))
    heapq.heapify(events)
    n = 100
    while events:
        t, _, actor, phase = heapq.heappop(events)
        if t > end:
            break
        clock.t[0] = t
        if actor == "b":
            if t >= backfill_until:
                continue
            sent = t + budget.reserve()
            backfill.append(sent)
            heapq.heappush(events, (sent + 0.05, n, "b", "budget"))  # answer, then next batch
        elif phase == "share":
            heapq.heappush(events, (t + share.reserve(), n, "a", "budget"))
        else:
            sent = t + budget.reserve()
            share.taken(1)
            audit.append(sent)
            heapq.heappush(events, (sent + 0.05, n, "a", "share"))
        n += 1
    return backfill, audit


def count(times: list[float], start: float, stop: float) -> int:
    return sum(1 for x in times if start <= x < stop)


def test_audit_during_a_backfill_keeps_to_the_budget_and_its_share() -> None:
    backfill, audit = simulate(backfill_until=600.0, end=600.0)
    assert max_in_window(backfill + audit) <= RPM  # never over the budget together
    for start in range(60, 540, 60):
        got = count(audit, start, start + 60)
        assert got <= SHARE * RPM + 1  # the audit keeps to its share ...
        assert got >= 0.9 * SHARE * RPM  # ... and gets it
        # the backfill gets the rest: at most the audit's share is taken from it
        assert count(backfill, start, start + 60) >= STEADY - SHARE * RPM - 2


def test_audit_takes_the_whole_budget_when_nothing_else_runs() -> None:
    backfill, audit = simulate(backfill_until=120.0, end=400.0)
    assert max_in_window(backfill + audit) <= RPM
    assert count(audit, 60, 120) <= SHARE * RPM + 1  # busy: its share
    assert count(audit, 200, 260) >= 0.95 * STEADY  # idle: the budget's whole rate


def test_share_must_be_a_fraction() -> None:
    budget = Budget(RPM)
    with pytest.raises(ValueError, match="share"):
        AuditShare(budget, 0)
    with pytest.raises(ValueError, match="share"):
        AuditShare(budget, 1.5)

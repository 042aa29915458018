"""The request budget: a token bucket driven by a fake clock (no real sleeping)."""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable, Sequence

import pytest

from connector.destination.budget import Budget


class FakeClock:
    """A list-backed clock; ``sleep`` advances it instead of sleeping."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = [start]
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t[0]

    def advance(self, seconds: float) -> None:
        self.t[0] += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t[0] += seconds


def max_in_window(slots: Sequence[float], window: float = 60.0) -> int:
    """The most slots falling in any half-open window ``(x - window, x]``."""
    s = sorted(slots)
    best = j = 0
    for i, x in enumerate(s):
        while s[j] <= x - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_max_in_window_helper() -> None:
    assert max_in_window([0.0, 59.9, 60.0, 119.9]) == 2
    assert max_in_window([0.0] * 5 + [59.999]) == 6
    assert max_in_window([]) == 0


def test_burst_then_steady_rate() -> None:
    clock = FakeClock()
    b = Budget(600, burst=10, clock=clock, sleep=clock.sleep)
    rate = 590 / 60
    assert b.burst == 10
    assert b.rate == pytest.approx(rate)
    waits = [b.reserve() for _ in range(30)]
    assert waits[:10] == [0.0] * 10
    for k, w in enumerate(waits[10:], start=1):
        assert w == pytest.approx(k / rate)
    assert b.waited == pytest.approx(sum(waits))

    # Long idle: the bucket refills to ``burst``, never beyond.
    clock.advance(3600)
    waits = [b.reserve() for _ in range(11)]
    assert waits[:10] == [0.0] * 10
    assert waits[10] == pytest.approx(1 / rate)


def test_default_burst_and_bounds() -> None:
    clock = FakeClock()
    assert Budget(600, clock=clock).burst == 10
    assert Budget(6000, clock=clock).burst == 100
    assert Budget(10, clock=clock).burst == 1  # at least one
    assert Budget(10, burst=50, clock=clock).burst == 5  # at most half the minute
    with pytest.raises(ValueError):
        Budget(0, clock=clock)


def test_refill_is_proportional_to_elapsed_time() -> None:
    clock = FakeClock()
    b = Budget(600, burst=10, clock=clock)
    for _ in range(10):
        assert b.reserve() == 0.0
    clock.advance(0.5)  # earns 0.5 * 590/60 = 4.9 tokens
    waits = [b.reserve() for _ in range(6)]
    assert waits[:4] == [0.0] * 4
    assert waits[4] > 0.0 and waits[5] > waits[4]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sliding_window_never_exceeds_rpm_when_hammered(seed: int) -> None:
    rng = random.Random(seed)
    rpm = 600
    clock = FakeClock()
    b = Budget(rpm, clock=clock, sleep=clock.sleep)
    slots: list[float] = []
    for i in range(2000):
        # Callers arrive far faster than the budget allows, with occasional idle spells.
        clock.advance(rng.choice([0.0, 0.001, 0.01, 0.05]))
        if i % 500 == 250:
            clock.advance(rng.uniform(5, 90))
        slots.append(clock() + b.reserve())
    assert max_in_window(slots) <= rpm
    # ...and the budget is not needlessly slow: some minute gets (nearly) the full rpm.
    assert max_in_window(slots) >= rpm - 1


def test_sliding_window_with_acquire_and_real_callers() -> None:
    """Callers that really wait (fake sleep) before the next request."""
    clock = FakeClock()
    b = Budget(120, burst=2, clock=clock, sleep=clock.sleep)
    sent: list[float] = []
    for _ in range(500):
        b.acquire()
        sent.append(clock())
        clock.advance(0.01)  # the request itself
    assert max_in_window(sent) <= 120
    assert clock.slept and all(s > 0 for s in clock.slept)
    assert b.waited == pytest.approx(sum(clock.slept))


def test_acquire_waits_on_the_stop_event_when_given() -> None:
    clock = FakeClock()
    b = Budget(60, burst=1, clock=clock, sleep=clock.sleep)
    stop = threading.Event()
    stop.set()  # a free slot is used at once; a wait interrupted by stop says "do not send"
    assert b.acquire(stop) == 0.0
    assert b.acquire(stop) == -1.0
    assert clock.slept == []


def test_pause_delays_the_next_reserve() -> None:
    clock = FakeClock(1000.0)
    b = Budget(600, clock=clock)
    b.pause(5.0)
    assert b.reserve() >= 5.0
    clock.advance(2.0)
    assert b.reserve() >= 3.0
    clock.advance(10.0)
    assert b.reserve() == 0.0


def test_pause_never_shortens_an_earlier_pause() -> None:
    clock = FakeClock()
    b = Budget(600, clock=clock)
    b.pause(30.0)
    b.pause(1.0)
    assert b.reserve() >= 30.0


def test_pause_empties_the_bucket() -> None:
    clock = FakeClock()
    b = Budget(600, burst=10, clock=clock)
    for _ in range(10):
        b.reserve()
    clock.advance(100.0)  # bucket full again
    b.pause(0.2)
    clock.advance(0.2)
    waits = [b.reserve() for _ in range(10)]
    # After a 429 nobody gets the burst right away: at most the tokens earned since the pause.
    assert sum(1 for w in waits if w == 0.0) <= 2


def test_no_burst_piles_up_at_the_end_of_a_pause() -> None:
    """Callers reserving during a pause are spread out after it, not released all at once."""
    rpm = 600
    clock = FakeClock()
    b = Budget(rpm, clock=clock)
    slots: list[float] = []
    for _ in range(100):  # a calm minute: well under the budget
        clock.advance(0.25)
        slots.append(clock() + b.reserve())
    b.pause(20.0)  # a 429
    pause_end = clock() + 20.0
    first_after = len(slots)
    for _ in range(1500):  # then everybody hammers
        clock.advance(0.002)
        slots.append(clock() + b.reserve())
    assert min(slots[first_after:]) >= pause_end
    assert max_in_window(slots) <= rpm
    assert max_in_window(slots[first_after:], window=1.0) <= b.burst + 10


def test_thread_safety_distinct_ordered_slots() -> None:
    tick = threading.local()
    counter = [0]

    def clock() -> float:  # called under the budget's lock, once per reserve()
        counter[0] += 1
        tick.now = counter[0] * 0.001
        return float(tick.now)

    b = Budget(600, burst=10, clock=clock, sleep=lambda s: None)
    start = threading.Barrier(4)
    results: list[list[tuple[float, float]]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def worker(out: list[tuple[float, float]]) -> None:
        try:
            start.wait()
            for _ in range(200):
                w = b.reserve()
                out.append((tick.now, tick.now + w))  # (order key, schedule slot)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(results[i],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    pairs = sorted(p for r in results for p in r)
    assert len(pairs) == 800
    assert len({now for now, _ in pairs}) == 800  # one clock reading per reserve
    slots = [slot for _, slot in pairs]
    assert len(set(slots)) == 800
    assert all(a <= b_ for a, b_ in itertools.pairwise(slots))
    # every thread's own slots increase
    for r in results:
        own = [slot for _, slot in r]
        assert own == sorted(own)
    assert max_in_window(slots) <= 600
    assert b.waited == pytest.approx(sum(slot - now for now, slot in pairs))


def _hammer(b: Budget, clock: Callable[[], float], n: int) -> list[float]:
    return [clock() + b.reserve() for _ in range(n)]


def test_low_rpm_budget_respects_window() -> None:
    clock = FakeClock()
    b = Budget(5, clock=clock)
    slots = _hammer(b, clock, 40)
    assert max_in_window(slots) <= 5
    assert slots == sorted(slots)

"""Per-interval increases of the cumulative counters, and rebaselining."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from autoscaler.status.counters import CounterIncrease, CounterTracker, counter_increase
from autoscaler.status.model import PoolSample


def sample(
    *,
    start: float | None = 1000.0,
    accepted: int | None = 100,
    reached: int | None = 1,
    slow: int | None = 0,
) -> PoolSample:
    return PoolSample(
        pool="www",
        process_manager="dynamic",
        start_time_seconds=start,
        start_since_seconds=10,
        accepted_connections_total=accepted,
        listen_queue=0,
        max_listen_queue=0,
        listen_queue_length=4096,
        idle_processes=1,
        active_processes=1,
        total_processes=2,
        max_active_processes=2,
        max_children_reached_total=reached,
        slow_requests_total=slow,
    )


@dataclass(frozen=True)
class Row:
    name: str
    previous: PoolSample
    current: PoolSample
    expected: CounterIncrease | None


ROWS = [
    Row(
        "increases within one start",
        sample(accepted=100, reached=1, slow=0),
        sample(accepted=130, reached=3, slow=2),
        CounterIncrease(accepted_connections=30, max_children_reached=2, slow_requests=2),
    ),
    Row(
        "no change",
        sample(),
        sample(),
        CounterIncrease(accepted_connections=0, max_children_reached=0, slow_requests=0),
    ),
    Row("start time changed", sample(start=1000.0), sample(start=1060.0, accepted=500), None),
    Row("counter went down", sample(accepted=100), sample(accepted=5), None),
    Row("one counter went down", sample(reached=4), sample(accepted=150, reached=0), None),
    Row(
        "slow requests unknown (old PHP)",
        sample(slow=None),
        sample(accepted=110, slow=None),
        CounterIncrease(accepted_connections=10, max_children_reached=0, slow_requests=None),
    ),
    Row(
        "counter missing in one sample only",
        sample(reached=None),
        sample(accepted=101, reached=2),
        CounterIncrease(accepted_connections=1, max_children_reached=None, slow_requests=0),
    ),
    Row(
        "start time unknown in both",
        sample(start=None),
        sample(start=None, accepted=120),
        CounterIncrease(accepted_connections=20, max_children_reached=0, slow_requests=0),
    ),
    Row(
        "start time unknown, counter reset",
        sample(start=None),
        sample(start=None, accepted=3),
        None,
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_counter_increase(row: Row) -> None:
    assert counter_increase(row.previous, row.current) == row.expected


def test_tracker_first_sample_is_baseline() -> None:
    tracker = CounterTracker()
    assert tracker.update(sample()) is None


def test_tracker_rebaselines_after_reload() -> None:
    tracker = CounterTracker()
    tracker.update(sample(start=1000.0, accepted=900))
    assert tracker.update(sample(start=1000.0, accepted=950)) == CounterIncrease(50, 0, 0)
    # A reload: the counters restart and the interval has no increase.
    assert tracker.update(sample(start=1100.0, accepted=4, reached=0)) is None
    # The next interval counts from the new baseline.
    assert tracker.update(sample(start=1100.0, accepted=10, reached=1)) == CounterIncrease(6, 1, 0)

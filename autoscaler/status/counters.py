"""Per-interval increases of php-fpm's cumulative counters.

``accepted conn``, ``max children reached`` and ``slow requests`` count from
the pool's (re)start and reset on every reload, when ``start time`` changes
(measured on PHP 8.2). Differences between two polls are only meaningful
within one start, so a changed start time or a counter that went down
starts a new baseline and yields no increase for that interval.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoscaler.status.model import PoolSample


@dataclass(frozen=True, slots=True)
class CounterIncrease:
    """Increase of each cumulative counter between two polls; None where unknown."""

    accepted_connections: int | None
    max_children_reached: int | None
    slow_requests: int | None


def _difference(previous: int | None, current: int | None) -> int | None:
    if previous is None or current is None:
        return None
    return current - previous


def counter_increase(previous: PoolSample, current: PoolSample) -> CounterIncrease | None:
    """Return the counters' increase from ``previous`` to ``current``.

    Returns None when the two polls do not share a baseline: the start time
    changed (a reload or restart) or any counter went down (a reset whose
    start time the agent did not see change). A counter that either poll
    lacks is None in the result.
    """
    if (
        previous.start_time_seconds is not None
        and current.start_time_seconds is not None
        and previous.start_time_seconds != current.start_time_seconds
    ):
        return None
    increase = CounterIncrease(
        accepted_connections=_difference(
            previous.accepted_connections_total, current.accepted_connections_total
        ),
        max_children_reached=_difference(
            previous.max_children_reached_total, current.max_children_reached_total
        ),
        slow_requests=_difference(previous.slow_requests_total, current.slow_requests_total),
    )
    values = (increase.accepted_connections, increase.max_children_reached, increase.slow_requests)
    if any(value is not None and value < 0 for value in values):
        return None
    return increase


class CounterTracker:
    """Keep the last sample of one pool and turn each new one into increases.

    No I/O and no clock: the caller passes every successful sample in order.
    """

    def __init__(self) -> None:
        self._previous: PoolSample | None = None

    def update(self, sample: PoolSample) -> CounterIncrease | None:
        """Return the increase since the previous sample, or None on a new baseline.

        The first sample, a changed start time and a counter that went down
        all start a new baseline.
        """
        previous, self._previous = self._previous, sample
        if previous is None:
            return None
        return counter_increase(previous, sample)

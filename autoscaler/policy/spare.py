"""Spare-server targets for ``pm = dynamic`` pools, sized from observed bursts.

With ``pm = dynamic`` php-fpm keeps between min_spare and max_spare idle
workers. Once a second (``FPM_IDLE_SERVER_MAINTENANCE_HEARTBEAT``) its
maintenance pass (``fpm_pctl_perform_idle_server_maintenance`` in php-src
``sapi/fpm/fpm/fpm_process_ctl.c``, PHP 8.1 and later) either kills one
idle worker when there are more than max_spare, or forks
min(spawn rate, min_spare - idle) workers when there are fewer than
min_spare. The spawn rate starts at 1, doubles after each pass that forked
while it is below ``pm.max_spawn_rate`` (default 32), and falls back to 1
once idle workers are back in range. So a burst of requests is served at
once only by the idle workers that are already there, plus 1 worker forked
within the first second, 1 + 2 within two seconds, and so on.

``spare_target`` therefore sets:

- min_spare: the fewest idle workers that, with the workers php-fpm forks
  within ``absorb_seconds``, serve a typical burst (the 90th percentile of
  the rises in demand between two polls);
- max_spare: min_spare plus one burst, so the workers that served a burst
  are kept for the next one instead of being stopped one per second;
- start_servers: php-fpm's own default between the two.

The values are clamped to 1 <= min_spare <= max_spare <= max_children; the
caller passes them to ``fit_pm``, which applies php-fpm's full rules.

Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from autoscaler.fpmconfig.rules import (
    DEFAULT_MAX_SPAWN_RATE,
    SpareTarget,
    default_start_servers,
)
from autoscaler.policy.types import Observation


@dataclass(frozen=True, slots=True)
class SpareSettings:
    """Tuning of the spare-server sizing."""

    # A typical burst must be served within this time after it arrives.
    absorb_seconds: float = 1.0
    # The burst size used: this percentile of the rises in demand.
    burst_percentile: float = 0.9
    # The pool's pm.max_spawn_rate; php-fpm's default when unset.
    max_spawn_rate: int = DEFAULT_MAX_SPAWN_RATE


def burst_sizes(observations: Sequence[Observation]) -> list[int]:
    """Return the rises in demand between consecutive usable polls.

    A failed or implausible poll breaks the sequence, because the rise across
    it is unknown. NOTE: a burst that starts and ends between two polls is
    not seen, and demand cannot show more than max_children busy workers.
    """
    rises = []
    previous: int | None = None
    for observation in observations:
        demand = None if observation.implausible else observation.demand
        if previous is not None and demand is not None and demand > previous:
            rises.append(demand - previous)
        previous = demand
    return rises


def typical_burst(observations: Sequence[Observation], percentile: float = 0.9) -> int:
    """Return the nearest-rank percentile of the observed bursts, 0 without any."""
    rises = sorted(burst_sizes(observations))
    if not rises:
        return 0
    rank = min(len(rises), max(1, math.ceil(percentile * len(rises))))
    return rises[rank - 1]


def forks_within(seconds: float, min_spare: int, max_spawn_rate: int) -> int:
    """Return the most workers php-fpm forks within ``seconds`` after a burst took all idle ones.

    One maintenance pass runs per whole second. While the burst keeps every
    new worker busy, idle stays 0, so each pass forks min(rate, min_spare).
    The rate goes 1, 2, 4, ... and doubles only while it is below
    ``max_spawn_rate``, so it can end above a rate that is not a power of 2.
    """
    total = 0
    rate = 1
    for _ in range(max(0, math.floor(seconds))):
        total += min(rate, min_spare)
        if rate < max_spawn_rate:
            rate *= 2
    return total


def spare_target(
    observations: Sequence[Observation],
    max_children: int,
    settings: SpareSettings | None = None,
) -> SpareTarget:
    """Return spare-server values for a dynamic pool that absorb its typical burst.

    ``observations`` are the pool's recent polls in time order (the policy's
    ``PoolState.observations``); see the module docstring for the rules.
    """
    settings = settings or SpareSettings()
    ceiling = max(1, max_children)
    burst = typical_burst(observations, settings.burst_percentile)

    min_spare = 1
    while min_spare < ceiling and min_spare + forks_within(
        settings.absorb_seconds, min_spare, settings.max_spawn_rate
    ) < burst:
        min_spare += 1

    max_spare = min(ceiling, min_spare + max(1, burst))
    return SpareTarget(
        min_spare_servers=min_spare,
        max_spare_servers=max_spare,
        start_servers=default_start_servers(min_spare, max_spare),
    )

"""Spare servers for pm = dynamic: burst sizes, php-fpm's fork ramp, and php-fpm's rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.fpmconfig.rules import PmSettings, SpareTarget, fit_pm, validate_pm
from autoscaler.policy.spare import (
    SpareSettings,
    burst_sizes,
    forks_within,
    spare_target,
    typical_burst,
)
from autoscaler.policy.types import Failure, Observation
from tests.conftest import requires_fpm
from tests.fpmconfig.fpm_check import fpm_test, render_pool


def polls(*demands: int | None) -> list[Observation]:
    return [
        Observation(at_seconds=float(t), busy=d, idle=1, total=(d or 0) + 1, queue=0)
        if d is not None else Observation(at_seconds=float(t), failure=Failure.TIMEOUT)
        for t, d in enumerate(demands)
    ]


def test_burst_sizes_are_rises() -> None:
    assert burst_sizes(polls(1, 4, 4, 2, 7, 6)) == [3, 5]


def test_burst_sizes_skip_failed_polls() -> None:
    # The rise across a failed poll is unknown.
    assert burst_sizes(polls(1, None, 9, 10)) == [1]


def test_burst_sizes_skip_implausible_polls() -> None:
    observations = polls(1, 2, 3)
    observations[1] = Observation(at_seconds=1.0, busy=50, idle=0, total=50, queue=0,
                                  implausible=True)
    assert burst_sizes(observations) == []


def test_typical_burst_percentile() -> None:
    # Rises 1..10: nearest-rank 90th percentile is 9.
    demands = [0]
    for rise in range(1, 11):
        demands += [demands[-1] + rise, 0]
    assert typical_burst(polls(*demands)) == 9
    assert typical_burst(polls(3, 3, 2)) == 0


@pytest.mark.parametrize(
    ("seconds", "min_spare", "rate", "forks"),
    [
        (0.5, 10, 32, 0),  # no maintenance pass guaranteed within half a second
        (1, 10, 32, 1),  # the rate starts at 1
        (3, 10, 32, 1 + 2 + 4),  # and doubles
        (3, 3, 32, 1 + 2 + 3),  # never more than min_spare per pass
        (4, 100, 2, 1 + 2 + 2 + 2),  # up to pm.max_spawn_rate
        (4, 100, 5, 1 + 2 + 4 + 8),  # doubled while below it, as php-fpm does
    ],
)
def test_forks_within(seconds: float, min_spare: int, rate: int, forks: int) -> None:
    assert forks_within(seconds, min_spare, rate) == forks


@pytest.mark.parametrize(
    ("demands", "max_children", "absorb_seconds", "expected"),
    [
        # No burst: the smallest valid spares.
        ((2, 2, 2), 20, 1.0, SpareTarget(1, 2, 1)),
        # A burst of 5 within 1 s: 4 idle + 1 forked; 5 more kept when it ends.
        ((0, 5, 0, 5, 0), 20, 1.0, SpareTarget(4, 9, 6)),
        # Within 3 s php-fpm forks min(1, 2) + min(2, 2) + min(4, 2) = 5, so 2 idle suffice.
        ((0, 5, 0, 5, 0), 20, 3.0, SpareTarget(2, 7, 4)),
        # Bursts larger than the pool: every worker stays.
        ((0, 30, 0), 8, 1.0, SpareTarget(8, 8, 8)),
        ((0, 3), 1, 1.0, SpareTarget(1, 1, 1)),
    ],
)
def test_spare_target(demands: tuple[int, ...], max_children: int, absorb_seconds: float,
                      expected: SpareTarget) -> None:
    spare_settings = SpareSettings(absorb_seconds=absorb_seconds)
    target = spare_target(polls(*demands), max_children, spare_settings)
    assert target == expected


def test_spare_target_absorbs_burst() -> None:
    # Whatever the burst, idle workers plus forks within a second cover it.
    for burst in range(1, 40):
        target = spare_target(polls(0, burst, 0), 64)
        assert target.min_spare_servers + forks_within(1.0, target.min_spare_servers, 32) >= burst
        if target.min_spare_servers > 1:
            smaller = target.min_spare_servers - 1
            assert smaller + forks_within(1.0, smaller, 32) < burst


# properties ------------------------------------------------------------

observations_strategy = st.lists(
    st.builds(
        Observation,
        at_seconds=st.floats(0, 1e6, allow_nan=False),
        busy=st.one_of(st.none(), st.integers(0, 500)),
        idle=st.one_of(st.none(), st.integers(0, 500)),
        total=st.one_of(st.none(), st.integers(0, 1000)),
        queue=st.one_of(st.none(), st.integers(0, 5000)),
        failure=st.one_of(st.none(), st.sampled_from(Failure)),
        implausible=st.booleans(),
    ),
    max_size=60,
)

current_pm = st.builds(
    PmSettings,
    pm=st.just("dynamic"),
    max_children=st.integers(-5, 300),
    start_servers=st.one_of(st.none(), st.integers(-5, 300)),
    min_spare_servers=st.one_of(st.none(), st.integers(-5, 300)),
    max_spare_servers=st.one_of(st.none(), st.integers(-5, 300)),
    max_spawn_rate=st.one_of(st.none(), st.integers(-2, 64)),
)


@settings(max_examples=500, deadline=None)
@given(
    observations=observations_strategy,
    max_children=st.integers(1, 300),
    current=current_pm,
    spare_settings=st.builds(
        SpareSettings,
        absorb_seconds=st.floats(0, 30, allow_nan=False),
        burst_percentile=st.floats(0, 1, allow_nan=False),
        max_spawn_rate=st.integers(1, 64),
    ),
)
def test_spare_target_always_valid_after_fit(
    observations: list[Observation],
    max_children: int,
    current: PmSettings,
    spare_settings: SpareSettings,
) -> None:
    spare = spare_target(observations, max_children, spare_settings)
    assert 1 <= spare.min_spare_servers <= spare.max_spare_servers <= max_children
    assert spare.start_servers is not None
    assert spare.min_spare_servers <= spare.start_servers <= spare.max_spare_servers
    fitted = fit_pm(current, max_children, spare=spare)
    assert validate_pm(fitted) == []
    # Already within php-fpm's rules, the target passes through unchanged.
    assert fitted.min_spare_servers == spare.min_spare_servers
    assert fitted.max_spare_servers == spare.max_spare_servers


@requires_fpm
@pytest.mark.parametrize(("burst", "max_children"), [(0, 5), (7, 20), (40, 12), (3, 1)])
def test_spare_target_accepted_by_fpm(tmp_path: Path, burst: int, max_children: int) -> None:
    current = PmSettings("dynamic", 5, 2, 1, 3)
    spare = spare_target(polls(0, burst, 0), max_children)
    fitted = fit_pm(current, max_children, spare=spare)
    verdict = fpm_test(tmp_path, render_pool("www", fitted))
    assert verdict.exit_code == 0, verdict.stderr
    assert verdict.alerts == []

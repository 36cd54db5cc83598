"""Properties of decide() over arbitrary observation sequences, run as the controller runs it.

Each example feeds a sequence of polls to ``decide`` tick by tick, applying
every change (``PoolState.applied``) and storing every recommendation
(``PoolState.remember``), with a fixed memory budget. The properties:

- bounds: the target stays within [lo, hi], where hi = min(max_children,
  memory ceiling) and lo = min(min_children, hi), because the memory
  ceiling wins over min_children. A pool that starts above hi comes down
  to it at the first decision that has data.
- freeze: no scale-down while the decision window contains a failed or
  implausible poll (for a pool within its bounds: a pool above the memory
  ceiling comes down regardless, by design).
- reload rate: in any W = 600 s, with R = the smaller of
  min_reload_interval_seconds (before a scale-down) and
  scale_up_interval_seconds (before a scale-up), and
  S = scale_down_stabilization_seconds,
    changes <= floor(W / R) + 1,
  because two changes are at least R apart (the cooldown), and
    up-then-down reversals <= ceil(W / S),
  because a scale-down needs a stabilization window (at least S, longer
  with the flap penalty) whose recommendations are all below the current
  size. The scale-up before it stored a recommendation at least as high
  as that size, so two reversals are more than S apart. With the
  defaults (R = 15 s, S = 300 s) that is at most 41 changes and 2
  reversals in 10 minutes.

Two properties carry the examples that once broke them: a pool below
min_children within the tolerance band must still go up, and a pool above
max_children without a memory budget comes down with the reason
MAX_CHILDREN, not MEMORY_CEILING.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import example, given, settings, target
from hypothesis import strategies as st

from autoscaler.policy import (
    Decision,
    Direction,
    Failure,
    MemoryBudget,
    Observation,
    PolicySettings,
    PoolState,
    Reason,
    decide,
)
from autoscaler.policy.decide import upper_bound

WINDOW_SECONDS = 600.0
MIB = 1024**2
HOLD_REASONS = frozenset({Reason.NO_DATA, Reason.CONFIG_ERROR})


@dataclass(frozen=True)
class Tick:
    observation: Observation
    current: int
    decision: Decision


def run(
    observations: list[Observation],
    current: int,
    policy: PolicySettings,
    budget: MemoryBudget | None,
) -> list[Tick]:
    state = PoolState()
    ticks = []
    for observation in observations:
        now = observation.at_seconds
        state = state.observe(observation, policy)
        decision = decide("www", state, current, policy, now, budget)
        ticks.append(Tick(observation, current, decision))
        state = state.remember(decision, now, policy)
        if decision.changes:
            state = state.applied(decision, now, policy)
            current = decision.target
    return ticks


def bounds(policy: PolicySettings, budget: MemoryBudget | None) -> tuple[int, int]:
    high = upper_bound(policy, budget)
    return min(policy.min_children, high), high


# strategies ------------------------------------------------------------


@st.composite
def policies(draw: st.DrawFn) -> PolicySettings:
    min_children = draw(st.integers(1, 10))
    return PolicySettings(
        min_children=min_children,
        max_children=draw(st.integers(min_children, 60)),
        target_utilization=draw(st.floats(0.3, 1.0)),
        tolerance_ratio=draw(st.floats(0.0, 0.3)),
        decision_window_seconds=draw(st.floats(1.0, 30.0)),
        scale_down_stabilization_seconds=draw(st.floats(10.0, 600.0)),
        scale_down_max_ratio=draw(st.floats(0.1, 1.0)),
        saturation_step_ratio=draw(st.floats(1.1, 3.0)),
        scale_up_max_ratio=draw(st.floats(0.1, 2.0)),
        scale_up_max_workers=draw(st.integers(1, 8)),
        min_reload_interval_seconds=draw(st.floats(5.0, 120.0)),
        scale_up_interval_seconds=draw(st.floats(1.0, 120.0)),
        flap_penalty_factor=draw(st.floats(1.0, 4.0)),
        flap_penalty_max=draw(st.floats(1.0, 16.0)),
    )


budgets = st.one_of(
    st.none(),
    st.builds(
        MemoryBudget,
        limit_bytes=st.integers(64, 4096).map(lambda m: m * MIB),
        limit_source=st.just("setting"),
        reserve_bytes=st.integers(0, 60).map(lambda m: m * MIB),
        worker_bytes=st.integers(8, 400).map(lambda m: m * MIB),
        worker_source=st.just("setting"),
        margin_ratio=st.floats(0.0, 0.5),
    ),
)

polls = st.one_of(
    st.builds(
        lambda busy, idle, queue, reached, slow, implausible: Observation(
            at_seconds=0.0, busy=busy, idle=idle, total=busy + idle, queue=queue,
            max_children_reached_increase=reached, slow=slow, implausible=implausible,
        ),
        busy=st.integers(0, 80),
        idle=st.integers(0, 10),
        queue=st.one_of(st.none(), st.integers(0, 50)),
        reached=st.one_of(st.none(), st.integers(0, 3)),
        slow=st.booleans(),
        implausible=st.booleans(),
    ),
    st.builds(lambda failure: Observation(at_seconds=0.0, failure=failure),
              st.sampled_from(Failure)),
)


@st.composite
def sequences(draw: st.DrawFn) -> list[Observation]:
    """Runs of equal polls one second apart, the runs 0.5 s to 40 s apart."""
    items = draw(st.lists(st.tuples(st.floats(0.5, 40.0), polls, st.integers(1, 30)),
                          min_size=1, max_size=40))
    observations = []
    now = 0.0
    for gap, poll, repeat in items:
        now += gap
        for index in range(repeat):
            observations.append(_at(poll, now + index))
        now += repeat - 1
    return observations


def _at(observation: Observation, at_seconds: float) -> Observation:
    return Observation(
        at_seconds=at_seconds, busy=observation.busy, idle=observation.idle,
        total=observation.total, queue=observation.queue,
        max_children_reached_increase=observation.max_children_reached_increase,
        failure=observation.failure, slow=observation.slow, implausible=observation.implausible,
    )


@st.composite
def oscillations(draw: st.DrawFn) -> list[Observation]:
    """A square wave of load, one poll per second for 20 minutes."""
    low = draw(st.integers(0, 5))
    high = draw(st.integers(low + 1, 80))
    half_period = draw(st.integers(2, 400))
    phase = draw(st.integers(0, 2 * half_period))
    observations = []
    for second in range(1200):
        busy = high if ((second + phase) // half_period) % 2 == 0 else low
        observations.append(Observation(at_seconds=float(second), busy=busy,
                                        idle=0 if busy == high else 2, total=busy + 2, queue=0))
    return observations


# properties ------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(policy=policies(), budget=budgets, observations=sequences(), data=st.data())
def test_target_stays_within_bounds(
    policy: PolicySettings, budget: MemoryBudget | None, observations: list[Observation],
    data: st.DataObject,
) -> None:
    low, high = bounds(policy, budget)
    current = data.draw(st.integers(low, high), label="current")
    for tick in run(observations, current, policy, budget):
        assert low <= tick.decision.target <= high, tick


@settings(max_examples=200, deadline=None)
@given(policy=policies(), budget=budgets, observations=sequences(), data=st.data())
def test_pool_above_ceiling_comes_down(
    policy: PolicySettings, budget: MemoryBudget | None, observations: list[Observation],
    data: st.DataObject,
) -> None:
    low, high = bounds(policy, budget)
    current = data.draw(st.integers(high + 1, high + 50), label="current")
    ticks = run(observations, current, policy, budget)
    decided = [tick for tick in ticks if tick.decision.reason not in HOLD_REASONS]
    if not decided:
        return
    assert decided[0].decision.target <= high, decided[0]
    first = ticks.index(decided[0])
    for tick in ticks[first:]:
        assert low <= tick.decision.target <= high, tick


@settings(max_examples=300, deadline=None)
@given(policy=policies(), budget=budgets, observations=sequences(), data=st.data())
def test_no_scale_down_on_bad_window(
    policy: PolicySettings, budget: MemoryBudget | None, observations: list[Observation],
    data: st.DataObject,
) -> None:
    low, high = bounds(policy, budget)
    current = data.draw(st.integers(low, high), label="current")
    for index, tick in enumerate(run(observations, current, policy, budget)):
        now = tick.observation.at_seconds
        window = [
            o for o in observations[: index + 1]
            if o.at_seconds >= now - policy.decision_window_seconds
        ]
        if any(o.failure is not None or o.implausible for o in window):
            assert tick.decision.direction is not Direction.DOWN, tick


def min_interval(policy: PolicySettings) -> float:
    return min(policy.min_reload_interval_seconds, policy.scale_up_interval_seconds)


def assert_reload_rate(ticks: list[Tick], policy: PolicySettings) -> None:
    changes = [t for t in ticks if t.decision.changes]
    change_times = [t.observation.at_seconds for t in changes]
    reversal_times = [
        later.observation.at_seconds
        for earlier, later in zip(changes, changes[1:], strict=False)
        if earlier.decision.direction is Direction.UP and later.decision.direction is Direction.DOWN
    ]
    max_changes = math.floor(WINDOW_SECONDS / min_interval(policy)) + 1
    max_reversals = math.ceil(WINDOW_SECONDS / policy.scale_down_stabilization_seconds)
    busiest_changes = busiest_reversals = 0
    for start in change_times:
        in_window = [t for t in change_times if start <= t <= start + WINDOW_SECONDS]
        busiest_changes = max(busiest_changes, len(in_window))
        assert len(in_window) <= max_changes, (start, in_window)
    for start in reversal_times:
        in_window = [t for t in reversal_times if start <= t <= start + WINDOW_SECONDS]
        busiest_reversals = max(busiest_reversals, len(in_window))
        assert len(in_window) <= max_reversals, (start, in_window)
    # Steer the search towards sequences that come close to the bounds.
    target(busiest_changes / max_changes, label="changes / bound")
    target(busiest_reversals / max_reversals, label="reversals / bound")


@settings(max_examples=80, deadline=None)
@given(policy=policies(), budget=budgets, observations=oscillations(), data=st.data())
def test_oscillating_load_reload_rate(
    policy: PolicySettings, budget: MemoryBudget | None, observations: list[Observation],
    data: st.DataObject,
) -> None:
    low, high = bounds(policy, budget)
    current = data.draw(st.integers(low, high), label="current")
    assert_reload_rate(run(observations, current, policy, budget), policy)


@settings(max_examples=200, deadline=None)
@given(policy=policies(), budget=budgets, observations=sequences(), data=st.data())
def test_arbitrary_load_reload_rate(
    policy: PolicySettings, budget: MemoryBudget | None, observations: list[Observation],
    data: st.DataObject,
) -> None:
    low, high = bounds(policy, budget)
    current = data.draw(st.integers(low, high), label="current")
    assert_reload_rate(run(observations, current, policy, budget), policy)


def test_default_bound_numbers() -> None:
    # The bound stated in the module docstring, for the default settings.
    policy = PolicySettings()
    assert math.floor(WINDOW_SECONDS / min_interval(policy)) + 1 == 41
    assert math.ceil(WINDOW_SECONDS / policy.scale_down_stabilization_seconds) == 2


QUIET_POLL = [Observation(at_seconds=0.0, busy=0, idle=10, total=10, queue=0)]


@settings(max_examples=300, deadline=None)
@example(policy=PolicySettings(min_children=11, max_children=40, tolerance_ratio=0.1),
         budget=None, observations=QUIET_POLL, gap=1)
@given(policy=policies(), budget=budgets, observations=sequences(), gap=st.integers(1, 20))
def test_pool_below_minimum_goes_up(
    policy: PolicySettings, budget: MemoryBudget | None, observations: list[Observation],
    gap: int,
) -> None:
    low, _ = bounds(policy, budget)
    if low <= 1:
        return
    current = max(1, low - gap)
    ticks = run(observations, current, policy, budget)
    decided = [tick for tick in ticks if tick.decision.reason not in HOLD_REASONS]
    if decided:
        # No reload happened before the first decision with data, so no cooldown applies.
        assert decided[0].decision.direction is Direction.UP, decided[0]


@settings(max_examples=200, deadline=None)
@example(policy=PolicySettings(max_children=40), budget=None, observations=QUIET_POLL,
         current=41)
@given(policy=policies(), budget=budgets, observations=sequences(), current=st.integers(1, 80))
def test_memory_reason_needs_memory_bound(
    policy: PolicySettings, budget: MemoryBudget | None, observations: list[Observation],
    current: int,
) -> None:
    memory_ceiling = budget.ceiling if budget is not None else None
    for tick in run(observations, current, policy, budget):
        if tick.decision.reason is Reason.MEMORY_CEILING:
            assert memory_ceiling is not None, tick
            assert memory_ceiling < policy.max_children, tick

"""Table-driven policy tests: one named scenario per row, each a sequence of observations."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import autoscaler.policy as policy_package
from autoscaler.policy import (
    Direction,
    Failure,
    MemoryBudget,
    Observation,
    PolicySettings,
    PoolState,
    Reason,
    decide,
)

FAST = PolicySettings(
    min_children=2,
    max_children=40,
    scale_down_stabilization_seconds=60,
    min_reload_interval_seconds=0,
    scale_up_interval_seconds=0,
    decision_window_seconds=5,
)


def feed(observations: list[Observation], settings: PolicySettings = FAST) -> PoolState:
    state = PoolState()
    for observation in observations:
        state = state.observe(observation, settings)
    return state


def steady(
    busy: int,
    *,
    start: float = 0,
    seconds: int = 120,
    total: int | None = None,
    idle: int | None = None,
    queue: int | None = 0,
) -> list[Observation]:
    return [
        Observation(
            at_seconds=start + t,
            busy=busy,
            idle=idle if idle is not None else 1,
            total=total if total is not None else busy + 1,
            queue=queue,
        )
        for t in range(seconds)
    ]


def run_ticks(
    observations: list[Observation],
    current: int,
    settings: PolicySettings = FAST,
    budget: MemoryBudget | None = None,
):
    """Run decide on every observation as the controller does, applying each change."""
    state = PoolState()
    decisions = []
    for observation in observations:
        state = state.observe(observation, settings)
        decision = decide("www", state, current, settings, observation.at_seconds, budget)
        state = state.remember(decision, observation.at_seconds, settings)
        if decision.changes:
            state = state.applied(decision, observation.at_seconds, settings)
            current = decision.target
        decisions.append(decision)
    return decisions, current


@dataclass
class Case:
    name: str
    current: int
    observations: list[Observation]
    target: int
    reason: Reason
    settings: PolicySettings = field(default_factory=lambda: FAST)
    budget: MemoryBudget | None = None


CASES = [
    Case("no poll yet holds", 4, [], 4, Reason.NO_DATA),
    Case(
        "demand at target utilization scales up",
        10,
        [Observation(at_seconds=0, busy=9, idle=1, total=10, queue=0)],
        12,
        Reason.DEMAND,
        settings=PolicySettings(min_children=2, max_children=40, min_reload_interval_seconds=0),
    ),
    Case(
        "saturated on unix socket steps up although queue unknown",
        4,
        [Observation(at_seconds=0, busy=4, idle=0, total=4, queue=None)],
        6,
        Reason.SATURATED,
    ),
    Case(
        "queue at the limit adds queued demand",
        4,
        [Observation(at_seconds=0, busy=4, idle=0, total=4, queue=8)],
        8,
        Reason.STEP_LIMIT,
    ),
    Case(
        "status timeout is a saturation hint",
        4,
        [Observation(at_seconds=0, failure=Failure.TIMEOUT)],
        6,
        Reason.SATURATION_HINT,
    ),
    Case(
        "503 is a saturation hint",
        4,
        [Observation(at_seconds=0, failure=Failure.BUSY)],
        6,
        Reason.SATURATION_HINT,
    ),
    Case(
        "slow successful poll is a saturation hint",
        4,
        [Observation(at_seconds=0, busy=3, idle=1, total=4, queue=0, slow=True)],
        6,
        Reason.SATURATION_HINT,
    ),
    Case(
        "max children reached rising is saturation",
        4,
        [Observation(at_seconds=0, busy=2, idle=2, total=4, queue=0, max_children_reached_increase=1)],
        6,
        Reason.SATURATED,
    ),
    Case(
        "connection refused holds",
        4,
        [Observation(at_seconds=0, failure=Failure.CONNECT)],
        4,
        Reason.NO_DATA,
    ),
    Case(
        "403 stops scaling",
        4,
        [Observation(at_seconds=0, failure=Failure.ACCESS)],
        4,
        Reason.CONFIG_ERROR,
    ),
    Case(
        "max children bound",
        36,
        [Observation(at_seconds=0, busy=36, idle=0, total=36, queue=20)],
        40,
        Reason.MAX_CHILDREN,
    ),
    Case(
        "memory ceiling wins over demand",
        8,
        [Observation(at_seconds=0, busy=8, idle=0, total=8, queue=30)],
        11,
        Reason.MEMORY_CEILING,
        budget=MemoryBudget(
            limit_bytes=1100 * 2**20,
            limit_source="test",
            reserve_bytes=0,
            worker_bytes=100 * 2**20,
            worker_source="test",
            margin_ratio=0.0,
        ),
    ),
    Case(
        "memory ceiling below current forces scale down at once",
        20,
        [Observation(at_seconds=0, busy=5, idle=15, total=20, queue=0)],
        10,
        Reason.MEMORY_CEILING,
        budget=MemoryBudget(
            limit_bytes=1000 * 2**20,
            limit_source="test",
            reserve_bytes=0,
            worker_bytes=100 * 2**20,
            worker_source="test",
            margin_ratio=0.0,
        ),
    ),
    Case(
        "small change within tolerance",
        10,
        steady(8, seconds=3, idle=2, total=10),
        10,
        Reason.WITHIN_TOLERANCE,
    ),
    Case("fresh agent does not scale down", 20, steady(1, seconds=30), 20, Reason.STABILIZING),
    Case(
        "idle pool after a full window scales down by half",
        20,
        steady(1, seconds=120),
        10,
        Reason.STEP_LIMIT,
    ),
    Case(
        "implausible sample freezes scale down",
        20,
        steady(1, seconds=119)
        + [Observation(at_seconds=119, busy=1, idle=1, total=2, queue=0, implausible=True)],
        20,
        Reason.IMPLAUSIBLE,
    ),
    Case(
        "timeout in window freezes scale down",
        20,
        steady(1, seconds=118)
        + [
            Observation(at_seconds=118, failure=Failure.CONNECT),
            Observation(at_seconds=119, busy=1, idle=1, total=2, queue=0),
        ],
        20,
        Reason.NO_DATA,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_decide_scenario(case: Case) -> None:
    state = feed(case.observations, case.settings)
    now = case.observations[-1].at_seconds if case.observations else 0.0
    decision = decide("www", state, case.current, case.settings, now, case.budget)
    assert decision.target == case.target, decision
    assert decision.reason is case.reason, decision


def test_spike_then_quiet_scales_up_fast_and_down_slowly() -> None:
    spike = [Observation(at_seconds=t, busy=4, idle=0, total=4, queue=None) for t in range(3)]
    quiet = [Observation(at_seconds=3 + t, busy=0, idle=2, total=2, queue=None) for t in range(300)]
    decisions, final = run_ticks(spike + quiet, current=4)
    ups = [d for d in decisions if d.direction is Direction.UP]
    downs = [d for d in decisions if d.direction is Direction.DOWN]
    assert ups and decisions.index(ups[0]) == 0
    first_down = decisions.index(downs[0])
    # No scale-down before one stabilization window has passed since the spike.
    assert first_down >= FAST.scale_down_stabilization_seconds
    assert final == FAST.min_children


def test_slow_ramp_tracks_demand_within_step_limits() -> None:
    ramp = [
        Observation(at_seconds=t, busy=1 + t // 10, idle=1, total=2 + t // 10, queue=0) for t in range(200)
    ]
    decisions, final = run_ticks(ramp, current=2)
    assert final >= ramp[-1].busy
    for decision in decisions:
        if decision.direction is Direction.UP:
            assert decision.current is not None
            assert decision.target <= max(2 * decision.current, decision.current + FAST.scale_up_max_workers)


def test_oscillation_reloads_are_bounded() -> None:
    settings = PolicySettings(
        min_children=2,
        max_children=40,
        scale_down_stabilization_seconds=60,
        min_reload_interval_seconds=30,
        decision_window_seconds=5,
    )
    observations = []
    for t in range(1200):
        busy = 12 if (t // 45) % 2 == 0 else 1
        observations.append(
            Observation(
                at_seconds=t,
                busy=busy,
                idle=0 if busy == 12 else 3,
                total=busy + (0 if busy == 12 else 3),
                queue=0,
            )
        )
    decisions, _ = run_ticks(observations, current=4, settings=settings)
    reloads = sum(1 for d in decisions if d.changes)
    # 20 minutes of a 90 s square wave: the stabilization window and its flap
    # penalty keep the pool up instead of following every swing.
    assert reloads <= 6, [(d.current, d.target, d.reason) for d in decisions if d.changes]


def test_flap_penalty_lengthens_window() -> None:
    state = PoolState(first_seen_seconds=0)
    down = decide("www", feed(steady(1, seconds=120)), 20, FAST, 119)
    assert down.direction is Direction.DOWN
    state = state.applied(down, 120, FAST)
    up_obs = Observation(at_seconds=130, busy=10, idle=0, total=10, queue=0)
    up = decide("www", state.observe(up_obs, FAST), 10, FAST, 130)
    assert up.direction is Direction.UP
    state = state.applied(up, 130, FAST)
    assert state.flap_penalty == FAST.flap_penalty_factor
    assert state.stabilization_seconds(FAST) == FAST.scale_down_stabilization_seconds * 2


def test_policy_imports_no_io() -> None:
    forbidden = {"httpx", "asyncio", "os", "time", "logging", "socket", "subprocess"}
    package_dir = Path(policy_package.__file__).parent
    for path in package_dir.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            assert not forbidden.intersection(names), f"{path.name} imports {names}"


def test_growing_worker_memory_lowers_target() -> None:
    """Workers leak memory under steady saturation: the ceiling falls and the target follows it."""
    state = PoolState()
    current = 20
    limit = 2000 * 2**20
    targets = []
    for second in range(0, 600, 5):
        worker_bytes = (50 + second // 5) * 2**20  # 50 MiB growing by 1 MiB every 5 s
        budget = MemoryBudget(
            limit_bytes=limit,
            limit_source="test",
            reserve_bytes=0,
            worker_bytes=worker_bytes,
            worker_source="test",
            margin_ratio=0.0,
        )
        observation = Observation(at_seconds=second, busy=current, idle=0, total=current, queue=5)
        state = state.observe(observation, FAST)
        decision = decide("www", state, current, FAST, second, budget)
        state = state.remember(decision, second, FAST)
        ceiling = budget.ceiling
        assert ceiling is not None
        assert decision.target <= ceiling
        if decision.changes:
            state = state.applied(decision, second, FAST)
            current = decision.target
        targets.append(current)
    final_ceiling = 2000 // (50 + 595 // 5)
    assert current == final_ceiling
    assert max(targets) > current


def test_unknown_current_still_recommends() -> None:
    state = feed([Observation(at_seconds=0, busy=6, idle=0, total=6, queue=0)])
    decision = decide("www", state, None, FAST, 0)
    assert decision.reason is Reason.UNKNOWN_CURRENT
    assert decision.recommendation == 8
    assert not decision.changes

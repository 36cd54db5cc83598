"""Several pools under one master: fit_pools against process.max and a shared memory budget."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.policy.pools import Allocation, PoolRequest, fit_pools
from autoscaler.policy.types import MemoryBudget, Reason

MIB = 1024**2


def budget(limit_mib: int, reserve_mib: int = 0, worker_mib: int = 50,
           margin: float = 0.0) -> MemoryBudget:
    return MemoryBudget(
        limit_bytes=limit_mib * MIB, limit_source="setting", reserve_bytes=reserve_mib * MIB,
        worker_bytes=worker_mib * MIB, worker_source="setting", margin_ratio=margin,
    )


def targets(allocations: dict[str, Allocation]) -> dict[str, int]:
    return {name: allocation.target for name, allocation in allocations.items()}


def memory_used(allocations: dict[str, Allocation], requests: dict[str, PoolRequest],
                shared: MemoryBudget) -> Fraction:
    total = Fraction(0)
    for name, allocation in allocations.items():
        worker = requests[name].worker_bytes or shared.worker_bytes or 0
        total += allocation.target * Fraction(worker) * (1 + Fraction(shared.margin_ratio))
    return total


def test_within_limits_unchanged() -> None:
    requests = {"www": PoolRequest(10, 2, 7), "api": PoolRequest(6, 2, 4)}
    result = fit_pools(requests, process_max=16, shared_memory=budget(1000, worker_mib=50))
    assert targets(result) == {"www": 10, "api": 6}
    assert all(a.reason is None for a in result.values())


def test_process_max_zero_is_unlimited() -> None:
    requests = {"www": PoolRequest(500, 2, 400), "api": PoolRequest(300, 2, 200)}
    result = fit_pools(requests, process_max=0, shared_memory=None)
    assert targets(result) == {"www": 500, "api": 300}


def test_process_max_split_by_demand() -> None:
    # 30 + 30 asked, 20 allowed; demand 30 : 10 gives 15 : 5.
    requests = {"www": PoolRequest(30, 2, 30), "api": PoolRequest(30, 2, 10)}
    result = fit_pools(requests, process_max=20, shared_memory=None)
    assert targets(result) == {"www": 15, "api": 5}
    assert result["www"].reason is Reason.PROCESS_MAX
    assert result["api"].reason is Reason.PROCESS_MAX
    assert result["www"].limited


def test_minimum_kept_for_idle_pool() -> None:
    requests = {"www": PoolRequest(20, 2, 40), "cron": PoolRequest(6, 3, 0)}
    result = fit_pools(requests, process_max=12, shared_memory=None)
    assert targets(result) == {"www": 9, "cron": 3}


def test_pool_below_its_share_keeps_its_target() -> None:
    # "small" asks for less than its demand share: the rest goes to "www".
    requests = {"www": PoolRequest(40, 2, 40), "small": PoolRequest(3, 1, 40)}
    result = fit_pools(requests, process_max=20, shared_memory=None)
    assert targets(result) == {"www": 17, "small": 3}
    assert result["small"].reason is None


def test_largest_remainders() -> None:
    # 10 workers for demand 1 : 1 : 1: 3 each and one left for the first name.
    requests = {name: PoolRequest(10, 1, 1) for name in ("a", "b", "c")}
    result = fit_pools(requests, process_max=10, shared_memory=None)
    assert sorted(targets(result).values()) == [3, 3, 4]
    assert sum(targets(result).values()) == 10


def test_shared_memory_split() -> None:
    # 1000 MiB for 100 MiB and 50 MiB workers, equal demand.
    requests = {
        "heavy": PoolRequest(10, 1, 10, worker_bytes=100 * MIB),
        "light": PoolRequest(10, 1, 10, worker_bytes=50 * MIB),
    }
    shared = budget(1100, reserve_mib=100)
    result = fit_pools(requests, process_max=0, shared_memory=shared)
    assert memory_used(result, requests, shared) <= 1000 * MIB
    assert result["heavy"].reason is Reason.MEMORY_CEILING
    # Equal demand: 6 workers each (900 MiB), and the 100 MiB left over goes to
    # the first name on the tie.
    assert targets(result) == {"heavy": 7, "light": 6}


def test_margin_counts_in_memory() -> None:
    requests = {"www": PoolRequest(10, 1, 5), "api": PoolRequest(10, 1, 5)}
    shared = budget(1000, worker_mib=50, margin=0.25)
    result = fit_pools(requests, process_max=0, shared_memory=shared)
    # 1000 / (50 x 1.25) = 16 workers in all.
    assert sum(targets(result).values()) == 16


def test_both_limits_name_the_tighter() -> None:
    requests = {"www": PoolRequest(30, 1, 30), "api": PoolRequest(30, 1, 30)}
    result = fit_pools(requests, process_max=40, shared_memory=budget(500, worker_mib=50))
    assert sum(targets(result).values()) == 10
    assert result["www"].reason is Reason.MEMORY_CEILING
    tighter_processes = fit_pools(requests, process_max=8, shared_memory=budget(500, worker_mib=50))
    assert result is not tighter_processes
    assert tighter_processes["www"].reason is Reason.PROCESS_MAX


def test_minimums_over_limit_keep_minimums() -> None:
    requests = {"www": PoolRequest(10, 6, 9), "api": PoolRequest(10, 6, 9)}
    result = fit_pools(requests, process_max=8, shared_memory=None)
    assert targets(result) == {"www": 6, "api": 6}
    assert result["www"].reason is Reason.PROCESS_MAX
    assert "minimums" in result["www"].message


def test_unknown_memory_limit_ignored() -> None:
    shared = MemoryBudget(None, "unknown", 0, 50 * MIB, "setting")
    requests = {"www": PoolRequest(30, 2, 30)}
    assert targets(fit_pools(requests, process_max=0, shared_memory=shared)) == {"www": 30}


# properties ------------------------------------------------------------


@st.composite
def pool_requests(draw: st.DrawFn) -> dict[str, PoolRequest]:
    count = draw(st.integers(1, 6))
    requests = {}
    for index in range(count):
        target = draw(st.integers(1, 200))
        minimum = draw(st.integers(1, target))
        demand = draw(st.one_of(st.just(0), st.integers(0, 300)))
        worker = draw(st.one_of(st.none(), st.integers(1, 300).map(lambda m: m * MIB)))
        requests[f"pool{index}"] = PoolRequest(target, minimum, demand, worker)
    return requests


shared_budgets = st.one_of(
    st.none(),
    st.builds(
        budget,
        limit_mib=st.integers(1, 20_000),
        reserve_mib=st.integers(0, 2000),
        worker_mib=st.integers(1, 300),
        margin=st.floats(0, 1, allow_nan=False),
    ),
)


@settings(max_examples=400, deadline=None)
@given(requests=pool_requests(), process_max=st.integers(0, 400), shared=shared_budgets)
def test_fit_pools_properties(
    requests: dict[str, PoolRequest], process_max: int, shared: MemoryBudget | None
) -> None:
    result = fit_pools(requests, process_max=process_max, shared_memory=shared)
    assert set(result) == set(requests)
    for name, allocation in result.items():
        assert allocation.target <= requests[name].target, allocation
        assert allocation.target >= requests[name].minimum, allocation
        assert allocation.requested == requests[name].target

    minimums_processes = sum(r.minimum for r in requests.values())
    minimums_fit = process_max == 0 or minimums_processes <= process_max
    if shared is not None:
        available = shared.limit_bytes - shared.reserve_bytes  # type: ignore[operator]
        minimum_allocations = {
            name: Allocation(name, r.target, r.minimum, None, "") for name, r in requests.items()
        }
        minimum_memory = memory_used(minimum_allocations, requests, shared)
        minimums_fit = minimums_fit and minimum_memory <= available
    if not minimums_fit:
        # Every pool keeps its minimum, and its reason names the exceeded limit.
        assert all(a.reason is not None for a in result.values())
        return
    for name, allocation in result.items():
        assert (allocation.reason is None) == (allocation.target == requests[name].target)
    total = sum(allocation.target for allocation in result.values())
    if process_max > 0:
        assert total <= process_max
    if shared is not None:
        assert memory_used(result, requests, shared) <= available


@settings(max_examples=200, deadline=None)
@given(requests=pool_requests(), process_max=st.integers(1, 400))
def test_fit_pools_leaves_no_room(requests: dict[str, PoolRequest], process_max: int) -> None:
    result = fit_pools(requests, process_max=process_max, shared_memory=None)
    total = sum(allocation.target for allocation in result.values())
    below_target = [a for a in result.values() if a.target < a.requested]
    if below_target and sum(r.minimum for r in requests.values()) <= process_max:
        # Workers are only withheld when process.max is used up.
        assert total == process_max


@settings(max_examples=200, deadline=None)
@given(
    target=st.integers(1, 100),
    minimum=st.integers(1, 100),
    demands=st.tuples(st.integers(0, 200), st.integers(0, 200)),
    process_max=st.integers(1, 200),
)
def test_more_demand_never_fewer_workers(
    target: int, minimum: int, demands: tuple[int, int], process_max: int
) -> None:
    minimum = min(minimum, target)
    high, low = max(demands), min(demands)
    requests = {
        "high": PoolRequest(target, minimum, high),
        "low": PoolRequest(target, minimum, low),
    }
    result = fit_pools(requests, process_max=process_max, shared_memory=None)
    assert result["high"].target >= result["low"].target


@pytest.mark.parametrize("process_max", [1, 5, 17])
def test_single_pool_gets_process_max(process_max: int) -> None:
    result = fit_pools({"www": PoolRequest(40, 1, 25)}, process_max=process_max,
                       shared_memory=None)
    assert result["www"].target == process_max

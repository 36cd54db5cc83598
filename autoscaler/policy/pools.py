"""Fit the targets of several pools under one php-fpm master into shared limits.

Each pool's ``decide`` applies only its own bounds. The pools of one master
also share php-fpm's global ``process.max`` (children of all pools together)
and one memory limit. When the decided targets together exceed either,
``fit_pools`` splits the room by demand:

1. every pool keeps its minimum (or its target, when that is lower);
2. the rest goes in proportion to demand, no pool above its target: the
   largest factor ``share`` such that every pool gets
   clamp(floor(share x demand), minimum, target) and the sum still fits,
   found exactly with fractions;
3. workers still left over go one at a time to the largest fractional
   remainders of share x demand (then the larger demand, then the pool
   name), again never above a pool's target and only while the sum fits,
   until no pool can take one more.

When the minimums alone do not fit, every pool gets its minimum and its
allocation says which limit is exceeded: the minimums are operator settings
and this function does not override them.

Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from autoscaler.policy.types import MemoryBudget, Reason


@dataclass(frozen=True, slots=True)
class PoolRequest:
    """The request of one pool, from its own ``decide``."""

    target: int
    # Lowest allocation: min_children, or the pool's own memory ceiling when
    # that is lower (decide lets the ceiling win over min_children).
    minimum: int
    # Peak busy workers plus queue in the decision window; 0 when unknown.
    demand: int
    # Memory of one worker; None means the shared budget's worker_bytes.
    worker_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Allocation:
    """The target a pool may have, and which shared limit lowered it, if any."""

    pool: str
    requested: int
    target: int
    reason: Reason | None
    message: str

    @property
    def limited(self) -> bool:
        return self.target < self.requested


def fit_pools(
    requests: Mapping[str, PoolRequest],
    *,
    process_max: int,
    shared_memory: MemoryBudget | None,
) -> dict[str, Allocation]:
    """Return each pool's allowed target under ``process_max`` and the shared memory budget.

    ``process_max`` is php-fpm's global ``process.max``; 0 means no limit. It
    counts the children of every pool of the master, so ``requests`` should
    hold every pool. ``shared_memory`` supplies the limit, the reserve and
    the margin; a pool without its own ``worker_bytes`` uses the budget's.
    The memory check is sum(target x worker memory x (1 + margin)) <=
    limit - reserve, the multi-pool form of the per-pool memory ceiling.
    """
    limits = _Limits.build(requests, process_max, shared_memory)
    requested = {name: request.target for name, request in requests.items()}
    if limits.fits(requested):
        return {
            name: Allocation(name, target, target, None, "within shared limits")
            for name, target in requested.items()
        }

    floors = {name: min(r.minimum, r.target) for name, r in requests.items()}
    if not limits.fits(floors):
        reason = limits.violated(floors)
        message = f"the pools' minimums alone exceed {limits.describe(reason)}; lower them"
        return {
            name: Allocation(name, requested[name], floors[name], reason, message)
            for name in requests
        }

    reason = _binding_limit(requests, floors, limits)
    allocated, stopped_at = _divide_by_demand(requests, floors, limits)
    _hand_out_remainders(requests, allocated, stopped_at, limits)
    message = f"split by demand to fit {limits.describe(reason)}"
    return {
        name: Allocation(
            name,
            requested[name],
            allocated[name],
            reason if allocated[name] < requested[name] else None,
            message if allocated[name] < requested[name] else "within shared limits",
        )
        for name in requests
    }


@dataclass(frozen=True, slots=True)
class _Limits:
    process_max: int
    # Exact memory arithmetic: a float sum could land one ulp either side
    # of the limit and flip a decision.
    memory_available: Fraction | None
    worker_memory: Mapping[str, Fraction]

    @classmethod
    def build(
        cls,
        requests: Mapping[str, PoolRequest],
        process_max: int,
        budget: MemoryBudget | None,
    ) -> _Limits:
        if budget is None or budget.limit_bytes is None:
            return cls(process_max, None, {})
        scale = 1 + Fraction(budget.margin_ratio)
        worker_memory = {}
        for name, request in requests.items():
            worker_bytes = request.worker_bytes or budget.worker_bytes
            # NOTE: a pool with no memory figure at all counts as 0 bytes.
            worker_memory[name] = Fraction(worker_bytes or 0) * scale
        return cls(process_max, Fraction(budget.limit_bytes - budget.reserve_bytes), worker_memory)

    def fits_processes(self, targets: Mapping[str, int]) -> bool:
        return self.process_max <= 0 or sum(targets.values()) <= self.process_max

    def fits_memory(self, targets: Mapping[str, int]) -> bool:
        if self.memory_available is None:
            return True
        used = sum(count * self.worker_memory[name] for name, count in targets.items())
        return used <= self.memory_available

    def fits(self, targets: Mapping[str, int]) -> bool:
        return self.fits_processes(targets) and self.fits_memory(targets)

    def violated(self, targets: Mapping[str, int]) -> Reason:
        return Reason.PROCESS_MAX if not self.fits_processes(targets) else Reason.MEMORY_CEILING

    def describe(self, reason: Reason) -> str:
        if reason is Reason.PROCESS_MAX:
            return f"process.max={self.process_max}"
        available = self.memory_available or 0
        return f"the shared memory budget ({math.floor(available)} bytes after the reserve)"


def _divide_by_demand(
    requests: Mapping[str, PoolRequest], floors: Mapping[str, int], limits: _Limits
) -> tuple[dict[str, int], Fraction | None]:
    """Raise the demand share step by step while the allocation fits.

    A pool's allocation clamp(floor(share x demand), minimum, target) grows
    by one worker at share (allocation + 1) / demand, so the steps are taken
    in that order, pools reaching the same share together. Returns the
    allocation and the share at which the next step no longer fit (None
    when every pool reached its target or has no demand).
    """
    allocated = dict(floors)
    while True:
        steps = {
            name: Fraction(allocated[name] + 1, request.demand)
            for name, request in requests.items()
            if request.demand > 0 and allocated[name] < request.target
        }
        if not steps:
            return allocated, None
        share = min(steps.values())
        trial = dict(allocated)
        for name, at in steps.items():
            if at == share:
                trial[name] += 1
        if not limits.fits(trial):
            return allocated, share
        allocated = trial


def _binding_limit(
    requests: Mapping[str, PoolRequest], floors: Mapping[str, int], limits: _Limits
) -> Reason:
    """Name the limit that stops the demand share first when both are exceeded."""
    targets = {name: request.target for name, request in requests.items()}
    if limits.fits_processes(targets):
        return Reason.MEMORY_CEILING
    if limits.fits_memory(targets):
        return Reason.PROCESS_MAX
    _, by_processes = _divide_by_demand(requests, floors, _Limits(limits.process_max, None, {}))
    _, by_memory = _divide_by_demand(
        requests, floors, _Limits(0, limits.memory_available, limits.worker_memory)
    )
    if by_processes is None:
        return Reason.MEMORY_CEILING
    if by_memory is None:
        return Reason.PROCESS_MAX
    return Reason.PROCESS_MAX if by_processes <= by_memory else Reason.MEMORY_CEILING


def _hand_out_remainders(
    requests: Mapping[str, PoolRequest],
    allocated: dict[str, int],
    stopped_at: Fraction | None,
    limits: _Limits,
) -> None:
    """Give single workers to the largest remainders of share x demand while they fit.

    Just below the share that did not fit, the pools whose step failed have
    a remainder close to 1, so they come first.
    """

    def remainder(name: str) -> Fraction:
        demand = requests[name].demand
        if stopped_at is None or demand <= 0:
            return Fraction(0)
        exact = stopped_at * demand
        if exact == allocated[name] + 1:
            return Fraction(1)
        return exact - math.floor(exact)

    names = sorted(requests, key=lambda name: (-remainder(name), -requests[name].demand, name))
    added = True
    while added:
        added = False
        for name in names:
            if allocated[name] >= requests[name].target:
                continue
            allocated[name] += 1
            if limits.fits(allocated):
                added = True
            else:
                allocated[name] -= 1

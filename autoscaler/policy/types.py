"""Values the policy takes and returns. Plain data: no I/O, no clock."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Failure(StrEnum):
    """Cause of a poll that produced no sample."""

    TIMEOUT = "timeout"  # saturation hint: the status request waited behind busy workers
    BUSY = "busy"  # 503 or empty reply: saturation hint
    CONNECT = "connect"  # php-fpm not reachable: no evidence either way
    ACCESS = "access"  # 403/404: the poller is misconfigured
    PARSE = "parse"  # not a status page


SATURATION_HINTS = frozenset({Failure.TIMEOUT, Failure.BUSY})
CONFIG_FAILURES = frozenset({Failure.ACCESS, Failure.PARSE})


class Reason(StrEnum):
    """Machine-readable cause of a decision; the label of the decisions metric."""

    DEMAND = "demand"
    SATURATED = "saturated"
    SATURATION_HINT = "saturation_hint"
    WITHIN_TOLERANCE = "within_tolerance"
    STABILIZING = "stabilizing"
    STEP_LIMIT = "step_limit"
    COOLDOWN = "cooldown"
    MIN_CHILDREN = "min_children"
    MAX_CHILDREN = "max_children"
    MEMORY_CEILING = "memory_ceiling"
    PROCESS_MAX = "process_max"
    NO_DATA = "no_data"
    IMPLAUSIBLE = "implausible"
    CONFIG_ERROR = "config_error"
    UNKNOWN_CURRENT = "unknown_current"


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class Observation:
    """One poll of one pool, reduced to the values the policy uses."""

    at_seconds: float
    busy: int | None = None
    idle: int | None = None
    total: int | None = None
    # None where the queue is invisible (unix sockets) or unknown.
    queue: int | None = None
    # Rise of php-fpm's "max children reached" counter since the last poll;
    # None after a reload or a counter reset.
    max_children_reached_increase: int | None = None
    failure: Failure | None = None
    # The poll succeeded but took long: the status request waited for a worker.
    slow: bool = False
    # Values that cannot be right (active above max_children, counters
    # going backwards): usable for scaling up, never for scaling down.
    implausible: bool = False

    @property
    def demand(self) -> int | None:
        """Busy workers plus queued requests, or None without a sample."""
        if self.failure is not None or self.busy is None:
            return None
        return self.busy + (self.queue or 0)


@dataclass(frozen=True, slots=True)
class MemoryBudget:
    """Memory available to a pool's workers and what one worker takes."""

    limit_bytes: int | None
    limit_source: str
    reserve_bytes: int
    worker_bytes: int | None
    worker_source: str
    margin_ratio: float = 0.1

    @property
    def ceiling(self) -> int | None:
        """floor((limit - reserve) / (worker memory x (1 + margin))), at least 1, or None."""
        if self.limit_bytes is None or not self.worker_bytes:
            return None
        available = self.limit_bytes - self.reserve_bytes
        per_worker = self.worker_bytes * (1 + self.margin_ratio)
        return max(1, math.floor(available / per_worker))


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """Tuning of the policy; built from the environment settings by the controller."""

    min_children: int = 2
    max_children: int = 32
    target_utilization: float = 0.75
    tolerance_ratio: float = 0.1
    decision_window_seconds: float = 10.0
    scale_down_stabilization_seconds: float = 300.0
    scale_down_max_ratio: float = 0.5
    saturation_step_ratio: float = 1.5
    # One scale-up adds at most max(current x ratio, workers), as the
    # Kubernetes HPA's default scale-up policy does (100 % or 4 pods).
    scale_up_max_ratio: float = 1.0
    scale_up_max_workers: int = 4
    # Reloads drain in-flight requests and empty OPcache, so they are rationed:
    # after any reload, a scale-down waits min_reload_interval_seconds and a
    # scale-up, which relieves queued requests, only scale_up_interval_seconds.
    min_reload_interval_seconds: float = 30.0
    scale_up_interval_seconds: float = 15.0
    # Each scale-up soon after a scale-down multiplies the scale-down window
    # by this factor, up to flap_penalty_max; it halves after each quiet window.
    flap_penalty_factor: float = 2.0
    flap_penalty_max: float = 8.0


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy verdict for one pool, with its reason and the inputs it used."""

    pool: str
    current: int | None
    target: int
    reason: Reason
    message: str
    # Demand-based wish before bounds, step limits and stabilization; feeds
    # the saturation ratio that drives horizontal scaling.
    desired_unclamped: int | None = None
    # The recommendation after bounds, before stabilization and step limits;
    # the stabilization window remembers it.
    recommendation: int | None = None
    ceiling: int | None = None
    saturated: bool = False
    inputs: Mapping[str, float | int | str | bool | None] = field(default_factory=dict)

    @property
    def direction(self) -> Direction:
        if self.current is None or self.target == self.current:
            return Direction.HOLD
        return Direction.UP if self.target > self.current else Direction.DOWN

    @property
    def changes(self) -> bool:
        return self.direction is not Direction.HOLD

    @property
    def saturation_ratio(self) -> float | None:
        """Unclamped desire over the pool's ceiling; above 1 the pod needs help."""
        if self.desired_unclamped is None or not self.ceiling:
            return None
        return self.desired_unclamped / self.ceiling

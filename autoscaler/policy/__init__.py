"""Pure scaling policy: no I/O, no clock, no logging (a test enforces the imports)."""

from autoscaler.policy.decide import decide
from autoscaler.policy.state import PoolState
from autoscaler.policy.types import (
    Decision,
    Direction,
    Failure,
    MemoryBudget,
    Observation,
    PolicySettings,
    Reason,
)

__all__ = [
    "Decision",
    "Direction",
    "Failure",
    "MemoryBudget",
    "Observation",
    "PolicySettings",
    "PoolState",
    "Reason",
    "decide",
]

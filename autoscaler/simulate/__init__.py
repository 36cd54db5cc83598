"""Discrete-event simulation of a php-fpm pool sized by the real policy."""

from autoscaler.simulate.model import AgentModel, PoolModel, Reload, RunResult, simulate
from autoscaler.simulate.traces import LoadShape, Trace, TraceError, generate, read_csv

__all__ = [
    "AgentModel",
    "LoadShape",
    "PoolModel",
    "Reload",
    "RunResult",
    "Trace",
    "TraceError",
    "generate",
    "read_csv",
    "simulate",
]

"""Reading php-fpm status pages over FastCGI or HTTP into ``PoolSample``."""

from autoscaler.status.counters import CounterIncrease, CounterTracker
from autoscaler.status.model import PoolSample, WorkerSample
from autoscaler.status.parse import parse_status
from autoscaler.status.reader import StatusReader

__all__ = [
    "CounterIncrease",
    "CounterTracker",
    "PoolSample",
    "StatusReader",
    "WorkerSample",
    "parse_status",
]

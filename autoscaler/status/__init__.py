"""Reading php-fpm status pages over FastCGI or HTTP into ``PoolSample``."""

from autoscaler.status.model import PoolSample, WorkerSample

__all__ = ["PoolSample", "WorkerSample"]

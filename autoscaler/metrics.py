"""Prometheus metrics of the agent, in an explicit registry.

Pool series keep the names that php-fpm dashboards already use (those of
the widely deployed php-fpm exporters: ``phpfpm_up``, ``phpfpm_active_processes``
... with label ``pool``), so the agent can replace a separate exporter. They
are gauges mirroring php-fpm's own counters, which reset on every reload.
Agent series have the prefix ``phpfpm_autoscaler_``.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from autoscaler.policy.types import Decision
from autoscaler.status.model import PoolSample

# (metric name, PoolSample field, help text)
POOL_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("phpfpm_start_since", "start_since_seconds", "Seconds since the pool (re)started."),
    (
        "phpfpm_accepted_connections",
        "accepted_connections_total",
        "Requests accepted since the pool started (php-fpm 'accepted conn').",
    ),
    (
        "phpfpm_listen_queue",
        "listen_queue",
        "Requests waiting in the listen backlog; always 0 on unix sockets.",
    ),
    ("phpfpm_max_listen_queue", "max_listen_queue", "Highest listen queue since the pool started."),
    ("phpfpm_listen_queue_length", "listen_queue_length", "Size of the listen backlog."),
    ("phpfpm_idle_processes", "idle_processes", "Idle workers."),
    (
        "phpfpm_active_processes",
        "active_processes",
        "Active workers as php-fpm reports them (includes a status request served by the pool).",
    ),
    ("phpfpm_total_processes", "total_processes", "Idle plus active workers."),
    (
        "phpfpm_max_active_processes",
        "max_active_processes",
        "Highest active workers since the pool started.",
    ),
    (
        "phpfpm_max_children_reached",
        "max_children_reached_total",
        "Times the pool hit pm.max_children since it started.",
    ),
    (
        "phpfpm_slow_requests",
        "slow_requests_total",
        "Requests slower than request_slowlog_timeout since the pool started.",
    ),
)

RELOAD_RESULTS = (
    "success",
    "validation_failed",
    "reload_failed",
    "rolled_back",
    "unverified",
)


class Metrics:
    """Every series the agent exports, registered in ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.up = Gauge(
            "phpfpm_up",
            "1 when the last poll of the pool's status page succeeded.",
            ["pool"],
            registry=r,
        )
        self.pool_gauges = {
            name: (field, Gauge(name, help_text, ["pool"], registry=r))
            for name, field, help_text in POOL_GAUGES
        }
        self.busy = Gauge(
            "phpfpm_autoscaler_busy_workers",
            "Workers serving application requests (status requests excluded).",
            ["pool"],
            registry=r,
        )
        self.max_children = Gauge(
            "phpfpm_autoscaler_max_children",
            "pm.max_children currently in force.",
            ["pool"],
            registry=r,
        )
        self.desired = Gauge(
            "phpfpm_autoscaler_desired_max_children",
            "pm.max_children the policy recommends, after bounds.",
            ["pool"],
            registry=r,
        )
        self.ceiling = Gauge(
            "phpfpm_autoscaler_memory_ceiling_children",
            "Highest pm.max_children allowed (max children setting lowered by the memory ceiling).",
            ["pool"],
            registry=r,
        )
        self.worker_memory = Gauge(
            "phpfpm_autoscaler_worker_memory_bytes",
            "Memory of one worker used for the memory ceiling (p90 across workers).",
            ["pool"],
            registry=r,
        )
        self.memory_limit = Gauge(
            "phpfpm_autoscaler_memory_limit_bytes",
            "Memory limit the ceiling is computed from.",
            ["pool"],
            registry=r,
        )
        self.memory_source = Gauge(
            "phpfpm_autoscaler_memory_source_info",
            "Always 1; the labels name where the memory limit and the worker memory came from.",
            ["pool", "limit_source", "worker_source"],
            registry=r,
        )
        self.utilization = Gauge(
            "phpfpm_autoscaler_utilization_ratio",
            "Busy workers over pm.max_children.",
            ["pool"],
            registry=r,
        )
        self.saturation = Gauge(
            "phpfpm_autoscaler_saturation_ratio",
            "Unclamped desired workers over the ceiling; above 1 the pod cannot grow enough.",
            ["pool"],
            registry=r,
        )
        self.decisions = Counter(
            "phpfpm_autoscaler_decisions",
            "Policy decisions.",
            ["pool", "direction", "reason"],
            registry=r,
        )
        self.reloads = Counter(
            "phpfpm_autoscaler_reloads", "php-fpm reloads by result.", ["result"], registry=r
        )
        for result in RELOAD_RESULTS:
            self.reloads.labels(result=result)
        self.reload_duration = Histogram(
            "phpfpm_autoscaler_reload_duration_seconds",
            "Time from writing the override to a verified reload.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.poll_duration = Histogram(
            "phpfpm_autoscaler_poll_duration_seconds",
            "Duration of one status poll.",
            ["pool"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.errors = Counter(
            "phpfpm_autoscaler_errors",
            "Caught errors by pool and stage.",
            ["pool", "stage"],
            registry=r,
        )
        self.last_tick = Gauge(
            "phpfpm_autoscaler_last_tick_timestamp_seconds",
            "Unix time of the last completed tick.",
            registry=r,
        )
        self.healthy = Gauge(
            "phpfpm_autoscaler_healthy",
            "0 when php-fpm is down after a failed reload or ticks have stopped.",
            registry=r,
        )
        self.healthy.set(1)

    def record_sample(self, pool: str, sample: PoolSample) -> None:
        self.up.labels(pool=pool).set(1)
        for _name, (field, gauge) in self.pool_gauges.items():
            value = getattr(sample, field)
            if value is None:
                # Unknown, not zero: drop the series rather than publish 0.
                with contextlib.suppress(KeyError):
                    gauge.remove(pool)
                continue
            gauge.labels(pool=pool).set(value)
        if sample.busy_workers is not None:
            self.busy.labels(pool=pool).set(sample.busy_workers)
        self.poll_duration.labels(pool=pool).observe(sample.poll_duration_seconds)

    def record_down(self, pool: str, stage: str) -> None:
        """Mark the pool down and keep its last values out of the way: never zeros."""
        self.up.labels(pool=pool).set(0)
        for _name, (_field, gauge) in self.pool_gauges.items():
            with contextlib.suppress(KeyError):
                gauge.remove(pool)
        self.errors.labels(pool=pool, stage=stage).inc()

    def forget(self, pool: str) -> None:
        """Drop every series labelled ``pool`` (a status URI replaced by the pool's name)."""
        for collector, label_names in self._pool_collectors():
            for family in collector.collect():
                for sample in family.samples:
                    if sample.labels.get("pool") != pool:
                        continue
                    with contextlib.suppress(KeyError):
                        collector.remove(*(sample.labels[name] for name in label_names))

    def _pool_collectors(self) -> list[tuple[Gauge | Counter | Histogram, tuple[str, ...]]]:
        pool_only = ("pool",)
        collectors: list[tuple[Gauge | Counter | Histogram, tuple[str, ...]]] = [
            (self.up, pool_only),
            (self.busy, pool_only),
            (self.max_children, pool_only),
            (self.desired, pool_only),
            (self.ceiling, pool_only),
            (self.worker_memory, pool_only),
            (self.memory_limit, pool_only),
            (self.utilization, pool_only),
            (self.saturation, pool_only),
            (self.poll_duration, pool_only),
            (self.memory_source, ("pool", "limit_source", "worker_source")),
            (self.decisions, ("pool", "direction", "reason")),
            (self.errors, ("pool", "stage")),
        ]
        collectors += [(gauge, pool_only) for _field, gauge in self.pool_gauges.values()]
        return collectors

    def record_decision(self, decision: Decision) -> None:
        pool = decision.pool
        self.decisions.labels(
            pool=pool, direction=decision.direction.value, reason=decision.reason.value
        ).inc()
        if decision.recommendation is not None:
            self.desired.labels(pool=pool).set(decision.recommendation)
        if decision.ceiling is not None:
            self.ceiling.labels(pool=pool).set(decision.ceiling)
        ratio = decision.saturation_ratio
        if ratio is not None:
            self.saturation.labels(pool=pool).set(ratio)
        busy = decision.inputs.get("busy")
        if decision.current and isinstance(busy, int):
            self.utilization.labels(pool=pool).set(busy / decision.current)

"""The metrics registry: names, types and labels as documented, never zeros for unknown values."""

from __future__ import annotations

from pathlib import Path

from autoscaler.metrics import Metrics
from autoscaler.policy import Decision, Reason
from autoscaler.status import PoolSample

EXPORTED = Path(__file__).parent / "deploy" / "exported_metrics.txt"


def documented() -> dict[str, tuple[str, set[str]]]:
    families = {}
    for line in EXPORTED.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, kind, labels = line.split()
        families[name] = (kind, set() if labels == "-" else set(labels.split(",")))
    return families


def exported(metrics: Metrics) -> dict[str, tuple[str, set[str]]]:
    families = {}
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels: set[str] = set()
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
        families[name] = (family.type, labels)
    return families


def sample(**overrides: object) -> PoolSample:
    values: dict[str, object] = dict(
        pool="www",
        process_manager="dynamic",
        start_time_seconds=1.0,
        start_since_seconds=5,
        accepted_connections_total=10,
        listen_queue=0,
        max_listen_queue=0,
        listen_queue_length=511,
        idle_processes=1,
        active_processes=2,
        total_processes=3,
        max_active_processes=3,
        max_children_reached_total=0,
        slow_requests_total=0,
    )
    values.update(overrides)
    return PoolSample(**values)  # type: ignore[arg-type]


def filled_metrics() -> Metrics:
    metrics = Metrics()
    metrics.record_sample("www", sample())
    metrics.record_decision(
        Decision(
            pool="www",
            current=4,
            target=6,
            reason=Reason.SATURATED,
            message="",
            desired_unclamped=6,
            recommendation=6,
            ceiling=10,
            inputs={"busy": 4},
        )
    )
    metrics.max_children.labels(pool="www").set(6)
    metrics.worker_memory.labels(pool="www").set(1)
    metrics.memory_limit.labels(pool="www").set(1)
    metrics.memory_source.labels(pool="www", limit_source="setting", worker_source="pss").set(1)
    metrics.errors.labels(pool="www", stage="status").inc()
    metrics.reload_duration.observe(0.2)
    return metrics


def test_exported_metrics_match_documented_list() -> None:
    assert exported(filled_metrics()) == documented()


def test_unknown_value_is_absent_not_zero() -> None:
    metrics = Metrics()
    metrics.record_sample("www", sample(slow_requests_total=None))
    assert metrics.registry.get_sample_value("phpfpm_slow_requests", {"pool": "www"}) is None
    assert metrics.registry.get_sample_value("phpfpm_active_processes", {"pool": "www"}) == 2


def test_down_pool_drops_values() -> None:
    metrics = Metrics()
    metrics.record_sample("www", sample())
    metrics.record_down("www", "status")
    assert metrics.registry.get_sample_value("phpfpm_up", {"pool": "www"}) == 0
    assert metrics.registry.get_sample_value("phpfpm_idle_processes", {"pool": "www"}) is None
    assert (
        metrics.registry.get_sample_value(
            "phpfpm_autoscaler_errors_total", {"pool": "www", "stage": "status"}
        )
        == 1
    )


def test_saturation_ratio_is_unclamped_over_ceiling() -> None:
    metrics = Metrics()
    metrics.record_decision(
        Decision(
            pool="www",
            current=10,
            target=10,
            reason=Reason.MEMORY_CEILING,
            message="",
            desired_unclamped=25,
            recommendation=10,
            ceiling=10,
        )
    )
    assert (
        metrics.registry.get_sample_value("phpfpm_autoscaler_saturation_ratio", {"pool": "www"})
        == 2.5
    )


def test_forget_drops_every_series_of_a_pool() -> None:
    metrics = filled_metrics()
    metrics.record_sample("other", sample(pool="other"))
    metrics.forget("www")
    names = set()
    for family in metrics.registry.collect():
        for item in family.samples:
            if item.labels.get("pool") == "www":
                names.add(item.name)
    assert names == set()
    assert metrics.registry.get_sample_value("phpfpm_up", {"pool": "other"}) == 1

"""Every metric the dashboard, the alerting rules and the chart's scalers use is exported."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.deploy.helpers import (
    CHART,
    DEPLOY,
    exported_metrics,
    helm_available,
    only,
    render_chart,
    sample_names,
)

METRIC = re.compile(r"\b(phpfpm_[a-zA-Z0-9_]*)")
SELECTOR = re.compile(r"\b(phpfpm_[a-zA-Z0-9_]*)\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
# Labels that Prometheus or the Prometheus Operator add at scrape time.
TARGET_LABELS = {"instance", "job", "namespace", "pod", "service", "container", "endpoint"}


def dashboard_queries() -> list[str]:
    dashboard = json.loads((CHART / "dashboards" / "phpfpm-autoscaler.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["definition"])
    return queries


def rule_queries() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def check_queries(queries: list[str]) -> set[str]:
    """Assert every metric and label in the queries is exported; return the metric names."""
    known = sample_names(exported_metrics())
    used: set[str] = set()
    for query in queries:
        names = set(METRIC.findall(query))
        assert names, f"query names no phpfpm metric: {query}"
        assert names <= known.keys(), f"not exported: {sorted(names - known.keys())} in {query}"
        used |= names
        for name, matchers in SELECTOR.findall(query):
            labels = set(MATCHER.findall(matchers))
            allowed = known[name].labels | TARGET_LABELS | {"le"}
            assert labels <= allowed, f"{name} has no label {sorted(labels - allowed)}: {query}"
    return used


def test_exported_list_is_well_formed() -> None:
    families = exported_metrics()

    for family in families.values():
        assert family.name.startswith("phpfpm_"), family.name
        assert (family.type == "counter") == family.name.endswith("_total"), family.name
        assert not family.name.endswith(("_bucket", "_sum", "_count")), family.name
    assert families["phpfpm_autoscaler_saturation_ratio"].labels == {"pool"}


def test_dashboard_uses_exported_metrics() -> None:
    used = check_queries(dashboard_queries())

    # The panels that operators read first are there.
    for name in ("phpfpm_autoscaler_max_children", "phpfpm_autoscaler_saturation_ratio",
                 "phpfpm_active_processes", "phpfpm_autoscaler_reloads_total"):
        assert name in used


def test_rules_use_exported_metrics() -> None:
    used = check_queries(rule_queries())

    assert "phpfpm_up" in used
    assert "phpfpm_autoscaler_reloads_total" in used


def test_histograms_queried_by_series() -> None:
    # A histogram has no series under its bare name: queries must use a suffix.
    families = exported_metrics()
    histograms = {name for name, family in families.items() if family.type == "histogram"}

    for query in dashboard_queries() + rule_queries():
        assert not set(METRIC.findall(query)) & histograms, query


@pytest.mark.skipif(helm_available() is not None, reason=str(helm_available()))
def test_chart_scalers_use_exported_metrics() -> None:
    hpa = only(render_chart({"hpa": {"enabled": True}}), "HorizontalPodAutoscaler")
    keda = only(render_chart({"keda": {"enabled": True}}), "ScaledObject")
    queries: list[Any] = [
        hpa["spec"]["metrics"][0]["pods"]["metric"]["name"],
        keda["spec"]["triggers"][0]["metadata"]["query"],
    ]

    assert check_queries(queries) == {"phpfpm_autoscaler_saturation_ratio"}

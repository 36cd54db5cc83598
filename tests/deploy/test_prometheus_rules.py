"""Alerting rules and scrape examples, checked and unit-tested with promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.helpers import DEPLOY

PROMTOOL = shutil.which("promtool")
requires_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed; apt-get install prometheus"
)
RULES_DIR = DEPLOY / "prometheus"


def promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


@requires_promtool
def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", "rules.yml")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


@requires_promtool
def test_rules_unit_tests_pass() -> None:
    result = promtool("test", "rules", "rules.test.yml")

    assert result.returncode == 0, result.stdout + result.stderr


@requires_promtool
def test_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    # A threshold moved by a typo must fail the unit tests, or they test nothing.
    rules = (RULES_DIR / "rules.yml").read_text()
    threshold = "phpfpm_autoscaler_saturation_ratio > 1"
    assert threshold in rules
    (tmp_path / "rules.yml").write_text(rules.replace(threshold, threshold + "0"))
    shutil.copy(RULES_DIR / "rules.test.yml", tmp_path / "rules.test.yml")

    result = promtool("test", "rules", "rules.test.yml", cwd=tmp_path)

    assert result.returncode != 0
    assert "PhpFpmPoolAtMemoryCeiling" in result.stdout + result.stderr


def test_every_alert_is_unit_tested() -> None:
    rules = yaml.safe_load((RULES_DIR / "rules.yml").read_text())
    tests = yaml.safe_load((RULES_DIR / "rules.test.yml").read_text())

    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    firing = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert alerts == firing


def test_alerts_have_severity_and_text() -> None:
    rules = yaml.safe_load((RULES_DIR / "rules.yml").read_text())

    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
            assert rule["annotations"]["description"], rule["alert"]


@requires_promtool
@pytest.mark.parametrize(
    "config",
    [RULES_DIR / "scrape.yml", DEPLOY / "compose" / "prometheus.yml"],
    ids=lambda path: path.name,
)
def test_scrape_config_syntax(config: Path) -> None:
    result = promtool("check", "config", "--syntax-only", str(config))

    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_scrape_keeps_chart_port() -> None:
    # Debian's promtool is built without Kubernetes service discovery, so this
    # file is checked by structure only.
    config = yaml.safe_load((RULES_DIR / "scrape-kubernetes.yml").read_text())
    chart_helpers = (DEPLOY.parent / "charts/phpfpm-autoscaler/templates/_helpers.tpl").read_text()

    keep = config["scrape_configs"][0]["relabel_configs"][0]
    assert keep["action"] == "keep"
    assert keep["source_labels"] == ["__meta_kubernetes_pod_container_port_name"]
    assert f"- name: {keep['regex']}\n" in chart_helpers

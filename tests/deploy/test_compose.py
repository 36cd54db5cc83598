"""deploy/compose.yaml, checked by structure (no Docker engine here)."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

import yaml

from autoscaler.settings import load_settings
from tests.deploy.helpers import DEPLOY, load_yaml, unknown_env_names

COMPOSE = DEPLOY / "compose.yaml"


def services() -> dict[str, Any]:
    return dict(load_yaml(COMPOSE)["services"])


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Return {container path: host path} for the service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = source
    return mounts


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith((".", "/")):
            mounts[target] = source
    return mounts


def fpm_include() -> dict[tuple[str, str], str]:
    section, found = "", {}
    for line in (DEPLOY / "compose/php-fpm/zzz-autoscaler-include.conf").read_text().splitlines():
        text = line.strip()
        if not text or text.startswith(";"):
            continue
        if text.startswith("["):
            section = text.strip("[]")
            continue
        key, _, value = text.partition("=")
        found[(section, key.strip())] = value.strip()
    return found


def test_stack_has_every_service() -> None:
    assert set(services()) == {"php", "nginx", "autoscaler", "prometheus", "grafana"}
    assert services()["php"]["image"] == "php:8.2-fpm"
    assert services()["autoscaler"]["build"]["dockerfile"] == "deploy/Dockerfile"


def test_agent_shares_php_pid_namespace() -> None:
    agent = services()["autoscaler"]

    assert agent["pid"] == "service:php"
    assert agent["network_mode"] == "service:php"
    assert agent["user"] == services()["php"]["user"]
    assert agent["read_only"] is True
    assert agent["cap_drop"] == ["ALL"]


def test_agent_env_is_valid_settings() -> None:
    env = services()["autoscaler"]["environment"]

    assert unknown_env_names(set(env)) == set()
    settings = load_settings({key: str(value) for key, value in env.items()})
    assert settings.override_file is not None


def test_override_directory_is_shared() -> None:
    env = services()["autoscaler"]["environment"]
    override = PurePosixPath(env["PHPFPM_AUTOSCALER_OVERRIDE_FILE"])
    include = PurePosixPath(fpm_include()[("www", "include")])

    assert include.parent == override.parent
    assert override.match(str(include))
    php_volume = named_volumes(services()["php"])[str(override.parent)]
    agent_volume = named_volumes(services()["autoscaler"])[str(override.parent)]
    assert php_volume == agent_volume
    assert php_volume in load_yaml(COMPOSE)["volumes"]


def test_status_url_matches_status_listen() -> None:
    env = services()["autoscaler"]["environment"]
    include = fpm_include()

    listen = include[("www", "pm.status_listen")]
    path = include[("www", "pm.status_path")]
    assert env["PHPFPM_AUTOSCALER_STATUS_URLS"] == f"tcp://{listen}{path}"
    assert include[("global", "process_control_timeout")] == "10s"
    php_mounts = bind_mounts(services()["php"])
    assert "/usr/local/etc/php-fpm.d/zzz-autoscaler-include.conf" in php_mounts


def test_memory_limit_matches_php_limit() -> None:
    env = services()["autoscaler"]["environment"]

    assert services()["php"]["mem_limit"] == "512m"
    assert int(env["PHPFPM_AUTOSCALER_MEMORY_LIMIT_BYTES"]) == 512 * 1024 * 1024


def test_bind_mount_sources_exist() -> None:
    for name, service in services().items():
        for source in bind_mounts(service).values():
            assert (DEPLOY / source).exists(), f"{name}: {source}"


def test_ports_published_on_loopback() -> None:
    for name, service in services().items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port}"


def test_prometheus_loads_rules_and_scrapes_agent() -> None:
    prometheus = services()["prometheus"]
    mounts = bind_mounts(prometheus)
    config = yaml.safe_load((DEPLOY / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    metrics_port = services()["autoscaler"]["environment"]["PHPFPM_AUTOSCALER_METRICS_ADDRESS"]

    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    assert mounts["/etc/prometheus/rules.yml"] == "./prometheus/rules.yml"
    targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"php:{metrics_port.rpartition(':')[2]}"]


def test_grafana_provisions_chart_dashboard() -> None:
    grafana = services()["grafana"]
    mounts = bind_mounts(grafana)
    provider = load_yaml(DEPLOY / "compose/grafana/provisioning/dashboards/phpfpm-autoscaler.yml")
    path = provider["providers"][0]["options"]["path"]

    source = DEPLOY / mounts[path]
    dashboards = sorted(source.glob("*.json"))
    assert [d.name for d in dashboards] == ["phpfpm-autoscaler.json"]
    assert json.loads(dashboards[0].read_text())["uid"] == "phpfpm-autoscaler"
    datasources = load_yaml(DEPLOY / "compose/grafana/provisioning/datasources/prometheus.yml")
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"

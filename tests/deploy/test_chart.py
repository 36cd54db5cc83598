"""The Helm chart, rendered by Helm's own engine (Helm v4 Go SDK through helm-python-sdk)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from autoscaler.settings import Settings, env_name, load_settings
from tests.conftest import requires_fpm
from tests.deploy.helpers import (
    CHART,
    DEPLOY,
    containers,
    helm_available,
    literal_env,
    objects_of_kind,
    only,
    render_chart,
    unknown_env_names,
)
from tests.fpm import find_fpm_binary

pytestmark = pytest.mark.skipif(helm_available() is not None, reason=str(helm_available()))

# Chart values that set one agent variable each, with a value that passes the
# schema. Every other Settings field is set through agent.env.
FIRST_CLASS_VALUES: dict[str, tuple[str, Any]] = {
    "PHPFPM_AUTOSCALER_MODE": ("mode", "recommend"),
    "PHPFPM_AUTOSCALER_MIN_CHILDREN": ("minChildren", 3),
    "PHPFPM_AUTOSCALER_MAX_CHILDREN": ("maxChildren", 40),
    "PHPFPM_AUTOSCALER_TARGET_UTILIZATION": ("targetUtilization", 0.6),
    "PHPFPM_AUTOSCALER_POLL_INTERVAL_SECONDS": ("pollIntervalSeconds", 2),
    "PHPFPM_AUTOSCALER_POLL_TIMEOUT_SECONDS": ("pollTimeoutSeconds", 1.5),
    "PHPFPM_AUTOSCALER_SCALE_DOWN_STABILIZATION_SECONDS": ("scaleDownStabilizationSeconds", 600),
    "PHPFPM_AUTOSCALER_MIN_RELOAD_INTERVAL_SECONDS": ("minReloadIntervalSeconds", 45),
    "PHPFPM_AUTOSCALER_RELOAD_METHOD": ("reloadMethod", "command"),
    "PHPFPM_AUTOSCALER_LOG_FORMAT": ("logFormat", "text"),
    "PHPFPM_AUTOSCALER_LOG_LEVEL": ("logLevel", "DEBUG"),
    "PHPFPM_AUTOSCALER_STATUS_URLS": ("statusUrls", "tcp://127.0.0.1:9002/fpm-status"),
    "PHPFPM_AUTOSCALER_MEMORY_LIMIT_BYTES": ("memoryLimitBytes", 1073741824),
}
# Variables the chart derives from other values: name -> (values, expected value).
DERIVED_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "PHPFPM_AUTOSCALER_OVERRIDE_FILE": (
        {"fpm": {"overrideDirectory": "/run/fpm-override", "overrideFileName": "zz-x.conf"}},
        "/run/fpm-override/zz-x.conf",
    ),
    "PHPFPM_AUTOSCALER_METRICS_ADDRESS": ({"agent": {"metricsPort": 9300}}, "0.0.0.0:9300"),
}
PATCH_VALUES = {"workload": {"mode": "existing", "renderPatch": True, "name": "shop-web"}}
EXISTING_VALUES = {
    "workload": {"mode": "existing", "name": "shop-web", "selectorLabels": {"app": "shop-web"}}
}


def agent(documents: list[dict[str, Any]], kind: str = "Deployment") -> dict[str, Any]:
    return containers(only(documents, kind))["autoscaler"]


def fpm_include_text(documents: list[dict[str, Any]]) -> str:
    for config_map in objects_of_kind(documents, "ConfigMap"):
        data = config_map.get("data", {})
        if "zzz-autoscaler-include.conf" in data:
            return str(data["zzz-autoscaler-include.conf"])
    raise AssertionError("no ConfigMap with zzz-autoscaler-include.conf")


def fpm_directives(text: str) -> dict[tuple[str, str], str]:
    """Return {(section, key): value} from a php-fpm ini text."""
    section = ""
    found: dict[tuple[str, str], str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(";"):
            continue
        if stripped.startswith("["):
            section = stripped.strip("[]")
            continue
        key, _, value = stripped.partition("=")
        found[(section, key.strip())] = value.strip()
    return found


def test_lint_strict_has_no_warnings() -> None:
    import helm_python

    report = helm_python.lint(str(CHART), strict=True)

    assert report["errors"] == []
    # Severity 1 is informational (for example "icon is recommended").
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_default_render_passes_kubernetes_schemas(tmp_path: Path) -> None:
    documents = render_chart({"hpa": {"enabled": True}})
    builtin = [d for d in documents if "." not in d["apiVersion"].split("/")[0]
               or d["apiVersion"].startswith(("apps/", "autoscaling/"))]
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(builtin))

    result = subprocess.run(
        ["kubernetes-validate", "--strict", "-k", "1.30.0", str(manifest)],
        capture_output=True, text=True, check=False,
    )

    assert {d["kind"] for d in builtin} >= {"Deployment", "Service", "ConfigMap",
                                           "HorizontalPodAutoscaler"}
    assert result.returncode == 0, result.stdout + result.stderr


def test_sidecar_shares_process_namespace() -> None:
    deployment = only(render_chart(), "Deployment")
    spec = deployment["spec"]["template"]["spec"]

    assert spec["shareProcessNamespace"] is True
    assert set(containers(deployment)) == {"php", "nginx", "autoscaler"}
    assert containers(deployment)["php"]["image"] == "php:8.2-fpm"
    assert containers(deployment)["autoscaler"]["args"] == ["run"]


def test_include_matches_override_file_directory() -> None:
    documents = render_chart()
    deployment = only(documents, "Deployment")
    php = containers(deployment)["php"]
    override_file = PurePosixPath(literal_env(agent(documents))["PHPFPM_AUTOSCALER_OVERRIDE_FILE"])
    directives = fpm_directives(fpm_include_text(documents))

    include = PurePosixPath(directives[("www", "include")])
    assert include.parent == override_file.parent
    assert override_file.match(str(include))
    php_mounts = {m["mountPath"]: m for m in php["volumeMounts"]}
    agent_mounts = {m["mountPath"]: m for m in agent(documents)["volumeMounts"]}
    shared = str(override_file.parent)
    assert php_mounts[shared]["name"] == agent_mounts[shared]["name"]
    assert agent_mounts[shared].get("readOnly") is not True
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[php_mounts[shared]["name"]]
    # The include file sorts after the official image's zz-docker.conf.
    include_mount = php_mounts["/usr/local/etc/php-fpm.d/zzz-autoscaler-include.conf"]
    assert include_mount["subPath"] == "zzz-autoscaler-include.conf"
    assert "zzz-autoscaler-include.conf" > "zz-docker.conf"


def test_status_urls_use_status_listen() -> None:
    documents = render_chart()
    directives = fpm_directives(fpm_include_text(documents))
    status_urls = literal_env(agent(documents))["PHPFPM_AUTOSCALER_STATUS_URLS"]

    listen = directives[("www", "pm.status_listen")]
    path = directives[("www", "pm.status_path")]
    assert status_urls == f"tcp://{listen}{path}"
    assert listen.startswith("127.0.0.1:")
    assert directives[("global", "process_control_timeout")] == "10s"


def test_memory_limit_from_php_container() -> None:
    documents = render_chart()
    deployment = only(documents, "Deployment")
    entries = {e["name"]: e for e in agent(documents)["env"]}

    field = entries["PHPFPM_AUTOSCALER_MEMORY_LIMIT_BYTES"]["valueFrom"]["resourceFieldRef"]
    assert field["resource"] == "limits.memory"
    assert field["containerName"] == "php"
    assert field["divisor"] == "1"
    assert containers(deployment)["php"]["resources"]["limits"]["memory"]


def test_php_memory_limit_required() -> None:
    import helm_python

    with pytest.raises(helm_python.HelmRenderError, match="php.resources.limits.memory"):
        render_chart({"php": {"resources": {"limits": None}}})


@pytest.mark.parametrize(
    "values",
    [{}, PATCH_VALUES, {"agent": {key: value for key, value in FIRST_CLASS_VALUES.values()}}],
    ids=["default", "patch", "all-first-class"],
)
def test_env_names_are_settings_fields(values: dict[str, Any]) -> None:
    names = {entry["name"] for entry in agent(render_chart(values))["env"]}

    assert names
    assert unknown_env_names(names) == set()


def test_default_env_loads_as_settings() -> None:
    env = literal_env(agent(render_chart()))

    settings = load_settings(env)

    assert settings.override_file is not None
    assert str(settings.override_file) == "/autoscaler/zz-autoscaler.conf"
    assert settings.status_urls == ["tcp://127.0.0.1:9001/status"]


def test_every_settings_field_settable() -> None:
    for field_name in Settings.model_fields:
        name = env_name(field_name)
        if name in FIRST_CLASS_VALUES:
            key, value = FIRST_CLASS_VALUES[name]
            documents = render_chart({"agent": {key: value}})
            expected = str(value)
        elif name in DERIVED_VALUES:
            values, expected = DERIVED_VALUES[name]
            documents = render_chart(values)
        else:
            documents = render_chart({"agent": {"env": {name: "7"}}})
            expected = "7"

        assert literal_env(agent(documents)).get(name) == expected, name


def test_first_class_values_name_settings() -> None:
    # The test's own table must not name variables that do not exist.
    assert unknown_env_names(set(FIRST_CLASS_VALUES) | set(DERIVED_VALUES)) == set()


def test_agent_env_rejects_chart_names() -> None:
    import helm_python

    for name in ("PHPFPM_AUTOSCALER_MAX_CHILDREN", "PHPFPM_AUTOSCALER_OVERRIDE_FILE"):
        with pytest.raises(helm_python.HelmRenderError, match=f"agent.env.{name}"):
            render_chart({"agent": {"env": {name: "5"}}})


def test_agent_env_rejects_unprefixed_name() -> None:
    import helm_python

    with pytest.raises(helm_python.HelmValuesError, match="MAX_CHILDREN"):
        render_chart({"agent": {"env": {"MAX_CHILDREN": "5"}}})


def test_agent_security_context() -> None:
    context = agent(render_chart())["securityContext"]

    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 10001
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["capabilities"]["add"] == ["KILL"]


def test_php_master_runs_as_agent_user() -> None:
    # Without CAP_KILL in effect (non-root), only the same user can signal.
    deployment = only(render_chart(), "Deployment")
    php_user = containers(deployment)["php"]["securityContext"]["runAsUser"]
    agent_user = containers(deployment)["autoscaler"]["securityContext"]["runAsUser"]

    assert php_user == agent_user


def test_liveness_probe_on_healthz() -> None:
    container = agent(render_chart())

    probe = container["livenessProbe"]["httpGet"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert probe["path"] == "/healthz"
    assert ports[probe["port"]] == 9253
    assert "readinessProbe" not in container


def test_service_exposes_metrics_port() -> None:
    documents = render_chart()
    service = only(documents, "Service")
    pod_labels = only(documents, "Deployment")["spec"]["template"]["metadata"]["labels"]

    ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert ports["autoscaler"]["port"] == 9253
    assert ports["autoscaler"]["targetPort"] == "autoscaler"
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_service_monitor_scrapes_metrics() -> None:
    documents = render_chart({"serviceMonitor": {"enabled": True}})
    monitor = only(documents, "ServiceMonitor")
    service = only(documents, "Service")

    assert monitor["spec"]["endpoints"][0]["port"] == "autoscaler"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert objects_of_kind(render_chart(), "ServiceMonitor") == []


def test_prometheus_rule_equals_rules_file() -> None:
    rule = only(render_chart({"prometheusRule": {"enabled": True}}), "PrometheusRule")
    plain = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())

    assert rule["spec"]["groups"] == plain["groups"]


def test_chart_rules_copy_is_identical() -> None:
    copy = (CHART / "files" / "prometheus-rules.yml").read_bytes()

    assert copy == (DEPLOY / "prometheus" / "rules.yml").read_bytes(), (
        "cp deploy/prometheus/rules.yml charts/phpfpm-autoscaler/files/prometheus-rules.yml"
    )


def test_dashboard_configmap_holds_dashboard() -> None:
    documents = render_chart()
    dashboards = [c for c in objects_of_kind(documents, "ConfigMap")
                  if "phpfpm-autoscaler.json" in c.get("data", {})]

    assert len(dashboards) == 1
    assert dashboards[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    embedded = json.loads(dashboards[0]["data"]["phpfpm-autoscaler.json"])
    assert embedded == json.loads((CHART / "dashboards" / "phpfpm-autoscaler.json").read_text())


def test_hpa_scales_on_saturation_ratio() -> None:
    documents = render_chart({"hpa": {"enabled": True}})
    hpa = only(documents, "HorizontalPodAutoscaler")
    deployment = only(documents, "Deployment")

    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    metric = hpa["spec"]["metrics"][0]["pods"]
    assert metric["metric"]["name"] == "phpfpm_autoscaler_saturation_ratio"
    assert metric["target"] == {"type": "AverageValue", "averageValue": "900m"}
    # The HPA owns the replica count.
    assert "replicas" not in deployment["spec"]


def test_keda_scales_on_saturation_ratio() -> None:
    documents = render_chart({"keda": {"enabled": True}})
    scaled = only(documents, "ScaledObject")
    service = only(documents, "Service")

    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert "phpfpm_autoscaler_saturation_ratio" in trigger["metadata"]["query"]
    assert f'service="{service["metadata"]["name"]}"' in trigger["metadata"]["query"]
    assert 'namespace="web"' in trigger["metadata"]["query"]
    assert objects_of_kind(documents, "HorizontalPodAutoscaler") == []


def test_hpa_and_keda_together_rejected() -> None:
    import helm_python

    with pytest.raises(helm_python.HelmRenderError, match="enable only one"):
        render_chart({"hpa": {"enabled": True}, "keda": {"enabled": True}})


def test_existing_mode_renders_no_deployment() -> None:
    documents = render_chart({**EXISTING_VALUES, "hpa": {"enabled": True}})

    assert objects_of_kind(documents, "Deployment") == []
    assert only(documents, "Service")["spec"]["selector"] == {"app": "shop-web"}
    target = only(documents, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert target["name"] == "shop-web"
    assert "include = " in fpm_include_text(documents)


def test_existing_mode_requires_selector() -> None:
    import helm_python

    with pytest.raises(helm_python.HelmRenderError, match="workload.selectorLabels"):
        render_chart({"workload": {"mode": "existing", "name": "shop-web"}})


def test_patch_renders_only_the_sidecar() -> None:
    documents = render_chart(PATCH_VALUES)
    existing = render_chart(EXISTING_VALUES)

    assert len(documents) == 1
    patch = documents[0]
    assert patch["metadata"] == {"name": "shop-web"}
    spec = patch["spec"]["template"]["spec"]
    assert spec["shareProcessNamespace"] is True
    by_name = containers(patch)
    assert set(by_name) == {"php", "autoscaler"}
    assert set(by_name["php"]) == {"name", "volumeMounts"}
    # The patch mounts the ConfigMap that existing mode installs.
    config_maps = {c["metadata"]["name"] for c in objects_of_kind(existing, "ConfigMap")}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["autoscaler-fpm-include"]["configMap"]["name"] in config_maps


def test_patch_agent_equals_example_agent() -> None:
    assert agent(render_chart(PATCH_VALUES)) == agent(render_chart())


@requires_fpm
@pytest.mark.fpm
def test_fpm_accepts_rendered_include(tmp_path: Path) -> None:
    """php-fpm 8.2 reads the chart's pool file: status listener, timeout, override."""
    override_dir = tmp_path / "autoscaler"
    pool_dir = tmp_path / "php-fpm.d"
    override_dir.mkdir()
    pool_dir.mkdir()
    documents = render_chart({"fpm": {"overrideDirectory": str(override_dir)}})
    (tmp_path / "php-fpm.conf").write_text(
        f"[global]\nerror_log = {tmp_path}/error.log\ninclude = {pool_dir}/*.conf\n"
    )
    # The official image's pool files: www.conf, then zz-docker.conf.
    (pool_dir / "www.conf").write_text(
        "[www]\nuser = nobody\ngroup = nogroup\nlisten = 127.0.0.1:0\npm = dynamic\n"
        "pm.max_children = 5\npm.start_servers = 2\npm.min_spare_servers = 1\n"
        "pm.max_spare_servers = 3\n"
    )
    (pool_dir / "zz-docker.conf").write_text(
        "[global]\ndaemonize = no\n[www]\nlisten = 127.0.0.1:0\n"
    )
    (pool_dir / "zzz-autoscaler-include.conf").write_text(fpm_include_text(documents))
    command = [str(find_fpm_binary()), "-tt", "-R", "-y", str(tmp_path / "php-fpm.conf")]

    empty = subprocess.run(command, capture_output=True, text=True, check=False)
    (override_dir / "zz-autoscaler.conf").write_text("[www]\npm.max_children = 7\n")
    applied = subprocess.run(command, capture_output=True, text=True, check=False)

    assert empty.returncode == 0, empty.stderr
    assert "Nothing matches the include pattern" in empty.stderr
    assert "pm.max_children = 5" in empty.stderr
    assert applied.returncode == 0, applied.stderr
    assert "pm.max_children = 7" in applied.stderr
    assert "pm.status_listen = 127.0.0.1:9001" in applied.stderr
    assert "process_control_timeout = 10" in applied.stderr


def test_grace_period_covers_reload_verification() -> None:
    from autoscaler.settings import Settings

    verify = Settings.model_fields["reload_verify_timeout_seconds"].default
    spec = only(render_chart(), "Deployment")["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > verify

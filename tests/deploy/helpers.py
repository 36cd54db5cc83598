"""Shared helpers for the deployment tests: paths, settings names, chart rendering."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autoscaler.settings import Settings, env_name

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = REPO / "charts" / "phpfpm-autoscaler"
EXPORTED_METRICS = Path(__file__).with_name("exported_metrics.txt")

# Variables that the deployment files already set but that autoscaler/settings.py
# does not define yet (memory budget and reload backends are being added).
# A name here is accepted while Settings lacks it. Once it is a field, it is
# checked like every other one and can be removed from this set.
ANNOUNCED_SETTINGS = frozenset(
    {
        "PHPFPM_AUTOSCALER_MEMORY_LIMIT_BYTES",
        "PHPFPM_AUTOSCALER_SYSTEMD_UNIT",
        "PHPFPM_AUTOSCALER_SUPERVISOR_URL",
        "PHPFPM_AUTOSCALER_SUPERVISOR_PROGRAM",
        "PHPFPM_AUTOSCALER_RELOAD_COMMAND",
    }
)


def settings_env_names() -> set[str]:
    """Return the environment variable of every Settings field, read at test time."""
    return {env_name(name) for name in Settings.model_fields}


def unknown_env_names(names: set[str]) -> set[str]:
    """Return the names that are neither a Settings field nor announced."""
    return names - settings_env_names() - ANNOUNCED_SETTINGS


def read_env_file(path: Path) -> dict[str, str]:
    """Parse KEY=value lines the way both systemd's EnvironmentFile= and sh read them here."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, sep, value = text.partition("=")
        assert sep, f"{path.name}:{number}: expected KEY=value, got {line!r}"
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"{path.name}:{number}: bad name {key!r}"
        # Quotes and spaces mean different things to systemd and sh.
        assert not re.search(r"[\s'\"$`\\]", value), (
            f"{path.name}:{number}: value {value!r} needs quoting; keep values plain"
        )
        values[key] = value
    return values


@dataclass(frozen=True)
class MetricFamily:
    name: str
    type: str
    labels: frozenset[str]


def exported_metrics() -> dict[str, MetricFamily]:
    families: dict[str, MetricFamily] = {}
    for line in EXPORTED_METRICS.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, kind, labels = text.split()
        assert kind in {"gauge", "counter", "histogram"}, f"unknown type in {line!r}"
        assert name not in families, f"{name} listed twice"
        families[name] = MetricFamily(
            name, kind, frozenset() if labels == "-" else frozenset(labels.split(","))
        )
    return families


def sample_names(families: dict[str, MetricFamily]) -> dict[str, MetricFamily]:
    """Map every series name that may appear in a query to its family."""
    names = {}
    for family in families.values():
        names[family.name] = family
        if family.type == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                names[family.name + suffix] = family
    return names


def helm_available() -> str | None:
    """Return why Helm cannot render here, or None when it can."""
    try:
        import helm_python  # noqa: F401
    except ImportError:
        return (
            "helm_python (PyPI helm-python-sdk, Helm's Go SDK as a library) is not "
            "installed; pip install -r tests/deploy/requirements.txt"
        )
    return None


def render_chart(
    values: dict[str, Any] | None = None, *, namespace: str = "web"
) -> list[dict[str, Any]]:
    """Render the chart with Helm's engine and return every Kubernetes object."""
    import helm_python

    with helm_python.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values or {}, name="shop", namespace=namespace, is_install=True)
    documents: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                documents.append(document)
    return documents


def objects_of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [document for document in documents if document.get("kind") == kind]


def only(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = objects_of_kind(documents, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def containers(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return {container["name"]: container for container in spec["containers"]}


def env_entries(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from container.get("env", [])


def literal_env(container: dict[str, Any]) -> dict[str, str]:
    return {entry["name"]: entry["value"] for entry in env_entries(container) if "value" in entry}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())

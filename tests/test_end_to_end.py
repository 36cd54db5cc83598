"""The whole agent, as a subprocess, against a real php-fpm under real load."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.agent import AgentProcess, agent_env, drive_load
from tests.conftest import requires_fpm
from tests.fpm import FpmServer, PoolSpec

pytestmark = [requires_fpm, pytest.mark.slow]


def start_time(fpm: FpmServer, pool: str = "www") -> int:
    response = fpm.request_sync("/status", "json", pool=pool)
    return int(json.loads(response.body)["start time"])


def load_in_background(fpm: FpmServer, **kwargs: object) -> tuple[threading.Thread, list]:
    results: list = []

    def run() -> None:
        results.extend(asyncio.run(drive_load(fpm, **kwargs)))  # type: ignore[arg-type]

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results


def small_pool() -> PoolSpec:
    return PoolSpec(
        name="www", max_children=2, start_servers=1, min_spare_servers=1, max_spare_servers=1
    )


@pytest.fixture
def agents() -> list[AgentProcess]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop()


def test_auto_scales_up_under_load_and_back_down(
    fpm_factory: Callable[..., FpmServer], agents: list[AgentProcess]
) -> None:
    fpm = fpm_factory(small_pool(), process_control_timeout="10s")
    before = start_time(fpm)
    agent = AgentProcess(agent_env(fpm))
    agents.append(agent)
    agent.start()
    assert agent.wait_for(
        lambda: bool(agent.events("decision")) or bool(agent.events("controller_started")), 20
    ), agent.raw

    thread, results = load_in_background(
        fpm, concurrency=12, seconds_per_request=3, requests_per_client=2
    )
    scaled_up = agent.wait_for(
        lambda: any(e.get("to", 0) > 2 for e in agent.events("scaled")), timeout_seconds=40
    )
    thread.join(timeout=120)
    assert scaled_up, "".join(agent.raw[-40:])

    # Every request completed with its full body, through the reloads.
    assert len(results) == 24
    for status, body in results:
        assert status == 200
        assert body.endswith(b"END\n")
        assert body.count(b".") == 1000

    assert start_time(fpm) != before
    assert fpm.alive()
    raised = max(e["to"] for e in agent.events("scaled"))
    assert raised > 2
    assert "pm.max_children = " in fpm.override.read_text()
    assert fpm.test_config().returncode == 0

    # Load is over: after the short stabilization window it returns to the minimum.
    back_down = agent.wait_for(
        lambda: agent.metric_value("phpfpm_autoscaler_max_children", pool="www") == 2.0,
        timeout_seconds=90,
    )
    assert back_down, "".join(agent.raw[-30:])
    assert "pm.max_children = 2" in fpm.override.read_text()
    assert agent.metric_value("phpfpm_up", pool="www") == 1.0
    assert agent.stop() == 0
    assert any(e.get("event") == "controller_stopped" for e in agent.lines)


def test_recommend_mode_leaves_php_fpm_alone(
    fpm_factory: Callable[..., FpmServer], agents: list[AgentProcess]
) -> None:
    fpm = fpm_factory(small_pool())
    before = start_time(fpm)
    agent = AgentProcess(agent_env(fpm, mode="recommend"))
    agents.append(agent)
    agent.start()
    thread, results = load_in_background(
        fpm, concurrency=8, seconds_per_request=2, requests_per_client=1
    )
    recommended = agent.wait_for(
        lambda: any(e.get("direction") == "up" for e in agent.events("decision")),
        timeout_seconds=30,
    )
    thread.join(timeout=60)
    assert recommended, "".join(agent.raw[-30:])
    assert len(results) == 8
    assert not fpm.override.exists()
    assert start_time(fpm) == before
    assert agent.metric_value("phpfpm_autoscaler_desired_max_children", pool="www") > 2
    assert agent.stop() == 0


def test_unreachable_status_page_keeps_pool_size(
    fpm_factory: Callable[..., FpmServer], agents: list[AgentProcess]
) -> None:
    fpm = fpm_factory(small_pool())
    env = agent_env(fpm)
    env["PHPFPM_AUTOSCALER_STATUS_URLS"] = "tcp://127.0.0.1:9/status"
    agent = AgentProcess(env)
    agents.append(agent)
    agent.start()
    assert agent.wait_for(lambda: len(agent.events("poll_failed")) >= 1, 20), "".join(agent.raw)
    assert agent.wait_for(
        lambda: agent.metric_value("phpfpm_up", pool="tcp://127.0.0.1:9/status") == 0.0, 10
    )
    assert not fpm.override.exists()
    assert agent.events("poll_failed")[0]["failure"] == "connect"


def test_403_is_reported_as_configuration_error(
    fpm_factory: Callable[..., FpmServer], agents: list[AgentProcess]
) -> None:
    fpm = fpm_factory(small_pool())
    env = agent_env(fpm)
    # A path that is not pm.status_path but names an existing non-.php file
    # or folder: php-fpm's security.limit_extensions answers 403 "Access
    # denied." (measured on PHP 8.2; a missing file gives 404 instead).
    env["PHPFPM_AUTOSCALER_STATUS_URLS"] = f"tcp://127.0.0.1:{fpm.pool().port}{fpm.docroot}"
    agent = AgentProcess(env)
    agents.append(agent)
    agent.start()
    assert agent.wait_for(lambda: bool(agent.events("poll_failed")), 20), "".join(agent.raw)
    failure = agent.events("poll_failed")[0]
    assert failure["failure"] == "access"
    assert failure["level"] == "error"
    assert "403" in failure["error"] or "Access denied" in failure["error"]
    assert not fpm.override.exists()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PHPFPM_AUTOSCALER_MIN_CHILDREN", "abc", "PHPFPM_AUTOSCALER_MIN_CHILDREN='abc'"),
        ("PHPFPM_AUTOSCALER_MODE", "turbo", "PHPFPM_AUTOSCALER_MODE='turbo'"),
        ("PHPFPM_AUTOSCALER_STATUS_URLS", "ftp://x/status", "unknown scheme"),
        (
            "PHPFPM_AUTOSCALER_TARGET_UTILIZATION",
            "1.5",
            "PHPFPM_AUTOSCALER_TARGET_UTILIZATION='1.5'",
        ),
    ],
)
def test_invalid_setting_exits_2(variable: str, value: str, expected: str, tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PHPFPM_AUTOSCALER_OVERRIDE_FILE": str(tmp_path / "o.conf"),
        variable: value,
    }
    result = subprocess.run(
        [sys.executable, "-m", "autoscaler", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

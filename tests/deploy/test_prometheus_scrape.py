"""A real Prometheus scrapes the agent's /metrics and loads the alert rules."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.agent import AgentProcess, agent_env
from tests.conftest import requires_fpm
from tests.fpm import FpmServer, PoolSpec, free_port

PROMETHEUS = shutil.which("prometheus")
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"

pytestmark = [
    requires_fpm,
    pytest.mark.slow,
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus missing; bash .ci/run installs it"),
]


def query(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def wait_until(check: Callable[[], Any], timeout_seconds: float) -> Any:
    deadline = time.monotonic() + timeout_seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError:
            last = None
        if last:
            return last
        time.sleep(0.5)
    return last


def test_prometheus_scrapes_agent(fpm_factory: Callable[..., FpmServer], tmp_path: Path) -> None:
    fpm = fpm_factory(PoolSpec(max_children=3, start_servers=1, min_spare_servers=1, max_spare_servers=2))
    agent = AgentProcess(agent_env(fpm, mode="recommend"))
    agent.start()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {RULES}\n"
        "scrape_configs:\n  - job_name: phpfpm-autoscaler\n    static_configs:\n"
        f"      - targets: ['{agent.env['PHPFPM_AUTOSCALER_METRICS_ADDRESS']}']\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        up = wait_until(
            lambda: query(port, "/api/v1/query", query='phpfpm_up{pool="www"}')["data"]["result"], 60
        )
        assert up, (tmp_path / "prometheus.log").read_text()[-2000:]
        assert up[0]["value"][1] == "1"

        target = query(port, "/api/v1/targets")["data"]["activeTargets"][0]
        assert target["health"] == "up", target
        assert target["lastError"] == ""

        desired = wait_until(
            lambda: query(port, "/api/v1/query", query="phpfpm_autoscaler_desired_max_children")["data"][
                "result"
            ],
            30,
        )
        assert desired and float(desired[0]["value"][1]) >= 2

        groups = query(port, "/api/v1/rules")["data"]["groups"]
        alerts = [rule["name"] for group in groups for rule in group["rules"]]
        assert alerts, "no rule loaded"
        assert all(rule["health"] != "err" for group in groups for rule in group["rules"])
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        assert agent.stop() == 0

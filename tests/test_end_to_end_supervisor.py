"""The agent scaling a php-fpm that a real supervisord manages, reloading it through XML-RPC."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.agent import AgentProcess, agent_env
from tests.conftest import requires_fpm
from tests.fpm import FpmServer, PoolSpec
from tests.supervisor import SUPERVISORD, Supervisord
from tests.test_end_to_end import load_in_background, start_time

pytestmark = [
    requires_fpm,
    pytest.mark.slow,
    pytest.mark.skipif(SUPERVISORD is None, reason="supervisord missing; bash .ci/run installs supervisor"),
]


@pytest.fixture
def supervised(
    fpm_factory: Callable[..., FpmServer], tmp_path: Path
) -> Iterator[tuple[Supervisord, FpmServer]]:
    server = fpm_factory(
        PoolSpec(
            max_children=2, start_servers=1, min_spare_servers=1, max_spare_servers=1, status_listen=True
        ),
        start=False,
        pid_file=False,
    )
    root = tmp_path / "supervisor"
    root.mkdir()
    supervisord = Supervisord(
        root, {"php-fpm": f"command = {shlex.join(server.command())}\nautostart = true"}, password="pw-test"
    )
    try:
        asyncio.run(supervisord.wait_running("php-fpm"))
        server.wait_ready()
        yield supervisord, server
    finally:
        supervisord.stop()


def test_agent_scales_through_supervisord(supervised: tuple[Supervisord, FpmServer]) -> None:
    supervisord, fpm = supervised
    before = start_time(fpm)
    env = agent_env(
        fpm,
        reload_method="supervisor",
        supervisor_url=supervisord.socket_url,
        supervisor_program="php-fpm",
    )
    agent = AgentProcess(env)
    agent.start()
    try:
        thread, results = load_in_background(
            fpm, concurrency=10, seconds_per_request=2, requests_per_client=2
        )
        scaled = agent.wait_for(lambda: any(e.get("to", 0) > 2 for e in agent.events("scaled")), 40)
        thread.join(timeout=120)
        assert scaled, "".join(agent.raw[-30:])
        reloads = agent.events("reload_triggered")
        assert reloads and all(e["backend"] == "supervisor" for e in reloads)
        assert len(results) == 20
        assert all(status == 200 and body.endswith(b"END\n") for status, body in results)
        assert start_time(fpm) != before
        assert agent.metric_value("phpfpm_autoscaler_reloads_total", result="success") >= 1
    finally:
        assert agent.stop() == 0

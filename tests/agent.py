"""Run the agent as a real subprocess (``python -m autoscaler run``) for tests and the demo."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.fpm import FpmServer, free_port


def agent_env(fpm: FpmServer, pool: str = "www", **overrides: object) -> dict[str, str]:
    """Environment for an agent managing ``pool`` of ``fpm`` with fast test timings."""
    spec = fpm.pool(pool)
    env = {
        "PHPFPM_AUTOSCALER_STATUS_URLS": fpm.status_url(pool, via_status_listen=spec.status_listen),
        "PHPFPM_AUTOSCALER_MODE": "auto",
        "PHPFPM_AUTOSCALER_OVERRIDE_FILE": str(fpm.override),
        "PHPFPM_AUTOSCALER_FPM_CONFIG_FILE": str(fpm.conf),
        "PHPFPM_AUTOSCALER_FPM_BINARY": fpm.binary,
        "PHPFPM_AUTOSCALER_POLL_INTERVAL_SECONDS": "0.5",
        "PHPFPM_AUTOSCALER_MIN_RELOAD_INTERVAL_SECONDS": "2",
        "PHPFPM_AUTOSCALER_SCALE_UP_INTERVAL_SECONDS": "1",
        "PHPFPM_AUTOSCALER_SCALE_DOWN_STABILIZATION_SECONDS": "6",
        "PHPFPM_AUTOSCALER_DECISION_WINDOW_SECONDS": "3",
        "PHPFPM_AUTOSCALER_SLOW_POLL_SECONDS": "0.3",
        "PHPFPM_AUTOSCALER_MIN_CHILDREN": "2",
        "PHPFPM_AUTOSCALER_MAX_CHILDREN": "16",
        "PHPFPM_AUTOSCALER_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "PHPFPM_AUTOSCALER_LOG_FORMAT": "json",
        "PHPFPM_AUTOSCALER_LOG_LEVEL": "INFO",
    }
    if fpm.pid_path is not None:
        env["PHPFPM_AUTOSCALER_PID_FILE"] = str(fpm.pid_path)
    env.update({f"PHPFPM_AUTOSCALER_{key.upper()}": str(value) for key, value in overrides.items()})
    return env


class AgentProcess:
    """The agent in a child process; its JSON log lines are collected as they arrive."""

    def __init__(
        self, env: Mapping[str, str], *, echo: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("PHPFPM_AUTOSCALER_")
        }
        self.env.update(env)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.echo = echo
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def metrics_url(self) -> str:
        return "http://" + self.env["PHPFPM_AUTOSCALER_METRICS_ADDRESS"] + "/metrics"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "autoscaler", "run"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.raw.append(line)
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.lines.append(entry)
            if self.echo is not None:
                self.echo(entry)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in list(self.lines) if line.get("event") == name]

    def wait_for(self, predicate: Callable[[], bool], timeout_seconds: float) -> bool:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if predicate():
                return True
            if self.process is not None and self.process.poll() is not None:
                return predicate()
            time.sleep(0.1)
        return False

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:  # noqa: S310 - loopback
            return str(response.read().decode())

    def metric_value(self, name: str, **labels: str) -> float | None:
        wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
        prefix = f"{name}{{{wanted}}}" if labels else name
        for line in self.metrics().splitlines():
            if line.startswith(prefix + " "):
                return float(line.split()[-1])
        return None

    def stop(self, timeout_seconds: float = 20) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


async def drive_load(
    fpm: FpmServer,
    *,
    concurrency: int,
    seconds_per_request: float,
    requests_per_client: int,
    pool: str = "www",
) -> list[tuple[int, bytes]]:
    """Send requests from ``concurrency`` clients in parallel; return (status, body) of each."""

    async def client() -> list[tuple[int, bytes]]:
        results = []
        for _ in range(requests_per_client):
            response = await fpm.request(
                "/work.php", f"seconds={seconds_per_request}", pool=pool, timeout_seconds=120
            )
            results.append((response.status, response.body))
        return results

    batches = await asyncio.gather(*(client() for _ in range(concurrency)))
    return [item for batch in batches for item in batch]

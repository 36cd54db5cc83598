"""A real supervisord in the foreground, for tests that manage php-fpm through it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from autoscaler.actuator.backends import SupervisorBackend
from autoscaler.errors import ReloadError
from tests.fpm import free_port

SUPERVISORD = shutil.which("supervisord")


class Supervisord:
    """A real supervisord in the foreground, serving XML-RPC on a socket and on TCP."""

    def __init__(self, root: Path, programs: dict[str, str], *, password: str) -> None:
        assert SUPERVISORD is not None
        self.root = root
        self.socket_path = root / "supervisor.sock"
        self.port = free_port()
        self.username = "autoscaler"
        self.password = password
        self.conf = root / "supervisord.conf"
        self._write_config(programs)

        log = open(root / "supervisord.out", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            [SUPERVISORD, "-n", "-c", str(self.conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def _write_config(self, programs: dict[str, str]) -> None:
        root = self.root
        lines = [
            "[unix_http_server]",
            f"file = {self.socket_path}",
            "chmod = 0700",
            "[inet_http_server]",
            f"port = 127.0.0.1:{self.port}",
            f"username = {self.username}",
            f"password = {self.password}",
            "[supervisord]",
            f"logfile = {root / 'supervisord.log'}",
            f"pidfile = {root / 'supervisord.pid'}",
            f"childlogdir = {root}",
            "nodaemon = true",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        ]
        for name, options in programs.items():
            lines += [
                f"[program:{name}]",
                options,
                "autorestart = false",
                "startsecs = 1",
                "startretries = 0",
                "stopsignal = QUIT",
                "stopwaitsecs = 10",
                "redirect_stderr = true",
                f"stdout_logfile = {root / (name + '.log')}",
            ]
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def socket_url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/RPC2"

    async def wait_running(self, program: str, timeout_seconds: float = 15) -> int:
        """Wait until ``program`` is RUNNING and return its PID."""
        backend = SupervisorBackend(self.socket_url, program, timeout_seconds=2)
        deadline = time.monotonic() + timeout_seconds
        last = "no reply"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"supervisord exited: {self.log()}")
            try:
                info = await backend.process_info()
            except ReloadError as exc:
                last = str(exc)
            else:
                if info.state_name == "RUNNING":
                    return info.pid
                last = info.state_name
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{program} not RUNNING within {timeout_seconds} s ({last}): {self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)

    def log(self) -> str:
        parts = []
        for path in sorted(self.root.glob("*.log")) + [self.root / "supervisord.out"]:
            if path.exists():
                parts.append(f"== {path.name}\n" + path.read_text(errors="replace")[-2000:])
        return "\n".join(parts)

"""A real php-fpm in a temporary directory, in the foreground, for tests and the demo.

php-fpm runs as root with ``-R`` (CI machines run the tests as root) or as
the current user otherwise. Each pool gets a ``work.php`` script that sleeps
for ``?seconds=N``, optionally holds ``?mb=N`` of memory, and prints a body
of known length, so callers can check that a request completed in full.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from autoscaler.status.fastcgi import FastCGIResponse, fastcgi_request, request_params

WORK_PHP = r"""<?php
$seconds = isset($_GET['seconds']) ? (float)$_GET['seconds'] : 0.0;
$mb = isset($_GET['mb']) ? (int)$_GET['mb'] : 0;
$keep = [];
for ($i = 0; $i < $mb * 16; $i++) { $keep[] = str_repeat('x', 65536); }
if ($seconds > 0) { usleep((int)($seconds * 1000000)); }
header('Content-Type: text/plain');
echo "pid=" . getmypid() . "\n";
echo str_repeat('.', 1000) . "\nEND\n";
"""

FPM_CANDIDATES = ("php-fpm8.2", "php-fpm", "/usr/sbin/php-fpm8.2", "/usr/local/sbin/php-fpm")


def find_fpm_binary() -> str | None:
    for candidate in FPM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PoolSpec:
    name: str = "www"
    pm: str = "dynamic"
    max_children: int = 2
    start_servers: int | None = 1
    min_spare_servers: int | None = 1
    max_spare_servers: int | None = 2
    listen: str = "tcp"  # "tcp" or "unix"
    status_listen: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    port: int = 0
    status_port: int = 0
    socket_path: str = ""


class FpmServer:
    """Start, reload and stop one php-fpm master with the given pools."""

    def __init__(
        self,
        root: Path,
        pools: Iterable[PoolSpec],
        *,
        process_control_timeout: str = "10s",
        global_extra: dict[str, str] | None = None,
        pid_file: bool = True,
    ) -> None:
        binary = find_fpm_binary()
        if binary is None:
            raise RuntimeError("php-fpm not found; install php8.2-fpm (bash .ci/run does)")
        self.binary = binary
        self.root = root
        self.pools = list(pools)
        self.pool_dir = root / "pool.d"
        self.conf = root / "php-fpm.conf"
        self.pid_path = root / "php-fpm.pid" if pid_file else None
        self.override = self.pool_dir / "zz-autoscaler.conf"
        self.docroot = root / "www"
        self.process: subprocess.Popen[bytes] | None = None
        self.process_control_timeout = process_control_timeout
        self.global_extra = global_extra or {}
        self._write_config()

    # configuration -----------------------------------------------------

    def _write_config(self) -> None:
        self.pool_dir.mkdir(parents=True, exist_ok=True)
        self.docroot.mkdir(parents=True, exist_ok=True)
        (self.docroot / "work.php").write_text(WORK_PHP)
        lines = [
            "[global]",
            f"error_log = {self.root / 'error.log'}",
            "daemonize = no",
            f"process_control_timeout = {self.process_control_timeout}",
        ]
        if self.pid_path is not None:
            lines.append(f"pid = {self.pid_path}")
        lines += [f"{key} = {value}" for key, value in self.global_extra.items()]
        lines.append(f"include = {self.pool_dir}/*.conf")
        self.conf.write_text("\n".join(lines) + "\n")
        for pool in self.pools:
            self._write_pool(pool)

    def _write_pool(self, pool: PoolSpec) -> None:
        if pool.listen == "unix":
            pool.socket_path = str(self.root / f"{pool.name}.sock")
            listen = pool.socket_path
        else:
            pool.port = pool.port or free_port()
            listen = f"127.0.0.1:{pool.port}"
        lines = [
            f"[{pool.name}]",
            f"listen = {listen}",
            f"pm = {pool.pm}",
            f"pm.max_children = {pool.max_children}",
            "pm.status_path = /status",
            "ping.path = /ping",
            f"chdir = {self.docroot}",
            "catch_workers_output = yes",
        ]
        if os.geteuid() == 0:
            lines += ["user = root", "group = root"]
        if pool.pm == "dynamic":
            lines += [
                f"pm.start_servers = {pool.start_servers}",
                f"pm.min_spare_servers = {pool.min_spare_servers}",
                f"pm.max_spare_servers = {pool.max_spare_servers}",
            ]
        if pool.status_listen:
            pool.status_port = pool.status_port or free_port()
            lines.append(f"pm.status_listen = 127.0.0.1:{pool.status_port}")
        lines += [f"{key} = {value}" for key, value in pool.extra.items()]
        (self.pool_dir / f"{pool.name}.conf").write_text("\n".join(lines) + "\n")

    def pool(self, name: str = "www") -> PoolSpec:
        return next(pool for pool in self.pools if pool.name == name)

    def status_url(self, name: str = "www", *, via_status_listen: bool = False) -> str:
        pool = self.pool(name)
        if via_status_listen:
            return f"tcp://127.0.0.1:{pool.status_port}/status"
        if pool.listen == "unix":
            return f"unix://{pool.socket_path};/status"
        return f"tcp://127.0.0.1:{pool.port}/status"

    # process control ---------------------------------------------------

    def command(self) -> list[str]:
        args = [self.binary, "-F", "-y", str(self.conf), "-p", str(self.root)]
        if os.geteuid() == 0:
            args.insert(2, "-R")
        return args

    def test_config(self) -> subprocess.CompletedProcess[str]:
        args = [a for a in self.command() if a != "-F"] + ["-t"]
        return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)

    def start(self, timeout_seconds: float = 10.0) -> None:
        log = open(self.root / "stdout.log", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.wait_ready(timeout_seconds)

    def wait_ready(self, timeout_seconds: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"php-fpm exited with {self.process.returncode}: {self.log()}")
            if all(self._listening(pool) for pool in self.pools):
                return
            time.sleep(0.05)
        raise RuntimeError(f"php-fpm did not start within {timeout_seconds} s: {self.log()}")

    def _listening(self, pool: PoolSpec) -> bool:
        try:
            if pool.listen == "unix":
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.connect(pool.socket_path)
            else:
                with socket.create_connection(("127.0.0.1", pool.port), timeout=0.2):
                    pass
        except OSError:
            return False
        return True

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def reload(self) -> None:
        os.kill(self.pid, signal.SIGUSR2)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def log(self) -> str:
        parts = []
        for name in ("error.log", "stdout.log"):
            path = self.root / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    # requests ----------------------------------------------------------

    async def request(
        self,
        script: str = "/work.php",
        query: str = "",
        *,
        pool: str = "www",
        timeout_seconds: float = 30.0,
    ) -> FastCGIResponse:
        spec = self.pool(pool)
        params = request_params(script, query, script_filename=str(self.docroot) + script)
        if script == "/status":
            params = request_params(script, query)
        if spec.listen == "unix":
            return await fastcgi_request(
                params, socket_path=spec.socket_path, timeout_seconds=timeout_seconds
            )
        return await fastcgi_request(
            params, host="127.0.0.1", port=spec.port, timeout_seconds=timeout_seconds
        )

    def request_sync(
        self, script: str = "/work.php", query: str = "", **kwargs: object
    ) -> FastCGIResponse:
        return asyncio.run(self.request(script, query, **kwargs))  # type: ignore[arg-type]

"""Reload backends: the ways to ask php-fpm for a graceful reload.

Every backend only triggers the reload. None of them can tell whether
php-fpm came back: on SIGUSR2 the master re-executes itself, and with an
invalid configuration it exits about 30 ms later, after every trigger below
has already reported success (measured on PHP 8.2.36). The caller verifies
the result by the master being alive and the status page showing a new
``start time``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import time
import xml.parsers.expat
import xmlrpc.client
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import SecretStr

from autoscaler.actuator.process import (
    PROC_ROOT,
    MasterNotFoundError,
    MasterProcess,
    is_alive,
    select_master,
    signal_master,
    wait_for_master,
)
from autoscaler.errors import ConfigError, ReloadError
from autoscaler.settings import ENV_PREFIX, ReloadMethod, Settings

log = logging.getLogger("autoscaler.actuator.backends")

PathLike = str | os.PathLike[str]
STDERR_TAIL_LINES = 5
STDERR_TAIL_CHARS = 600


class ReloadBackend(Protocol):
    """A way to trigger php-fpm's graceful reload and to find the master it reloads."""

    name: str

    def master(self) -> MasterProcess | None:
        """Return the running master if it can be found, else None."""
        ...

    async def reload(self) -> None:
        """Trigger a graceful reload; raise ReloadError when it cannot be triggered."""
        ...


# Commands ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandResult:
    """Exit status and output of a finished command."""

    returncode: int
    stdout: bytes
    stderr: bytes
    duration_seconds: float

    def stderr_tail(self) -> str:
        """Return the last lines of stderr on one line, for an error message."""
        lines = self.stderr.decode("utf-8", errors="replace").strip().splitlines()
        tail = " | ".join(line.strip() for line in lines[-STDERR_TAIL_LINES:] if line.strip())
        if len(tail) > STDERR_TAIL_CHARS:
            tail = "..." + tail[-STDERR_TAIL_CHARS:]
        return tail or "(no output on stderr)"

    def describe_exit(self) -> str:
        if self.returncode < 0:
            return f"was killed by signal {signal.Signals(-self.returncode).name}"
        return f"exited with status {self.returncode}"


async def run_command(argv: Sequence[str], *, timeout_seconds: float) -> CommandResult:
    """Run ``argv`` without a shell and wait for it at most ``timeout_seconds``.

    The command runs in its own session, so on timeout or cancellation its
    whole process group is killed, including children a script started.
    Raises ReloadError when it cannot be started or times out.
    """
    command_line = shlex.join(argv)
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise ReloadError(
            f"cannot run {command_line}: {exc.strerror or exc}; check that {argv[0]!r} exists, is "
            "executable and is on the agent's PATH"
        ) from exc
    try:
        async with asyncio.timeout(timeout_seconds):
            stdout, stderr = await process.communicate()
    except TimeoutError as exc:
        raise ReloadError(
            f"{command_line} did not finish within {timeout_seconds:g} s and was killed; find out "
            f"why it hangs, or raise {ENV_PREFIX}RELOAD_TIMEOUT_SECONDS"
        ) from exc
    finally:
        if process.returncode is None:
            _kill_group(process.pid)
            await process.wait()
    assert process.returncode is not None
    return CommandResult(
        returncode=process.returncode,
        stdout=stdout,
        stderr=stderr,
        duration_seconds=time.monotonic() - started,
    )


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _log_triggered(backend: str, pid: int | None, started: float, **fields: Any) -> None:
    log.info(
        "reload_triggered",
        extra={
            "fields": {
                "backend": backend,
                "pid": pid,
                "duration_seconds": round(time.monotonic() - started, 6),
                **fields,
            }
        },
    )


# Backends ----------------------------------------------------------------


class _RecordedMaster:
    """The master that the last reload went to, else the one found in /proc.

    ``master`` must not block, but systemd and supervisord need I/O to report
    their main PID, so ``reload`` records the master and ``master`` only
    checks that it still runs (PID and start time). The record also covers
    the few milliseconds of a reload in which the master re-executes itself
    and /proc does not show its title.
    """

    # Whether a recorded master that is gone gives way to a search of /proc.
    # Off where the process manager's record is authoritative: once its master
    # is gone, another php-fpm on the host is not the one that was reloaded.
    _search_after_exit = False

    def __init__(
        self,
        config_file: PathLike | None,
        pid_file: PathLike | None,
        proc_root: Path,
    ) -> None:
        self._config_file = config_file
        self._pid_file = pid_file
        self._proc_root = proc_root
        self._recorded: MasterProcess | None = None
        self._has_record = False

    def master(self) -> MasterProcess | None:
        if self._recorded is not None and is_alive(self._recorded, self._proc_root):
            return self._recorded
        if self._has_record and not self._search_after_exit:
            return None
        try:
            return self._select()
        except MasterNotFoundError:
            return None

    def _select(self) -> MasterProcess:
        return select_master(
            config_file=self._config_file, pid_file=self._pid_file, proc_root=self._proc_root
        )

    def _record(self, master: MasterProcess | None) -> None:
        self._has_record = True
        self._recorded = master

    async def _record_pid(self, pid: int, backend: str, source: str) -> MasterProcess | None:
        """Record the master a process manager reported, warning when it is not php-fpm's."""
        master = await wait_for_master(pid, self._proc_root) if pid > 0 else None
        self._record(master)
        if master is None:
            log.warning(
                "reload_master_missing",
                extra={
                    "fields": {
                        "backend": backend,
                        "pid": pid,
                        "source": source,
                        "fix": "the process manager's main PID is not a running php-fpm "
                        "master; run php-fpm itself in the foreground (php-fpm -F), or "
                        "exec it from a wrapper script",
                    }
                },
            )
        return master


class SignalBackend(_RecordedMaster):
    """Send SIGUSR2 to the master found through /proc."""

    name = "signal"

    def __init__(
        self,
        config_file: PathLike | None = None,
        pid_file: PathLike | None = None,
        *,
        proc_root: Path = PROC_ROOT,
    ) -> None:
        super().__init__(config_file, pid_file, proc_root)

    async def reload(self) -> None:
        started = time.monotonic()
        master = self._select()
        signal_master(master, signal.SIGUSR2, self._proc_root)
        self._record(master)
        _log_triggered(self.name, master.pid, started, config_path=master.config_path)


class SystemdBackend(_RecordedMaster):
    """Run ``systemctl reload UNIT``, then read the unit's main PID."""

    name = "systemd"

    def __init__(
        self,
        unit: str,
        *,
        timeout_seconds: float = 10.0,
        config_file: PathLike | None = None,
        pid_file: PathLike | None = None,
        proc_root: Path = PROC_ROOT,
    ) -> None:
        super().__init__(config_file, pid_file, proc_root)
        self.unit = unit
        self._timeout_seconds = timeout_seconds

    async def reload(self) -> None:
        started = time.monotonic()
        result = await run_command(
            ["systemctl", "reload", self.unit], timeout_seconds=self._timeout_seconds
        )
        if result.returncode != 0:
            raise ReloadError(
                f"systemctl reload {self.unit} {result.describe_exit()}: "
                f"{result.stderr_tail()}; check `systemctl status {self.unit}` and "
                f"{ENV_PREFIX}SYSTEMD_UNIT"
            )
        # systemctl reload returns 0 as soon as the unit's ExecReload (usually
        # `kill -USR2 $MAINPID`) has run, also when php-fpm then fails its
        # configuration check and exits, so the caller verifies the reload.
        pid = await self._main_pid()
        master = await self._record_pid(pid, self.name, f"systemctl show {self.unit}")
        _log_triggered(self.name, master.pid if master else None, started, unit=self.unit)

    async def _main_pid(self) -> int:
        """Return the unit's MainPID; 0 when the unit runs no process or the PID is unknown."""
        argv = ["systemctl", "show", "--property=MainPID", "--value", self.unit]
        try:
            result = await run_command(argv, timeout_seconds=self._timeout_seconds)
        except ReloadError as exc:
            fields = {"unit": self.unit, "error": str(exc)}
            log.warning("main_pid_unknown", extra={"fields": fields})
            return 0
        text = result.stdout.decode("ascii", errors="replace").strip()
        if result.returncode != 0 or not text.isdigit():
            log.warning(
                "main_pid_unknown",
                extra={
                    "fields": {
                        "unit": self.unit,
                        "output": text[:80],
                        "error": result.stderr_tail(),
                    }
                },
            )
            return 0
        return int(text)


@dataclass(frozen=True, slots=True)
class SupervisorProcessInfo:
    """A supervisord program's state, from ``supervisor.getProcessInfo``."""

    name: str
    state_name: str  # RUNNING, STARTING, BACKOFF, STOPPED, EXITED, FATAL, ...
    pid: int  # 0 when the program is not running


# Fault codes from supervisor/xmlrpc.py (supervisor 4.2.5) and what the
# operator does about each.
_SUPERVISOR_FAULT_FIXES = {
    1: "add an [rpcinterface:supervisor] section to supervisord.conf; signalProcess "
    "needs supervisor 3.2 or later",
    6: "supervisord is shutting down; retry once it runs again",
    10: f"set {ENV_PREFIX}SUPERVISOR_PROGRAM to a name that `supervisorctl status` lists "
    "(GROUP:NAME for a program in a group)",
    11: "supervisord did not accept the signal name USR2; upgrade supervisor",
    30: "check supervisord's log",
    70: "start it with `supervisorctl start {program}` or check why it stopped",
}
SUPERVISOR_BAD_NAME = 10
SUPERVISOR_NOT_RUNNING = 70


class SupervisorBackend(_RecordedMaster):
    """Ask supervisord to send USR2 to its php-fpm program over XML-RPC.

    php-fpm must run in the foreground under supervisord (``php-fpm -F``), so
    the program's PID is the master's.
    """

    name = "supervisor"

    def __init__(
        self,
        url: str,
        program: str,
        username: str | None = None,
        password: SecretStr | str | None = None,
        *,
        timeout_seconds: float = 10.0,
        config_file: PathLike | None = None,
        pid_file: PathLike | None = None,
        proc_root: Path = PROC_ROOT,
    ) -> None:
        super().__init__(config_file, pid_file, proc_root)
        self.program = program
        self._timeout_seconds = timeout_seconds
        self._rpc_url, self._socket_path, self.display_url = _supervisor_endpoint(url)
        self._auth: httpx.BasicAuth | None = None
        if username is not None:
            secret = password if isinstance(password, SecretStr) else SecretStr(password or "")
            self._auth = httpx.BasicAuth(username, secret.get_secret_value())

    async def process_info(self) -> SupervisorProcessInfo:
        """Return the program's state and PID; raise ReloadError on a fault."""
        reply = await self._call("supervisor.getProcessInfo", self.program)
        try:
            group, name = str(reply["group"]), str(reply["name"])
            return SupervisorProcessInfo(
                name=name if group == name else f"{group}:{name}",
                state_name=str(reply["statename"]),
                pid=int(reply["pid"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ReloadError(
                f"supervisord at {self.display_url} sent an unexpected getProcessInfo reply "
                f"for {self.program!r}: {str(reply)[:200]}"
            ) from exc

    async def reload(self) -> None:
        started = time.monotonic()
        info = await self.process_info()
        # STARTING is signallable too, but php-fpm may not have installed its
        # signal handlers yet, and SIGUSR2's default action ends the process.
        if info.state_name != "RUNNING":
            raise ReloadError(
                f"supervisord program {self.program!r} is {info.state_name}, not RUNNING, so "
                f"it cannot be reloaded; start it with `supervisorctl start {self.program}` "
                "or check its log"
            )
        reply = await self._call("supervisor.signalProcess", self.program, "USR2")
        if reply is not True:
            raise ReloadError(
                f"supervisord at {self.display_url} sent {str(reply)[:200]} to signalProcess "
                f"for {self.program!r} instead of true; set {ENV_PREFIX}SUPERVISOR_PROGRAM "
                "to a single program, not a group"
            )
        master = await self._record_pid(info.pid, self.name, f"supervisord program {self.program}")
        _log_triggered(self.name, master.pid if master else None, started, program=self.program)

    async def _call(self, method: str, *params: Any) -> Any:
        body = xmlrpc.client.dumps(params, methodname=method).encode()
        transport = httpx.AsyncHTTPTransport(uds=self._socket_path) if self._socket_path else None
        try:
            async with httpx.AsyncClient(
                transport=transport, auth=self._auth, timeout=self._timeout_seconds
            ) as client:
                response = await client.post(
                    self._rpc_url, content=body, headers={"Content-Type": "text/xml"}
                )
        except httpx.TimeoutException as exc:
            raise ReloadError(
                f"supervisord at {self.display_url} sent no response to {method} within "
                f"{self._timeout_seconds:g} s; check that it is not stuck, or raise "
                f"{ENV_PREFIX}RELOAD_TIMEOUT_SECONDS"
            ) from exc
        except httpx.HTTPError as exc:
            raise ReloadError(
                f"cannot reach supervisord at {self.display_url}: {exc}; check that it runs "
                f"and that {ENV_PREFIX}SUPERVISOR_URL matches its [unix_http_server] file or "
                "[inet_http_server] port"
            ) from exc
        if response.status_code == 401:
            raise ReloadError(
                f"supervisord at {self.display_url} rejected the credentials (HTTP 401); set "
                f"{ENV_PREFIX}SUPERVISOR_USERNAME and {ENV_PREFIX}SUPERVISOR_PASSWORD to the "
                "username and password of its [unix_http_server] or [inet_http_server] section"
            )
        if response.status_code != 200:
            raise ReloadError(
                f"supervisord at {self.display_url} replied HTTP {response.status_code} to "
                f"{method}; set {ENV_PREFIX}SUPERVISOR_URL to its XML-RPC endpoint "
                "(path /RPC2)"
            )
        try:
            (result,), _method = xmlrpc.client.loads(response.content)
        except xmlrpc.client.Fault as fault:
            raise self._fault_error(method, fault) from fault
        except (xmlrpc.client.ResponseError, xml.parsers.expat.ExpatError, ValueError) as exc:
            raise ReloadError(
                f"the reply of {self.display_url} to {method} is not XML-RPC ({exc}); set "
                f"{ENV_PREFIX}SUPERVISOR_URL to supervisord's XML-RPC endpoint (path /RPC2)"
            ) from exc
        return result

    def _fault_error(self, method: str, fault: xmlrpc.client.Fault) -> ReloadError:
        code = int(fault.faultCode)
        fix = _SUPERVISOR_FAULT_FIXES.get(code, "check supervisord's log").format(
            program=self.program
        )
        return ReloadError(
            f"supervisord at {self.display_url} rejected {method} for {self.program!r}: "
            f"{fault.faultString} (fault {code}); {fix}"
        )


def _supervisor_endpoint(url: str) -> tuple[str, str | None, str]:
    """Split a supervisord address into the request URL, the socket path and a display form.

    The display form drops any user and password written into the URL.
    """
    if url.startswith("unix://"):
        socket_path = url[len("unix://") :]
        if not socket_path.startswith("/"):
            raise ConfigError(
                f"{ENV_PREFIX}SUPERVISOR_URL={url!r} needs an absolute socket path; set "
                "unix:///var/run/supervisor.sock"
            )
        # supervisord serves XML-RPC on /RPC2 and ignores the Host header.
        return "http://localhost/RPC2", socket_path, url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{ENV_PREFIX}SUPERVISOR_URL={url!r} is not a supervisord address; set "
            "unix:///PATH/supervisor.sock or http://127.0.0.1:9001/RPC2"
        )
    path = parts.path if parts.path not in ("", "/") else "/RPC2"
    netloc = parts.netloc.rpartition("@")[2]
    request_url = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    return request_url, None, urlunsplit((parts.scheme, netloc, path, "", ""))


class CommandBackend(_RecordedMaster):
    """Run a configured command, as an argument list without a shell."""

    name = "command"
    # The command may restart php-fpm (a new master) instead of reloading it.
    _search_after_exit = True

    def __init__(
        self,
        argv: Sequence[str],
        *,
        timeout_seconds: float = 10.0,
        config_file: PathLike | None = None,
        pid_file: PathLike | None = None,
        proc_root: Path = PROC_ROOT,
    ) -> None:
        super().__init__(config_file, pid_file, proc_root)
        if not argv:
            raise ConfigError(
                f"{ENV_PREFIX}RELOAD_COMMAND is empty; set it to the command that reloads "
                'php-fpm, e.g. ["/usr/bin/sv", "reload", "php-fpm"]'
            )
        self.argv = list(argv)
        self._timeout_seconds = timeout_seconds

    async def reload(self) -> None:
        started = time.monotonic()
        try:
            master = self.master()
        except ConfigError:
            master = None  # several masters: the caller's own master() call reports it
        result = await run_command(self.argv, timeout_seconds=self._timeout_seconds)
        if result.returncode != 0:
            raise ReloadError(
                f"reload command {shlex.join(self.argv)} {result.describe_exit()}: "
                f"{result.stderr_tail()}; run it by hand to see why, and correct "
                f"{ENV_PREFIX}RELOAD_COMMAND"
            )
        self._record(master)
        _log_triggered(self.name, master.pid if master else None, started)


def make_backend(settings: Settings) -> ReloadBackend:
    """Build the reload backend that ``PHPFPM_AUTOSCALER_RELOAD_METHOD`` selects."""
    config_file = settings.fpm_config_file
    pid_file = settings.pid_file
    timeout_seconds = settings.reload_timeout_seconds
    method = settings.reload_method
    if method is ReloadMethod.SIGNAL:
        return SignalBackend(config_file, pid_file)
    if method is ReloadMethod.SYSTEMD:
        return SystemdBackend(
            settings.systemd_unit,
            timeout_seconds=timeout_seconds,
            config_file=config_file,
            pid_file=pid_file,
        )
    if method is ReloadMethod.SUPERVISOR:
        if not settings.supervisor_program:
            raise ConfigError(
                f"{ENV_PREFIX}SUPERVISOR_PROGRAM is required with {ENV_PREFIX}RELOAD_METHOD="
                "supervisor; set it to the program name that `supervisorctl status` shows"
            )
        return SupervisorBackend(
            settings.supervisor_url,
            settings.supervisor_program,
            settings.supervisor_username,
            settings.supervisor_password,
            timeout_seconds=timeout_seconds,
            config_file=config_file,
            pid_file=pid_file,
        )
    return CommandBackend(
        settings.reload_command,
        timeout_seconds=timeout_seconds,
        config_file=config_file,
        pid_file=pid_file,
    )

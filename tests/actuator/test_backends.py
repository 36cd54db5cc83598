"""Reload backends against real php-fpm, a real supervisord and real commands.

systemd cannot run here, so the systemd tests put a `systemctl` stand-in on
PATH that does what the packaged unit's reload does: SIGUSR2 to the main PID.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from autoscaler.actuator.backends import (
    CommandBackend,
    SignalBackend,
    SupervisorBackend,
    SystemdBackend,
    make_backend,
)
from autoscaler.actuator.process import MasterNotFoundError
from autoscaler.errors import ConfigError, ReloadError
from autoscaler.settings import load_settings
from autoscaler.status.fastcgi import fastcgi_request, request_params
from tests.conftest import requires_fpm
from tests.fpm import FpmServer
from tests.supervisor import Supervisord

SUPERVISORD = shutil.which("supervisord")
requires_supervisord = pytest.mark.skipif(
    SUPERVISORD is None, reason="supervisord not installed; install the Debian package supervisor"
)


async def start_time(server: FpmServer, pool: str = "www") -> int:
    """Read the pool's `start time` (a Unix timestamp in the JSON status page)."""
    spec = server.pool(pool)
    response = await fastcgi_request(
        request_params("/status", "json"), host="127.0.0.1", port=spec.port, timeout_seconds=5
    )
    assert response.status == 200, response.body[:200]
    return int(json.loads(response.body)["start time"])


async def wait_for_next_second(timestamp: int) -> None:
    """Wait until the clock is past ``timestamp``, so a reload gets a later start time.

    php-fpm's start time has a resolution of one second.
    """
    while time.time() < timestamp + 1:
        await asyncio.sleep(0.05)


async def wait_for_new_start_time(server: FpmServer, old: int, timeout_seconds: float = 15) -> int:
    """Poll the status page until `start time` differs from ``old``; return the new value."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            current = await start_time(server)
        except AssertionError:
            current = old  # status page not served during the drain
        except OSError:
            current = old
        if current != old or time.monotonic() > deadline:
            return current
        await asyncio.sleep(0.05)


def triggered_fields(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.__dict__["fields"] for r in caplog.records if r.getMessage() == "reload_triggered"]


# Signal -------------------------------------------------------------------------


@requires_fpm
async def test_signal_reloads_real_fpm(
    fpm_factory: Callable[..., FpmServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = fpm_factory(pid_file=False)
    backend = SignalBackend(config_file=server.conf)
    master_before = backend.master()
    before = await start_time(server)
    await wait_for_next_second(before)

    with caplog.at_level(logging.INFO, logger="autoscaler.actuator.backends"):
        await backend.reload()
    # Right after the signal the master may be re-executing itself.
    master_during_reload = backend.master()
    after = await wait_for_new_start_time(server, before)

    assert after > before
    assert master_before is not None
    assert master_before.pid == server.pid
    assert master_during_reload == master_before
    assert backend.master() == master_before
    (fields,) = triggered_fields(caplog)
    assert fields["backend"] == "signal"
    assert fields["pid"] == server.pid


async def test_signal_without_master(tmp_path: Path) -> None:
    backend = SignalBackend(config_file=tmp_path / "not-running.conf")

    assert backend.master() is None
    with pytest.raises(MasterNotFoundError, match="not-running.conf"):
        await backend.reload()


# systemd ------------------------------------------------------------------------

SYSTEMCTL_STAND_IN = """#!/bin/sh
# Stand-in for systemctl: records its arguments, then acts like the unit
# php-fpm packages ship (ExecReload=kill -USR2 $MAINPID).
echo "$*" >> {args_file}
pid=$(cat {pid_file})
case "$1" in
reload)
    if [ "$2" != "{unit}" ]; then
        echo "Failed to reload $2: Unit $2 not found." >&2
        exit 5
    fi
    kill -USR2 "$pid"
    ;;
show)
    if kill -0 "$pid" 2>/dev/null; then echo "$pid"; else echo 0; fi
    ;;
*)
    echo "stand-in does not implement $1" >&2
    exit 1
    ;;
esac
"""


@pytest.fixture
def systemctl_stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Put a `systemctl` script first on PATH; return a function that writes it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def write(pid_file: Path, unit: str) -> Path:
        args_file = tmp_path / "systemctl-args.txt"
        script = bin_dir / "systemctl"
        script.write_text(
            SYSTEMCTL_STAND_IN.format(
                args_file=shlex.quote(str(args_file)),
                pid_file=shlex.quote(str(pid_file)),
                unit=unit,
            )
        )
        script.chmod(0o755)
        return args_file

    return write


@requires_fpm
async def test_systemd_reloads_real_fpm(
    fpm_factory: Callable[..., FpmServer],
    systemctl_stand_in: Callable[..., Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The `systemctl` stand-in sends SIGUSR2 to the php-fpm master from its PID file."""
    server = fpm_factory()
    assert server.pid_path is not None
    args_file = systemctl_stand_in(server.pid_path, "php-test.service")
    backend = SystemdBackend("php-test.service", timeout_seconds=5, config_file=server.conf)
    before = await start_time(server)
    await wait_for_next_second(before)

    with caplog.at_level(logging.INFO, logger="autoscaler.actuator.backends"):
        await backend.reload()
    # Right after the signal the master may be re-executing itself.
    master_during_reload = backend.master()
    after = await wait_for_new_start_time(server, before)

    assert after > before
    assert args_file.read_text().splitlines() == [
        "reload php-test.service",
        "show --property=MainPID --value php-test.service",
    ]
    master = backend.master()
    assert master is not None
    assert master.pid == server.pid
    assert master_during_reload == master
    (fields,) = triggered_fields(caplog)
    assert fields["backend"] == "systemd"
    assert fields["pid"] == server.pid
    assert fields["unit"] == "php-test.service"


@requires_fpm
async def test_systemd_success_while_fpm_dies(
    fpm_factory: Callable[..., FpmServer], systemctl_stand_in: Callable[..., Path]
) -> None:
    """`systemctl reload` exits 0 although php-fpm rejects its new configuration and exits.

    The backend returns as systemctl does; the caller's verification catches
    the dead master, and `master()` no longer returns one.
    """
    server = fpm_factory()
    assert server.pid_path is not None and server.process is not None
    systemctl_stand_in(server.pid_path, "php-test.service")
    backend = SystemdBackend("php-test.service", timeout_seconds=5, config_file=server.conf)
    assert backend.master() is not None
    server.override.write_text("[www]\npm.max_children = 0\n")

    await backend.reload()
    exit_status = server.process.wait(timeout=15)

    assert exit_status == 78  # php-fpm's exit status for an invalid configuration
    assert backend.master() is None


@requires_fpm
async def test_systemd_failure_names_unit(
    fpm_factory: Callable[..., FpmServer], systemctl_stand_in: Callable[..., Path]
) -> None:
    server = fpm_factory()
    assert server.pid_path is not None
    systemctl_stand_in(server.pid_path, "php-test.service")
    backend = SystemdBackend("php9.9-fpm.service", timeout_seconds=5)

    with pytest.raises(ReloadError) as caught:
        await backend.reload()

    message = str(caught.value)
    assert "systemctl reload php9.9-fpm.service exited with status 5" in message
    assert "Unit php9.9-fpm.service not found." in message
    assert "PHPFPM_AUTOSCALER_SYSTEMD_UNIT" in message


# supervisord --------------------------------------------------------------------


@pytest.fixture
def supervised_fpm(
    fpm_factory: Callable[..., FpmServer], tmp_path: Path
) -> Iterator[tuple[Supervisord, FpmServer]]:
    """php-fpm in the foreground under a real supervisord, plus a program left stopped."""
    if SUPERVISORD is None:
        pytest.skip("supervisord not installed; install the Debian package supervisor")
    server = fpm_factory(start=False, pid_file=False)
    root = tmp_path / "supervisor"
    root.mkdir()
    supervisord = Supervisord(
        root,
        {
            "php-fpm": f"command = {shlex.join(server.command())}\nautostart = true",
            "idle": "command = sleep 300\nautostart = false",
        },
        password="s3cret-Pa55",
    )
    try:
        yield supervisord, server
    finally:
        supervisord.stop()


@requires_fpm
@requires_supervisord
async def test_supervisor_reloads_over_socket(
    supervised_fpm: tuple[Supervisord, FpmServer], caplog: pytest.LogCaptureFixture
) -> None:
    supervisord, server = supervised_fpm
    program_pid = await supervisord.wait_running("php-fpm")
    server.wait_ready()
    backend = SupervisorBackend(supervisord.socket_url, "php-fpm", timeout_seconds=5, config_file=server.conf)
    found = backend.master()
    assert found is not None
    assert found.pid == program_pid
    before = await start_time(server)
    await wait_for_next_second(before)

    with caplog.at_level(logging.INFO, logger="autoscaler.actuator.backends"):
        await backend.reload()
    # Right after the signal the master may be re-executing itself.
    master_during_reload = backend.master()
    after = await wait_for_new_start_time(server, before)

    assert after > before
    master = backend.master()
    assert master is not None
    assert master.pid == program_pid
    assert master_during_reload == master
    assert (await backend.process_info()).state_name == "RUNNING"
    (fields,) = triggered_fields(caplog)
    assert fields["backend"] == "supervisor"
    assert fields["pid"] == program_pid
    assert fields["program"] == "php-fpm"


@requires_fpm
@requires_supervisord
async def test_supervisor_faults(supervised_fpm: tuple[Supervisord, FpmServer]) -> None:
    supervisord, _server = supervised_fpm
    await supervisord.wait_running("php-fpm")

    with pytest.raises(ReloadError) as bad_name:
        await SupervisorBackend(supervisord.socket_url, "php-fmp", timeout_seconds=5).reload()
    with pytest.raises(ReloadError) as stopped:
        await SupervisorBackend(supervisord.socket_url, "idle", timeout_seconds=5).reload()

    assert "BAD_NAME: php-fmp" in str(bad_name.value)
    assert "PHPFPM_AUTOSCALER_SUPERVISOR_PROGRAM" in str(bad_name.value)
    assert "'idle' is STOPPED, not RUNNING" in str(stopped.value)
    assert "supervisorctl start idle" in str(stopped.value)


@requires_fpm
@requires_supervisord
async def test_supervisor_reloads_over_http_with_password(
    supervised_fpm: tuple[Supervisord, FpmServer],
) -> None:
    supervisord, server = supervised_fpm
    program_pid = await supervisord.wait_running("php-fpm")
    server.wait_ready()
    backend = SupervisorBackend(
        supervisord.http_url,
        "php-fpm",
        supervisord.username,
        SecretStr(supervisord.password),
        timeout_seconds=5,
    )
    before = await start_time(server)
    await wait_for_next_second(before)

    await backend.reload()
    after = await wait_for_new_start_time(server, before)

    assert after > before
    master = backend.master()
    assert master is not None
    assert master.pid == program_pid


@requires_fpm
@requires_supervisord
async def test_supervisor_wrong_password(supervised_fpm: tuple[Supervisord, FpmServer]) -> None:
    supervisord, _server = supervised_fpm
    await supervisord.wait_running("php-fpm")
    backend = SupervisorBackend(
        supervisord.http_url, "php-fpm", supervisord.username, "wrong-guess", timeout_seconds=5
    )
    anonymous = SupervisorBackend(supervisord.http_url, "php-fpm", timeout_seconds=5)

    with pytest.raises(ReloadError) as wrong:
        await backend.reload()
    with pytest.raises(ReloadError) as missing:
        await anonymous.reload()

    for caught in (wrong, missing):
        assert "rejected the credentials (HTTP 401)" in str(caught.value)
        assert "PHPFPM_AUTOSCALER_SUPERVISOR_PASSWORD" in str(caught.value)
        assert "wrong-guess" not in str(caught.value)


async def test_supervisor_socket_missing(tmp_path: Path) -> None:
    backend = SupervisorBackend(f"unix://{tmp_path}/supervisor.sock", "php-fpm", timeout_seconds=2)

    with pytest.raises(ReloadError) as caught:
        await backend.reload()

    assert f"cannot reach supervisord at unix://{tmp_path}/supervisor.sock" in str(caught.value)
    assert "PHPFPM_AUTOSCALER_SUPERVISOR_URL" in str(caught.value)


async def test_supervisor_not_xmlrpc(tmp_path: Path) -> None:
    """A socket that serves HTTP but not XML-RPC (a minimal server written here)."""
    socket_path = tmp_path / "web.sock"
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>"

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(answer, path=str(socket_path))
    try:
        backend = SupervisorBackend(f"unix://{socket_path}", "php-fpm", timeout_seconds=2)
        with pytest.raises(ReloadError, match="is not XML-RPC"):
            await backend.reload()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("url", "expected_display"),
    [
        ("http://127.0.0.1:9001", "http://127.0.0.1:9001/RPC2"),
        ("http://127.0.0.1:9001/RPC2", "http://127.0.0.1:9001/RPC2"),
        ("http://user:pw@127.0.0.1:9001/", "http://127.0.0.1:9001/RPC2"),
        ("unix:///run/supervisor.sock", "unix:///run/supervisor.sock"),
    ],
)
def test_supervisor_url_forms(url: str, expected_display: str) -> None:
    assert SupervisorBackend(url, "php-fpm").display_url == expected_display


@pytest.mark.parametrize("url", ["unix://run/supervisor.sock", "ftp://127.0.0.1/", "127.0.0.1:9001"])
def test_supervisor_url_invalid(url: str) -> None:
    with pytest.raises(ConfigError, match="PHPFPM_AUTOSCALER_SUPERVISOR_URL"):
        SupervisorBackend(url, "php-fpm")


# Command ------------------------------------------------------------------------


def python_command(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def running(pid: int) -> bool:
    """Tell whether a PID runs (a zombie that init has not reaped yet does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


async def test_command_success(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    marker = tmp_path / "ran"
    backend = CommandBackend(
        python_command("import sys; open(sys.argv[1], 'w').write('reloaded')", str(marker)),
        timeout_seconds=10,
        config_file=tmp_path / "not-running.conf",
    )

    with caplog.at_level(logging.INFO, logger="autoscaler.actuator.backends"):
        await backend.reload()

    assert marker.read_text() == "reloaded"
    (fields,) = triggered_fields(caplog)
    assert fields["backend"] == "command"
    assert fields["pid"] is None


@requires_fpm
async def test_command_reloads_real_fpm(fpm_factory: Callable[..., FpmServer]) -> None:
    server = fpm_factory(pid_file=False)
    backend = CommandBackend(["kill", "-USR2", str(server.pid)], timeout_seconds=10, config_file=server.conf)
    before = await start_time(server)
    await wait_for_next_second(before)

    await backend.reload()
    after = await wait_for_new_start_time(server, before)

    assert after > before
    master = backend.master()
    assert master is not None
    assert master.pid == server.pid


async def test_command_failure_shows_stderr_tail() -> None:
    code = (
        "import sys\n"
        "for i in range(1, 21): print(f'line {i}', file=sys.stderr)\n"
        "print('ERROR: unknown entry pm.max_childern', file=sys.stderr)\n"
        "sys.exit(78)\n"
    )
    backend = CommandBackend(python_command(code), timeout_seconds=10)

    with pytest.raises(ReloadError) as caught:
        await backend.reload()

    message = str(caught.value)
    assert "exited with status 78" in message
    assert "ERROR: unknown entry pm.max_childern" in message
    assert "line 20" in message
    assert "line 1 " not in message
    assert "PHPFPM_AUTOSCALER_RELOAD_COMMAND" in message


async def test_command_killed_by_signal() -> None:
    backend = CommandBackend(
        python_command("import os, signal; os.kill(os.getpid(), signal.SIGTERM)"),
        timeout_seconds=10,
    )

    with pytest.raises(ReloadError, match="was killed by signal SIGTERM"):
        await backend.reload()


async def test_command_timeout_kills_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "open(sys.argv[1], 'w').write(f'{child.pid}\\n')\n"
        "time.sleep(300)\n"
    )
    backend = CommandBackend(python_command(code, str(pids)), timeout_seconds=1)

    with pytest.raises(ReloadError) as caught:
        await backend.reload()

    assert "did not finish within 1 s and was killed" in str(caught.value)
    assert "PHPFPM_AUTOSCALER_RELOAD_TIMEOUT_SECONDS" in str(caught.value)
    grandchild = int(pids.read_text())
    # SIGKILL reaches the grandchild asynchronously: wait for it to go.
    deadline = time.monotonic() + 10
    while running(grandchild) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not running(grandchild)


async def test_command_runs_without_shell(tmp_path: Path) -> None:
    out = tmp_path / "argv.json"
    arguments = [
        f"; touch {tmp_path}/semicolon",
        f"$(touch {tmp_path}/substitution)",
        f"`touch {tmp_path}/backtick`",
        "*",
        "$HOME",
    ]
    backend = CommandBackend(
        python_command(
            "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))",
            str(out),
            *arguments,
        ),
        timeout_seconds=10,
    )

    await backend.reload()

    assert json.loads(out.read_text()) == arguments
    assert not (tmp_path / "semicolon").exists()
    assert not (tmp_path / "substitution").exists()
    assert not (tmp_path / "backtick").exists()


async def test_command_not_found(tmp_path: Path) -> None:
    backend = CommandBackend([str(tmp_path / "no-such-reload")], timeout_seconds=5)

    with pytest.raises(ReloadError, match="cannot run .*no-such-reload: No such file"):
        await backend.reload()


def test_command_empty() -> None:
    with pytest.raises(ConfigError, match="PHPFPM_AUTOSCALER_RELOAD_COMMAND is empty"):
        CommandBackend([])


# Settings and make_backend ------------------------------------------------------

BASE_ENV = {"PHPFPM_AUTOSCALER_MODE": "observe"}


def settings_for(**variables: str) -> dict[str, str]:
    return {**BASE_ENV, **{f"PHPFPM_AUTOSCALER_{k.upper()}": v for k, v in variables.items()}}


def test_make_backend_signal() -> None:
    settings = load_settings(settings_for(fpm_config_file="/etc/php-fpm.conf"))

    assert isinstance(make_backend(settings), SignalBackend)


def test_make_backend_systemd() -> None:
    settings = load_settings(settings_for(reload_method="systemd", systemd_unit="php8.2-fpm.service"))

    backend = make_backend(settings)

    assert isinstance(backend, SystemdBackend)
    assert backend.unit == "php8.2-fpm.service"


def test_make_backend_supervisor() -> None:
    settings = load_settings(
        settings_for(
            reload_method="supervisor",
            supervisor_url="http://127.0.0.1:9001/RPC2",
            supervisor_program="php-fpm",
            supervisor_username="admin",
            supervisor_password="hunter2-secret",
        )
    )

    backend = make_backend(settings)

    assert isinstance(backend, SupervisorBackend)
    assert backend.program == "php-fpm"
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in json.dumps(settings.public_dict())


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('["/usr/bin/sv", "reload", "php fpm"]', ["/usr/bin/sv", "reload", "php fpm"]),
        ("/usr/bin/sv reload 'php fpm'", ["/usr/bin/sv", "reload", "php fpm"]),
        ("  kill -USR2 1  ", ["kill", "-USR2", "1"]),
    ],
    ids=["json-array", "shell-words", "surrounding-spaces"],
)
def test_reload_command_forms(raw: str, expected: list[str]) -> None:
    settings = load_settings(settings_for(reload_method="command", reload_command=raw))

    backend = make_backend(settings)

    assert isinstance(backend, CommandBackend)
    assert backend.argv == expected


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"reload_method": "command"}, "PHPFPM_AUTOSCALER_RELOAD_COMMAND is required"),
        ({"reload_method": "command", "reload_command": "  "}, "RELOAD_COMMAND is required"),
        ({"reload_command": '["sv", 1]'}, "expected a JSON array of strings"),
        ({"reload_command": '["sv", '}, "is not a JSON array"),
        ({"reload_command": "sv 'reload"}, "close the quote"),
        ({"reload_method": "supervisor"}, "PHPFPM_AUTOSCALER_SUPERVISOR_PROGRAM is required"),
        (
            {
                "reload_method": "supervisor",
                "supervisor_program": "php-fpm",
                "supervisor_url": "/run/supervisor.sock",
            },
            "PHPFPM_AUTOSCALER_SUPERVISOR_URL='/run/supervisor.sock' is not",
        ),
        ({"supervisor_username": "admin"}, "must be set together"),
        ({"reload_timeout_seconds": "0"}, "PHPFPM_AUTOSCALER_RELOAD_TIMEOUT_SECONDS='0'"),
        ({"systemd_unit": ""}, "PHPFPM_AUTOSCALER_SYSTEMD_UNIT=''"),
    ],
    ids=[
        "command-missing",
        "command-blank",
        "command-not-strings",
        "command-broken-json",
        "command-open-quote",
        "program-missing",
        "url-without-scheme",
        "username-without-password",
        "timeout-zero",
        "unit-empty",
    ],
)
def test_reload_settings_rejected(variables: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(settings_for(**variables))

    assert expected in str(caught.value)

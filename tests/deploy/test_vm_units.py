"""systemd and supervisor files for VM installs, and the php-fpm snippet they rely on."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import textwrap
from pathlib import Path, PurePosixPath

import pytest

from autoscaler.settings import ReloadMethod, load_settings
from tests.conftest import requires_fpm
from tests.deploy.helpers import DEPLOY, read_env_file, unknown_env_names
from tests.fpm import find_fpm_binary

UNIT = DEPLOY / "systemd" / "phpfpm-autoscaler.service"
ENV_FILES = [
    DEPLOY / "systemd" / "phpfpm-autoscaler.env",
    DEPLOY / "supervisor" / "phpfpm-autoscaler.env",
]
SUPERVISOR_CONF = DEPLOY / "supervisor" / "phpfpm-autoscaler.conf"
INSTALLED_ENV_FILE = "/etc/phpfpm-autoscaler/phpfpm-autoscaler.env"
AGENT_BINARY = "/opt/phpfpm-autoscaler/bin/phpfpm-autoscaler"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
# supervisord from Debian's package runs on the system Python, not on ours.
SYSTEM_PYTHON = Path("/usr/bin/python3")


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda path: path.parent.name)
def test_env_file_is_valid_settings(path: Path) -> None:
    env = read_env_file(path)

    assert unknown_env_names(set(env)) == set()
    settings = load_settings(env)
    assert settings.override_file == Path("/etc/php/8.2/fpm/pool.d/zz-autoscaler.conf")
    assert settings.status_urls == ["tcp://127.0.0.1:9001/status"]


def test_reload_methods_match_managers() -> None:
    systemd_env, supervisor_env = (read_env_file(path) for path in ENV_FILES)

    assert systemd_env["PHPFPM_AUTOSCALER_RELOAD_METHOD"] == ReloadMethod.SYSTEMD.value
    assert systemd_env["PHPFPM_AUTOSCALER_SYSTEMD_UNIT"] == "php8.2-fpm.service"
    assert supervisor_env["PHPFPM_AUTOSCALER_RELOAD_METHOD"] == ReloadMethod.SUPERVISOR.value
    assert supervisor_env["PHPFPM_AUTOSCALER_SUPERVISOR_PROGRAM"] == "php-fpm"


def test_unit_runs_agent_in_foreground() -> None:
    service = unit()["Service"]

    assert service["Type"] == "simple"
    assert service["ExecStart"] == f"{AGENT_BINARY} run"
    assert service["EnvironmentFile"] == INSTALLED_ENV_FILE
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"
    assert unit()["Unit"]["After"].split()[0] == "php8.2-fpm.service"


def test_unit_can_write_override_folder() -> None:
    service = unit()["Service"]
    override = PurePosixPath(read_env_file(ENV_FILES[0])["PHPFPM_AUTOSCALER_OVERRIDE_FILE"])

    assert service["ProtectSystem"] == "strict"
    writable = service["ReadWritePaths"].split()
    assert str(override.parent) in writable
    assert "-/var/log/php8.2-fpm.log" in writable
    assert set(service["CapabilityBoundingSet"].split()) == {"CAP_KILL", "CAP_SYS_PTRACE"}
    assert service["NoNewPrivileges"] == "yes"


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at a stand-in executable.
    stand_in = tmp_path / "phpfpm-autoscaler"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(AGENT_BINARY, str(stand_in)))
    assert SYSTEMD_ANALYZE is not None

    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(copy)],
                            capture_output=True, text=True, check=False, timeout=60)

    assert result.returncode == 0, result.stderr
    # Unknown keys are only warnings: the exit status stays 0.
    assert result.stderr.strip() == ""


@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no system Python for supervisor")
def test_supervisor_program_parses(tmp_path: Path) -> None:
    main = tmp_path / "supervisord.conf"
    main.write_text(
        f"[supervisord]\nlogfile={tmp_path}/supervisord.log\npidfile={tmp_path}/s.pid\n"
        f"[include]\nfiles={SUPERVISOR_CONF}\n"
    )
    script = textwrap.dedent(f"""
        from supervisor.options import ServerOptions
        options = ServerOptions()
        options.realize(["-c", {str(main)!r}])
        for group in options.process_group_configs:
            for process in group.process_configs:
                print(process.name, process.exitcodes, process.stopwaitsecs, process.stopsignal)
                print(process.command)
    """)

    result = subprocess.run([str(SYSTEM_PYTHON), "-c", script],
                            capture_output=True, text=True, check=False, timeout=60)

    if "No module named 'supervisor'" in result.stderr:
        pytest.skip("supervisor is not installed for the system Python; apt-get install supervisor")
    assert result.returncode == 0, result.stderr
    summary, command = result.stdout.splitlines()
    # SIGTERM is 15; exit status 2 (configuration error) is not restarted.
    assert summary == "phpfpm-autoscaler [0, 2] 45 15"
    assert f". {INSTALLED_ENV_FILE} && exec {AGENT_BINARY} run" in command


@requires_fpm
@pytest.mark.fpm
def test_debian_layout_with_base_and_override(tmp_path: Path) -> None:
    """php-fpm 8.2 -tt: base snippet then the agent's file win over www.conf."""
    pool_dir = tmp_path / "pool.d"
    pool_dir.mkdir()
    (tmp_path / "php-fpm.conf").write_text(
        f"[global]\nerror_log = {tmp_path}/error.log\ninclude = {pool_dir}/*.conf\n"
    )
    # Debian's www.conf ships a dynamic pool of 5 children.
    (pool_dir / "www.conf").write_text(
        "[www]\nuser = nobody\ngroup = nogroup\nlisten = 127.0.0.1:0\npm = dynamic\n"
        "pm.max_children = 5\npm.start_servers = 2\npm.min_spare_servers = 1\n"
        "pm.max_spare_servers = 3\n"
    )
    shutil.copy(DEPLOY / "php-fpm" / "zz-autoscaler-base.conf", pool_dir)
    override_file = read_env_file(ENV_FILES[0])["PHPFPM_AUTOSCALER_OVERRIDE_FILE"]
    override_name = PurePosixPath(override_file).name
    (pool_dir / override_name).write_text("[www]\npm.max_children = 9\n")

    result = subprocess.run(
        [str(find_fpm_binary()), "-tt", "-R", "-y", str(tmp_path / "php-fpm.conf")],
        capture_output=True, text=True, check=False, timeout=60,
    )

    assert sorted(p.name for p in pool_dir.iterdir()) == [
        "www.conf", "zz-autoscaler-base.conf", override_name]
    assert result.returncode == 0, result.stderr
    assert "pm.max_children = 9" in result.stderr
    assert "pm.status_listen = 127.0.0.1:9001" in result.stderr
    assert "pm.status_path = /status" in result.stderr
    assert "process_control_timeout = 10" in result.stderr

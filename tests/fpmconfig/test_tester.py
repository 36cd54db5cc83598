"""php-fpm -t through run_config_test, against the real binary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autoscaler.errors import ValidationError
from autoscaler.fpmconfig.reader import load_fpm_config
from autoscaler.fpmconfig.tester import find_fpm_binary, parse_failures, run_config_test
from tests.conftest import requires_fpm
from tests.fpmconfig.layouts import CASES, install_layout


def fpm_binary() -> str:
    binary = find_fpm_binary()
    assert binary is not None
    return binary


def write_main(root: Path, pool: str) -> Path:
    conf = root / "php-fpm.conf"
    conf.write_text(f"[global]\nerror_log = {root / 'error.log'}\n{pool}")
    return conf


@requires_fpm
async def test_valid_config_exits_zero(tmp_path: Path) -> None:
    root = install_layout("debian", tmp_path)
    result = await run_config_test(fpm_binary(), str(root / "php-fpm.conf"))
    assert result.ok
    assert result.exit_code == 0
    assert result.messages == []


@requires_fpm
async def test_invalid_pm_exact_message(tmp_path: Path) -> None:
    conf = write_main(tmp_path, "[www]\nlisten = 127.0.0.1:19200\npm = static\n"
                      "pm.max_children = 0\n")
    result = await run_config_test(fpm_binary(), str(conf))
    assert not result.ok
    assert result.exit_code == 78
    assert result.messages == ["[pool www] pm.max_children must be a positive value"]


@requires_fpm
async def test_parse_error_names_line(tmp_path: Path) -> None:
    conf = write_main(tmp_path, "[www]\nlisten = 127.0.0.1:19201\npm = static\n"
                      "pm.max_children = 3x\n")
    result = await run_config_test(fpm_binary(), str(conf))
    assert result.exit_code == 78
    assert result.messages == [
        f"[{conf}:6] unable to parse value for entry 'pm.max_children': "
        "is not a valid number (greater or equal than zero)"
    ]


@requires_fpm
async def test_case_pools_rejected(tmp_path: Path) -> None:
    text = (CASES / "pool_invalid_pm_values.conf").read_text()
    expected = {
        name: message
        for name, message in zip(
            load_fpm_config(CASES / "pool_invalid_pm_values.conf").pools,
            [line.removeprefix("; expect: ") for line in text.splitlines()
             if line.startswith("; expect: ")],
            strict=True,
        )
    }
    # php-fpm stops at the first invalid pool, so each pool gets its own file.
    for name, message in expected.items():
        start = text.index(f"[{name}]")
        end = text.find("\n[", start + 1)
        section = text[start:] if end < 0 else text[start:end]
        root = tmp_path / name
        root.mkdir()
        conf = write_main(root, section.replace("/run/php/", f"{root}/"))
        result = await run_config_test(fpm_binary(), str(conf))
        assert result.exit_code == 78, name
        assert result.messages == [f"[pool {name}] {message}"], name


@requires_fpm
async def test_prefix_resolves_relative_include(tmp_path: Path) -> None:
    root = install_layout("docker", tmp_path)
    prefix = root / "usr" / "local"
    conf = prefix / "etc" / "php-fpm.conf"
    result = await run_config_test(fpm_binary(), str(conf), prefix=str(prefix))
    assert result.ok, result.messages


async def test_timeout_raises(tmp_path: Path) -> None:
    # A real php-fpm -t finishes in milliseconds, so a stand-in that hangs
    # plays the stuck binary.
    stuck = tmp_path / "php-fpm"
    stuck.write_text("#!/bin/sh\nexec sleep 30\n")
    stuck.chmod(0o755)
    with pytest.raises(ValidationError, match="timed out after 0.2 s"):
        await run_config_test(str(stuck), str(tmp_path / "php-fpm.conf"), timeout_seconds=0.2)


async def test_missing_binary_raises(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="failed to run"):
        await run_config_test(str(tmp_path / "absent"), str(tmp_path / "php-fpm.conf"))


def test_parse_failures_keeps_cause() -> None:
    stderr = (
        "[04-Dec-2026 19:43:19] NOTICE: [pool www] pm.start_servers is not set.\n"
        "[04-Dec-2026 19:43:19] ALERT: [pool www] pm.max_spawn_rate must be a positive value\n"
        "[04-Dec-2026 19:43:19] ERROR: failed to post process the configuration\n"
        "[04-Dec-2026 19:43:19] ERROR: FPM initialization failed\n"
    )
    assert parse_failures(stderr) == ["[pool www] pm.max_spawn_rate must be a positive value"]


def test_parse_failures_only_generic() -> None:
    stderr = "[04-Dec-2026 19:43:19] ERROR: FPM initialization failed\n"
    assert parse_failures(stderr) == ["FPM initialization failed"]


@requires_fpm
def test_find_binary_default() -> None:
    found = find_fpm_binary()
    assert found is not None
    assert os.access(found, os.X_OK)


def test_find_binary_hint(tmp_path: Path) -> None:
    fake = tmp_path / "php-fpm-custom"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_fpm_binary(str(fake)) == str(fake)
    assert find_fpm_binary(str(tmp_path / "absent")) is None

"""The configuration reader, checked against real layouts and the real php-fpm -tt."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from autoscaler.errors import ConfigError
from autoscaler.fpmconfig.model import FpmConfig, PoolConfig
from autoscaler.fpmconfig.reader import load_fpm_config, load_with_fpm_binary
from autoscaler.fpmconfig.rules import (
    DEFAULT_MAX_SPAWN_RATE,
    DEFAULT_PROCESS_IDLE_TIMEOUT_SECONDS,
    PmSettings,
    default_start_servers,
    validate_pm,
)
from tests.conftest import requires_fpm
from tests.fpm import find_fpm_binary
from tests.fpmconfig.layouts import CASES, install_layout, install_tree


def fpm_binary() -> str:
    binary = find_fpm_binary()
    assert binary is not None
    return binary


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def main_file(root: Path, body: str) -> Path:
    """Write a main file with a writable error log ahead of ``body``."""
    return write(root / "php-fpm.conf", f"[global]\nerror_log = {root / 'error.log'}\n{body}")


def pool_text(name: str = "www", port: int = 19100, **keys: object) -> str:
    lines = [f"[{name}]", f"listen = 127.0.0.1:{port}"]
    lines += [f"{key.replace('__', '.')} = {value}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


def assert_same_as_fpm(from_files: FpmConfig, from_fpm: FpmConfig) -> None:
    """Compare what the reader resolved with what php-fpm -tt printed."""
    assert sorted(from_files.pools) == sorted(from_fpm.pools)

    ours, theirs = from_files.global_config, from_fpm.global_config
    assert ours.process_control_timeout_seconds == theirs.process_control_timeout_seconds
    assert ours.process_max == theirs.process_max
    assert ours.pid_file == theirs.pid_file
    assert ours.error_log == theirs.error_log

    for name, pool in from_files.pools.items():
        fpm_pool = from_fpm.pools[name]
        assert pool.pm == fpm_pool.pm, name
        assert pool.max_children == fpm_pool.max_children, name
        assert pool.listen == fpm_pool.listen, name
        assert pool.status_listen == fpm_pool.status_listen, name
        if pool.status_path is not None:
            assert pool.status_path == fpm_pool.status_path, name
        assert pool.memory_limit_bytes == fpm_pool.memory_limit_bytes, name
        assert (pool.max_spawn_rate or DEFAULT_MAX_SPAWN_RATE) == fpm_pool.max_spawn_rate, name
        idle_timeout = pool.process_idle_timeout_seconds
        if idle_timeout is None:
            idle_timeout = DEFAULT_PROCESS_IDLE_TIMEOUT_SECONDS
        assert idle_timeout == fpm_pool.process_idle_timeout_seconds, name
        if pool.pm == "dynamic":
            assert pool.min_spare_servers == fpm_pool.min_spare_servers, name
            assert pool.max_spare_servers == fpm_pool.max_spare_servers, name
            assert effective_start(pool) == fpm_pool.start_servers, name


def effective_start(pool: PoolConfig) -> int:
    assert pool.min_spare_servers is not None
    assert pool.max_spare_servers is not None
    if pool.start_servers is not None and pool.start_servers > 0:
        return pool.start_servers
    return default_start_servers(pool.min_spare_servers, pool.max_spare_servers)


# process_control_timeout -------------------------------------------------


def install_reload_case(root: Path, setting: str | None) -> Path:
    install_tree(CASES.parent / "fpm_layouts" / "debian" / "pool.d", root / "pool.d")
    conf = write(root / "php-fpm.conf", "")
    text = (CASES / "global_reload_timeout.conf").read_text().replace("@ROOT@", str(root))
    if setting is not None:
        text = text.replace(";process_control_timeout = 0", setting)
    conf.write_text(text)
    for pool_file in (root / "pool.d").glob("*.conf"):
        pool_file.write_text(pool_file.read_text().replace("@ROOT@", str(root)))
    (root / "run").mkdir(exist_ok=True)
    (root / "log").mkdir(exist_ok=True)
    return conf


@pytest.mark.parametrize(
    ("setting", "expected_seconds"),
    [
        pytest.param(None, 0.0, id="commented_out"),
        pytest.param("process_control_timeout = 5", 5.0, id="no_unit_seconds"),
        pytest.param("process_control_timeout = 2m", 120.0, id="minutes"),
        pytest.param("process_control_timeout = 10s", 10.0, id="seconds"),
        pytest.param("process_control_timeout = 1h", 3600.0, id="hours"),
        pytest.param("process_control_timeout = 1d", 86400.0, id="days"),
        pytest.param("process_control_timeout = 30 ; trailing comment", 30.0, id="comment"),
    ],
)
def test_reload_timeout_units(
    tmp_path: Path, setting: str | None, expected_seconds: float
) -> None:
    conf = install_reload_case(tmp_path, setting)
    config = load_fpm_config(conf)
    assert config.global_config.process_control_timeout_seconds == expected_seconds
    if setting is None:
        assert "process_control_timeout" not in config.global_config.sources
    else:
        assert config.global_config.sources["process_control_timeout"].line == 13


@requires_fpm
@pytest.mark.parametrize("setting", [None, "process_control_timeout = 5",
                                     "process_control_timeout = 2m"])
def test_reload_timeout_matches_fpm(tmp_path: Path, setting: str | None) -> None:
    conf = install_reload_case(tmp_path, setting)
    assert_same_as_fpm(load_fpm_config(conf), load_with_fpm_binary(fpm_binary(), conf))


def test_reload_timeout_unknown_unit(tmp_path: Path) -> None:
    conf = install_reload_case(tmp_path, "process_control_timeout = 10x")
    with pytest.raises(ConfigError, match=r"php-fpm\.conf:13: process_control_timeout = '10x'"):
        load_fpm_config(conf)


# invalid pm values ---------------------------------------------------------


def test_invalid_pm_pools_read(tmp_path: Path) -> None:
    config = load_fpm_config(CASES / "pool_invalid_pm_values.conf")
    assert list(config.pools) == ["cloud", "web", "panel", "tiny"]

    cloud = config.pools["cloud"]
    assert cloud.listen == "/run/php/php8.2-fpm-cloud.sock"
    assert cloud.pm == "dynamic"
    assert (cloud.max_children, cloud.start_servers) == (66, 3)
    assert (cloud.min_spare_servers, cloud.max_spare_servers) == (2, 77)
    assert cloud.sources["pm.max_spare_servers"].line == 12

    web = config.pools["web"]
    assert (web.max_children, web.start_servers) == (4, 1)
    assert (web.min_spare_servers, web.max_spare_servers) == (0, 2)

    panel = config.pools["panel"]
    assert (panel.max_children, panel.start_servers) == (50, 20)
    assert (panel.min_spare_servers, panel.max_spare_servers) == (2, 6)

    tiny = config.pools["tiny"]
    assert (tiny.max_children, tiny.start_servers) == (2, 2)
    assert (tiny.min_spare_servers, tiny.max_spare_servers) == (1, 3)


def test_invalid_pm_pools_fail_rules() -> None:
    config = load_fpm_config(CASES / "pool_invalid_pm_values.conf")
    for pool in config.pools.values():
        assert pool.max_children is not None
        settings = PmSettings(pool.pm, pool.max_children, pool.start_servers,
                              pool.min_spare_servers, pool.max_spare_servers)
        assert len(validate_pm(settings)) == 1, pool.name


# Debian package layout -------------------------------------------------------


def test_debian_layout(tmp_path: Path) -> None:
    root = install_layout("debian", tmp_path)
    config = load_fpm_config(root / "php-fpm.conf")

    assert config.files == (str(root / "php-fpm.conf"), str(root / "pool.d" / "www.conf"))
    assert config.warnings == ()
    assert config.global_config.pid_file == str(root / "run" / "php8.2-fpm.pid")
    assert config.global_config.error_log == str(root / "log" / "php8.2-fpm.log")
    assert config.global_config.process_control_timeout_seconds == 0.0
    assert list(config.pools) == ["www"]

    www = config.pools["www"]
    assert www.pm == "dynamic"
    assert www.max_children == 5
    assert (www.start_servers, www.min_spare_servers, www.max_spare_servers) == (2, 1, 3)
    assert www.listen == str(root / "run" / "php8.2-fpm.sock")
    assert www.status_path is None
    assert www.sources["pm.max_children"].path == str(root / "pool.d" / "www.conf")
    assert www.sources["pm.max_children"].line == 127


@requires_fpm
def test_debian_layout_matches_fpm(tmp_path: Path) -> None:
    root = install_layout("debian", tmp_path)
    conf = root / "php-fpm.conf"
    assert_same_as_fpm(load_fpm_config(conf), load_with_fpm_binary(fpm_binary(), conf))


@requires_fpm
@pytest.mark.skipif(not Path("/etc/php/8.2/fpm/php-fpm.conf").is_file(),
                    reason="the Debian php8.2-fpm package is not installed")
def test_installed_config_matches_fpm() -> None:
    conf = Path("/etc/php/8.2/fpm/php-fpm.conf")
    assert_same_as_fpm(load_fpm_config(conf), load_with_fpm_binary(fpm_binary(), conf))


# official Docker image layout ------------------------------------------------


def test_docker_layout(tmp_path: Path) -> None:
    root = install_layout("docker", tmp_path)
    prefix = root / "usr" / "local"
    conf = prefix / "etc" / "php-fpm.conf"
    config = load_fpm_config(conf, prefix=prefix)

    folder = prefix / "etc" / "php-fpm.d"
    assert config.files == (
        str(conf),
        str(folder / "docker.conf"),
        str(folder / "www.conf"),
        str(folder / "zz-docker.conf"),
    )
    assert config.warnings == ()
    assert config.includes[0].pattern == str(prefix / "etc/php-fpm.d/*.conf")
    assert config.global_config.error_log == "/proc/self/fd/2"

    www = config.pools["www"]
    # zz-docker.conf sorts after www.conf, so its bare port wins.
    assert www.listen == "9000"
    assert www.sources["listen"].path == str(folder / "zz-docker.conf")
    assert www.definitions["listen"][0].path == str(folder / "www.conf")
    assert www.max_children == 5
    assert www.sources["pm.max_children"].path == str(folder / "www.conf")


def test_docker_layout_guesses_prefix(tmp_path: Path) -> None:
    root = install_layout("docker", tmp_path)
    conf = root / "usr" / "local" / "etc" / "php-fpm.conf"
    config = load_fpm_config(conf)
    assert config.pools["www"].listen == "9000"
    assert len(config.warnings) == 1
    assert "resolved against " + str(root / "usr" / "local") in config.warnings[0]


@requires_fpm
def test_docker_layout_matches_fpm(tmp_path: Path) -> None:
    root = install_layout("docker", tmp_path)
    prefix = root / "usr" / "local"
    conf = prefix / "etc" / "php-fpm.conf"
    from_fpm = load_with_fpm_binary(fpm_binary(), conf, prefix=prefix)
    assert_same_as_fpm(load_fpm_config(conf, prefix=prefix), from_fpm)
    assert from_fpm.pools["www"].listen == "9000"


# override files ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [pytest.param("zz-autoscaler.conf", 12, id="sorts_last_wins"),
     pytest.param("00-autoscaler.conf", 5, id="sorts_first_loses")],
)
def test_override_file_order(tmp_path: Path, file_name: str, expected: int) -> None:
    root = install_layout("debian", tmp_path)
    write(root / "pool.d" / file_name, "[www]\npm.max_children = 12\npm.max_spare_servers = 4\n")
    conf = root / "php-fpm.conf"

    config = load_fpm_config(conf)
    assert config.pools["www"].max_children == expected
    if fpm_binary_available():
        from_fpm = load_with_fpm_binary(fpm_binary(), conf)
        assert from_fpm.pools["www"].max_children == expected
        assert_same_as_fpm(config, from_fpm)


def fpm_binary_available() -> bool:
    return find_fpm_binary() is not None


def test_section_names_case_insensitive(tmp_path: Path) -> None:
    root = install_layout("debian", tmp_path)
    write(root / "pool.d" / "zz-upper.conf", "[WWW]\npm.max_children = 7\n")
    conf = root / "php-fpm.conf"

    config = load_fpm_config(conf)
    assert list(config.pools) == ["www"]
    assert config.pools["www"].max_children == 7
    assert config.pool("WwW") is config.pools["www"]
    if fpm_binary_available():
        assert_same_as_fpm(config, load_with_fpm_binary(fpm_binary(), conf))


# includes -----------------------------------------------------------------------


def test_include_inside_pool_section(tmp_path: Path) -> None:
    # The included file starts without a section header, so its first key
    # lands in the open pool. It ends in [other], and that section stays
    # open after the include line.
    write(tmp_path / "extra" / "a.conf", "pm.max_children = 9\n[other]\n" + pool_text(
        "other", 19101, pm="static", pm__max_children=1).split("\n", 1)[1])
    conf = main_file(tmp_path, pool_text(
        "www", 19100, pm="dynamic", pm__max_children=5, pm__min_spare_servers=1,
        pm__max_spare_servers=3) + f"include = {tmp_path}/extra/*.conf\npm.max_children = 3\n")

    config = load_fpm_config(conf)
    assert config.pools["www"].max_children == 9
    assert config.pools["other"].max_children == 3
    assert config.pools["other"].sources["pm.max_children"] == config.pools[
        "other"].definitions["pm.max_children"][-1]
    if fpm_binary_available():
        assert_same_as_fpm(config, load_with_fpm_binary(fpm_binary(), conf))


def test_include_matching_nothing_warns(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    conf = main_file(tmp_path, f"include = {tmp_path}/empty/*.conf\n"
                     + pool_text(pm="static", pm__max_children=2))
    config = load_fpm_config(conf)
    assert config.warnings == (
        f"Nothing matches the include pattern '{tmp_path}/empty/*.conf' from {conf} at line 3",
    )
    assert config.includes[0].matched == ()
    if fpm_binary_available():
        from_fpm = load_with_fpm_binary(fpm_binary(), conf)
        assert any("Nothing matches the include pattern" in text for text in from_fpm.warnings)


def test_include_missing_folder_fails(tmp_path: Path) -> None:
    conf = main_file(tmp_path, f"include = {tmp_path}/absent/*.conf\n"
                     + pool_text(pm="static", pm__max_children=2))
    with pytest.raises(ConfigError, match=r"php-fpm\.conf:3: .*Unable to globalize"):
        load_fpm_config(conf)
    if fpm_binary_available():
        with pytest.raises(ConfigError, match="Unable to globalize"):
            load_with_fpm_binary(fpm_binary(), conf)


def test_include_skips_folders_and_sorts(tmp_path: Path) -> None:
    folder = tmp_path / "pool.d"
    (folder / "b-dir.conf").mkdir(parents=True)
    write(folder / "b.conf", "[www]\npm.max_children = 2\n")
    write(folder / "a.conf", pool_text(pm="static", pm__max_children=1))
    write(folder / "B.conf", "[www]\npm.max_children = 3\n")
    conf = main_file(tmp_path, f"include = {folder}/*.conf\n")

    config = load_fpm_config(conf)
    # Byte order, as glob(3) sorts in the C locale: "B" < "a" < "b".
    assert config.includes[0].matched == tuple(
        str(folder / name) for name in ("B.conf", "a.conf", "b.conf"))
    assert config.pools["www"].max_children == 2
    if fpm_binary_available():
        assert_same_as_fpm(config, load_with_fpm_binary(fpm_binary(), conf))


def test_relative_include_uses_prefix(tmp_path: Path) -> None:
    write(tmp_path / "conf.d" / "www.conf", pool_text(pm="static", pm__max_children=4))
    conf = main_file(tmp_path / "etc", "include = conf.d/*.conf\n")
    config = load_fpm_config(conf, prefix=tmp_path)
    assert config.pools["www"].max_children == 4
    if fpm_binary_available():
        assert_same_as_fpm(config, load_with_fpm_binary(fpm_binary(), conf, prefix=tmp_path))


def test_include_depth_limit(tmp_path: Path) -> None:
    for level in range(1, 6):
        write(tmp_path / f"level{level}.conf", f"include = {tmp_path}/level{level + 1}.conf\n")
    write(tmp_path / "level6.conf", pool_text(pm="static", pm__max_children=2))
    conf = main_file(tmp_path, f"include = {tmp_path}/level1.conf\n")
    with pytest.raises(ConfigError, match="more than 5 files"):
        load_fpm_config(conf)
    if fpm_binary_available():
        with pytest.raises(ConfigError, match="failed to include more than 5 files"):
            load_with_fpm_binary(fpm_binary(), conf)

    # Four levels below the main file are still fine.
    write(tmp_path / "level4.conf", pool_text(pm="static", pm__max_children=2))
    assert load_fpm_config(conf).pools["www"].max_children == 2


# values ---------------------------------------------------------------------------


def test_values_quotes_comments_pool_name(tmp_path: Path) -> None:
    conf = main_file(tmp_path, "\n".join([
        "process.max = 40",
        "[www]",
        'listen = "127.0.0.1:19102"   ; the quotes are removed',
        "pm = Static",
        "pm.max_children = 6 ; trailing comment",
        "pm.status_path = '/status-$pool'",
        "pm.status_listen = 127.0.0.1:19103",
        "pm.process_idle_timeout = 2m",
        "request_terminate_timeout = 90",
        "php_admin_value[memory_limit] = 256M",
        "",
    ]))
    config = load_fpm_config(conf)
    www = config.pools["www"]
    assert www.listen == "127.0.0.1:19102"
    assert www.pm == "static"
    assert www.max_children == 6
    assert www.status_path == "/status-www"
    assert www.status_listen == "127.0.0.1:19103"
    assert www.process_idle_timeout_seconds == 120.0
    assert www.request_terminate_timeout_seconds == 90.0
    assert www.memory_limit_bytes == 256 * 1024 * 1024
    assert config.global_config.process_max == 40
    if fpm_binary_available():
        assert_same_as_fpm(config, load_with_fpm_binary(fpm_binary(), conf))


def test_environment_values_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = main_file(tmp_path, pool_text(
        pm="static", pm__max_children="${FPM_CHILDREN}", pm__status_path='"${STATUS}"'))
    environ = {"FPM_CHILDREN": "11", "STATUS": "/fpm-status"}
    config = load_fpm_config(conf, environ=environ)
    assert config.pools["www"].max_children == 11
    assert config.pools["www"].status_path == "/fpm-status"
    assert config.warnings == ()
    if fpm_binary_available():
        # php-fpm reads the same variables from its own environment.
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        assert_same_as_fpm(config, load_with_fpm_binary(fpm_binary(), conf))


def test_environment_values_missing_warn(tmp_path: Path) -> None:
    conf = main_file(tmp_path, pool_text(
        pm="static", pm__max_children="${FPM_CHILDREN}", pm__status_path="${STATUS}"))
    config = load_fpm_config(conf, environ={})
    www = config.pools["www"]
    assert www.max_children is None
    assert www.status_path == "${STATUS}"
    assert len(config.warnings) == 2
    assert "${FPM_CHILDREN}" in config.warnings[0]
    assert "php-fpm.conf:6" in config.warnings[0]


def test_unknown_entry_warns(tmp_path: Path) -> None:
    conf = main_file(tmp_path, pool_text(pm="static", pm__max_childern=4))
    config = load_fpm_config(conf)
    assert len(config.warnings) == 1
    assert "unknown entry 'pm.max_childern'" in config.warnings[0]
    assert config.pools["www"].max_children is None


def test_pm_unset_is_empty(tmp_path: Path) -> None:
    conf = main_file(tmp_path, pool_text(pm__max_children=4))
    pool = load_fpm_config(conf).pools["www"]
    assert pool.pm == ""
    assert validate_pm(PmSettings(pool.pm, 4, None, None, None)) == [
        "the process manager is missing (static, dynamic or ondemand)"]


# errors ---------------------------------------------------------------------------


def test_missing_main_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{tmp_path}/absent.conf is missing"):
        load_fpm_config(tmp_path / "absent.conf")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param("# a comment", "'#' as a comment", id="hash_comment"),
        pytest.param("pm.max_children", "expected 'key = value'", id="no_equals"),
        pytest.param("pm.max_children = 3x", "is not a valid number", id="not_a_number"),
        pytest.param("pm = adaptive", "invalid process manager", id="unknown_pm"),
        pytest.param('listen = "127.0.0.1:9000', "unterminated", id="open_quote"),
        pytest.param("[www", "invalid section header", id="open_section"),
    ],
)
def test_unparsable_line(tmp_path: Path, line: str, message: str) -> None:
    conf = main_file(tmp_path, pool_text(pm="static", pm__max_children=2) + line + "\n")
    with pytest.raises(ConfigError, match=message) as caught:
        load_fpm_config(conf)
    assert f"{conf}:7:" in str(caught.value)
    if fpm_binary_available():
        with pytest.raises(ConfigError):
            load_with_fpm_binary(fpm_binary(), conf)


def test_unreadable_include(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files regardless of their mode")
    target = write(tmp_path / "pool.d" / "www.conf", pool_text(pm="static", pm__max_children=2))
    target.chmod(0)
    conf = main_file(tmp_path, f"include = {tmp_path}/pool.d/*.conf\n")
    with pytest.raises(ConfigError, match="failed to open configuration file"):
        load_fpm_config(conf)


def test_fpm_binary_missing(tmp_path: Path) -> None:
    conf = main_file(tmp_path, pool_text(pm="static", pm__max_children=2))
    missing = tmp_path / "no-such-php-fpm"
    assert shutil.which(str(missing)) is None
    with pytest.raises(ConfigError, match="failed to run"):
        load_with_fpm_binary(str(missing), conf)

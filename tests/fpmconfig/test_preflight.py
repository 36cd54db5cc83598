"""Preflight checks on real configuration trees, with php-fpm -tt as the judge of order."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from autoscaler.fpmconfig.preflight import Finding, preflight
from autoscaler.fpmconfig.reader import load_fpm_config, load_with_fpm_binary
from tests.fpm import find_fpm_binary
from tests.fpmconfig.layouts import install_layout

OVERRIDE_TEXT = "[www]\npm.max_children = 12\npm.max_spare_servers = 4\n"


def errors(findings: list[Finding]) -> list[Finding]:
    return [finding for finding in findings if finding.level == "error"]


def debian(root: Path) -> tuple[Path, Path | None]:
    return install_layout("debian", root) / "php-fpm.conf", None


def docker(root: Path) -> tuple[Path, Path | None]:
    prefix = install_layout("docker", root) / "usr" / "local"
    return prefix / "etc" / "php-fpm.conf", prefix


def debian_with_main_file_tail(root: Path) -> tuple[Path, Path | None]:
    conf, prefix = debian(root)
    with conf.open("a") as handle:
        handle.write("\n[www]\npm.max_children = 5\n")
    return conf, prefix


def debian_with_late_extra(root: Path) -> tuple[Path, Path | None]:
    conf, prefix = debian(root)
    (root / "pool.d" / "zzz-extra.conf").write_text("[www]\npm.max_children = 7\n")
    return conf, prefix


def debian_with_nested_include(root: Path) -> tuple[Path, Path | None]:
    conf, prefix = debian(root)
    (root / "override.d").mkdir()
    www = root / "pool.d" / "www.conf"
    # The include sits above www.conf's pm lines, so those lines win.
    www.write_text(www.read_text().replace(
        "[www]\n", f"[www]\ninclude = {root}/override.d/*.conf\n", 1))
    return conf, prefix


Layout = Callable[[Path], tuple[Path, Path | None]]

# name, layout, override path below the root, the file expected to win (None: the override)
ORDER_TABLE: list[tuple[str, Layout, str, str | None]] = [
    ("debian_sorts_last", debian, "pool.d/zz-autoscaler.conf", None),
    ("debian_sorts_first", debian, "pool.d/00-autoscaler.conf", "pool.d/www.conf"),
    ("main_file_sets_after_include", debian_with_main_file_tail,
     "pool.d/zz-autoscaler.conf", "php-fpm.conf"),
    ("later_extra_file", debian_with_late_extra, "pool.d/zz-autoscaler.conf",
     "pool.d/zzz-extra.conf"),
    ("nested_include_above_pm_lines", debian_with_nested_include,
     "override.d/autoscaler.conf", "pool.d/www.conf"),
    ("docker_sorts_last", docker, "usr/local/etc/php-fpm.d/zz-autoscaler.conf", None),
    ("docker_sorts_before_www", docker, "usr/local/etc/php-fpm.d/autoscaler.conf",
     "usr/local/etc/php-fpm.d/www.conf"),
]


@pytest.mark.parametrize(
    ("layout", "override_name", "winner"),
    [pytest.param(row[1], row[2], row[3], id=row[0]) for row in ORDER_TABLE],
)
@pytest.mark.parametrize("override_exists", [False, True], ids=["new", "existing"])
def test_override_order(
    tmp_path: Path,
    layout: Layout,
    override_name: str,
    winner: str | None,
    override_exists: bool,
) -> None:
    conf, prefix = layout(tmp_path)
    override = tmp_path / override_name
    if override_exists:
        override.write_text(OVERRIDE_TEXT)
    config = load_fpm_config(conf, prefix=prefix)

    found = errors(preflight(config, pool_names=["www"], override_file=override))

    if winner is None:
        assert found == []
    else:
        assert found, "expected an error naming the file that wins"
        assert all(finding.pool == "www" for finding in found)
        assert any(str(tmp_path / winner) in finding.message for finding in found)
        assert all("after the override file" in finding.message for finding in found)


@pytest.mark.skipif(find_fpm_binary() is None, reason="php-fpm not installed")
@pytest.mark.parametrize(
    ("layout", "override_name", "winner"),
    [pytest.param(row[1], row[2], row[3], id=row[0]) for row in ORDER_TABLE],
)
def test_override_order_matches_fpm(
    tmp_path: Path, layout: Layout, override_name: str, winner: str | None
) -> None:
    conf, prefix = layout(tmp_path)
    override = tmp_path / override_name
    override.write_text(OVERRIDE_TEXT)
    binary = find_fpm_binary()
    assert binary is not None

    effective = load_with_fpm_binary(binary, conf, prefix=prefix).pools["www"].max_children
    reported = errors(preflight(load_fpm_config(conf, prefix=prefix), pool_names=["www"],
                                override_file=override))
    # php-fpm keeps the override's 12 exactly when preflight reports no winner.
    assert (effective == 12) == (reported == [])


def test_override_not_included(tmp_path: Path) -> None:
    conf, _ = debian(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = load_fpm_config(conf)

    found = errors(preflight(config, pool_names=["www"],
                             override_file=elsewhere / "zz-autoscaler.conf"))
    assert len(found) == 1
    assert found[0].pool is None
    assert "is not included by" in found[0].message
    assert f"include = {elsewhere}/*.conf" in found[0].message


def test_override_dot_file_not_matched(tmp_path: Path) -> None:
    # glob(3) skips names that start with a dot unless the pattern does too.
    conf, _ = debian(tmp_path)
    config = load_fpm_config(conf)
    found = errors(preflight(config, pool_names=["www"],
                             override_file=tmp_path / "pool.d" / ".autoscaler.conf"))
    assert [finding.pool for finding in found] == [None]
    assert "is not included by" in found[0].message


def test_override_folder_missing(tmp_path: Path) -> None:
    # A literal include of a missing file is only a warning for php-fpm, so
    # the configuration loads, but the agent cannot write the file.
    override = tmp_path / "override.d" / "zz-autoscaler.conf"
    conf = tmp_path / "php-fpm.conf"
    conf.write_text(
        f"[global]\nerror_log = {tmp_path}/error.log\n"
        "[www]\nlisten = 127.0.0.1:19300\npm = static\npm.max_children = 3\n"
        f"include = {override}\n"
    )
    config = load_fpm_config(conf)
    found = errors(preflight(config, pool_names=["www"], override_file=override))
    assert len(found) == 1
    assert f"folder {tmp_path / 'override.d'} does not exist" in found[0].message


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any folder")
def test_override_folder_not_writable(tmp_path: Path) -> None:
    conf, _ = debian(tmp_path)
    (tmp_path / "pool.d").chmod(0o555)
    try:
        config = load_fpm_config(conf)
        found = errors(preflight(config, pool_names=["www"],
                                 override_file=tmp_path / "pool.d" / "zz-autoscaler.conf"))
    finally:
        (tmp_path / "pool.d").chmod(0o755)
    assert len(found) == 1
    assert "is not writable" in found[0].message


def test_control_timeout_zero_warns(tmp_path: Path) -> None:
    conf, _ = debian(tmp_path)
    findings = preflight(load_fpm_config(conf), pool_names=["www"],
                         override_file=tmp_path / "pool.d" / "zz-autoscaler.conf")
    warnings = [finding for finding in findings if finding.level == "warning"]
    assert len(warnings) == 1
    assert "not set, so php-fpm uses 0" in warnings[0].message
    assert "process_control_timeout = 10s" in warnings[0].message


def test_control_timeout_explicit_zero(tmp_path: Path) -> None:
    conf, _ = debian(tmp_path)
    conf.write_text(conf.read_text().replace(
        ";process_control_timeout = 0", "process_control_timeout = 0"))
    findings = preflight(load_fpm_config(conf), pool_names=["www"],
                         override_file=tmp_path / "pool.d" / "zz-autoscaler.conf")
    warnings = [finding for finding in findings if finding.level == "warning"]
    assert len(warnings) == 1
    assert f"set to 0 at {conf}:" in warnings[0].message


def test_control_timeout_set_no_warning(tmp_path: Path) -> None:
    conf, _ = debian(tmp_path)
    conf.write_text(conf.read_text().replace(
        ";process_control_timeout = 0", "process_control_timeout = 10s"))
    findings = preflight(load_fpm_config(conf), pool_names=["www"],
                         override_file=tmp_path / "pool.d" / "zz-autoscaler.conf")
    assert [finding for finding in findings if finding.level == "warning"] == []


def test_status_listen_recommended(tmp_path: Path) -> None:
    conf, _ = debian(tmp_path)
    override = tmp_path / "pool.d" / "zz-autoscaler.conf"
    findings = preflight(load_fpm_config(conf), pool_names=["www"], override_file=override)
    infos = [finding for finding in findings if finding.level == "info"]
    assert len(infos) == 1
    assert infos[0].pool == "www"
    assert "pm.status_listen = 127.0.0.1:9001" in infos[0].message

    (tmp_path / "pool.d" / "status.conf").write_text("[www]\npm.status_listen = 127.0.0.1:19302\n")
    findings = preflight(load_fpm_config(conf), pool_names=["www"], override_file=override)
    assert [finding for finding in findings if finding.level == "info"] == []


def test_unknown_pool_reported(tmp_path: Path) -> None:
    conf, _ = debian(tmp_path)
    found = errors(preflight(load_fpm_config(conf), pool_names=["WWW", "api"],
                             override_file=tmp_path / "pool.d" / "zz-autoscaler.conf"))
    assert [finding.pool for finding in found] == ["api"]
    assert "defined pools: www" in found[0].message


def test_invalid_pm_reported(tmp_path: Path) -> None:
    conf, _ = debian(tmp_path)
    # Sorts after www.conf, so its value is the effective one.
    (tmp_path / "pool.d" / "x-tiny.conf").write_text("[www]\npm.max_children = 2\n")
    found = errors(preflight(load_fpm_config(conf), pool_names=["www"],
                             override_file=tmp_path / "pool.d" / "zz-autoscaler.conf"))
    assert [finding.message for finding in found] == [
        "php-fpm rejects pool www: pm.min_spare_servers(1) and pm.max_spare_servers(3) "
        "cannot be greater than pm.max_children(2)"
    ]


def test_reader_warnings_forwarded(tmp_path: Path) -> None:
    conf, _ = debian(tmp_path)
    (tmp_path / "pool.d" / "typo.conf").write_text("[www]\npm.max_childern = 2\n")
    findings = preflight(load_fpm_config(conf), pool_names=["www"],
                         override_file=tmp_path / "pool.d" / "zz-autoscaler.conf")
    messages = [finding.message for finding in findings if finding.level == "warning"]
    assert any("unknown entry 'pm.max_childern'" in message for message in messages)

"""php-fpm's pm rules: messages, the repair, and agreement with the real php-fpm."""

from __future__ import annotations

import configparser
import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.fpmconfig.rules import (
    PmSettings,
    SpareTarget,
    default_start_servers,
    fit_pm,
    validate_pm,
)
from tests.conftest import SHARED_CASES, requires_fpm
from tests.fpmconfig.fpm_check import fpm_test, render_pool

INVALID_PM_CASES = SHARED_CASES / "pool_invalid_pm_values.conf"


def dynamic(
    max_children: int,
    start: int | None,
    min_spare: int | None,
    max_spare: int | None,
    **extra: int | None,
) -> PmSettings:
    return PmSettings("dynamic", max_children, start, min_spare, max_spare, **extra)  # type: ignore[arg-type]


# name, settings, php-fpm's message (None: accepted)
MESSAGE_TABLE = [
    ("max_children_zero", dynamic(0, 1, 1, 1), "pm.max_children must be a positive value"),
    ("max_children_negative_static", PmSettings("static", -3, None, None, None),
     "pm.max_children must be a positive value"),
    ("spares_above_max_children", dynamic(2, 1, 1, 3),
     "pm.min_spare_servers(1) and pm.max_spare_servers(3) cannot be greater than "
     "pm.max_children(2)"),
    ("start_below_min_spare", dynamic(5, 1, 2, 4),
     "pm.start_servers(1) must not be less than pm.min_spare_servers(2) and not greater than "
     "pm.max_spare_servers(4)"),
    ("start_above_max_spare", dynamic(10, 5, 2, 4),
     "pm.start_servers(5) must not be less than pm.min_spare_servers(2) and not greater than "
     "pm.max_spare_servers(4)"),
    ("max_spare_below_min_spare", dynamic(8, None, 5, 3),
     "pm.max_spare_servers(3) must not be less than pm.min_spare_servers(5)"),
    ("min_spare_zero", dynamic(4, 1, 0, 2), "pm.min_spare_servers(0) must be a positive value"),
    ("min_spare_unset", dynamic(4, None, None, 2),
     "pm.min_spare_servers(0) must be a positive value"),
    ("max_spare_unset", dynamic(4, None, 1, None),
     "pm.max_spare_servers(0) must be a positive value"),
    ("spawn_rate_zero", dynamic(5, None, 1, 3, max_spawn_rate=0),
     "pm.max_spawn_rate must be a positive value"),
    ("ondemand_idle_timeout_zero",
     PmSettings("ondemand", 4, None, None, None, process_idle_timeout_seconds=0),
     "pm.process_idle_timeout(0s) must be greater than 0s"),
    ("dynamic_valid", dynamic(5, 2, 1, 3), None),
    ("dynamic_start_unset", dynamic(5, None, 1, 3), None),
    ("dynamic_start_zero_means_unset", dynamic(5, 0, 1, 3), None),
    ("static_ignores_spares", PmSettings("static", 2, 9, 0, 7), None),
    ("ondemand_ignores_spares", PmSettings("ondemand", 2, 9, 0, 7), None),
    ("pm_case_insensitive", PmSettings("Dynamic", 5, 2, 1, 3), None),
]


@pytest.mark.parametrize(
    ("settings_", "message"),
    [pytest.param(row[1], row[2], id=row[0]) for row in MESSAGE_TABLE],
)
def test_validate_pm_message(settings_: PmSettings, message: str | None) -> None:
    expected = [] if message is None else [message]
    assert validate_pm(settings_) == expected


def test_validate_pm_unknown_manager() -> None:
    messages = validate_pm(PmSettings("adaptive", 5, None, 1, 3))
    assert messages == [
        "unable to parse value for entry 'pm': "
        "invalid process manager (static, dynamic or ondemand)"
    ]


def test_default_start_servers_formula() -> None:
    # php-src: min_spare + (max_spare - min_spare) / 2 in C integer division.
    assert default_start_servers(1, 3) == 2
    assert default_start_servers(2, 7) == 4
    assert default_start_servers(5, 5) == 5


def read_case_pools() -> dict[str, tuple[PmSettings, str]]:
    """Read the fixture's pools and the message written after each one."""
    text = INVALID_PM_CASES.read_text()
    expected = re.findall(r"^; expect: (.*)$", text, flags=re.MULTILINE)
    parser = configparser.ConfigParser(comment_prefixes=(";",))
    parser.read_string(text)
    pools: dict[str, tuple[PmSettings, str]] = {}
    for name, message in zip(parser.sections(), expected, strict=True):
        section = parser[name]
        pools[name] = (
            PmSettings(
                pm=section["pm"],
                max_children=int(section["pm.max_children"]),
                start_servers=int(section["pm.start_servers"]),
                min_spare_servers=int(section["pm.min_spare_servers"]),
                max_spare_servers=int(section["pm.max_spare_servers"]),
            ),
            message,
        )
    return pools


def test_case_pools_detected_and_repaired() -> None:
    pools = read_case_pools()
    assert sorted(pools) == ["cloud", "panel", "tiny", "web"]
    for name, (pool, message) in pools.items():
        assert validate_pm(pool) == [message], name
        repaired = fit_pm(pool, pool.max_children)
        assert validate_pm(repaired) == [], name
        assert repaired.max_children == pool.max_children, name


def test_fit_pm_case_repairs_are_minimal() -> None:
    pools = {name: pool for name, (pool, _) in read_case_pools().items()}

    cloud = fit_pm(pools["cloud"], 66)
    assert (cloud.min_spare_servers, cloud.max_spare_servers, cloud.start_servers) == (2, 66, 3)

    web = fit_pm(pools["web"], 4)
    assert (web.min_spare_servers, web.max_spare_servers, web.start_servers) == (1, 2, 1)

    panel = fit_pm(pools["panel"], 50)
    assert (panel.min_spare_servers, panel.max_spare_servers, panel.start_servers) == (2, 6, 6)

    tiny = fit_pm(pools["tiny"], 2)
    assert (tiny.min_spare_servers, tiny.max_spare_servers, tiny.start_servers) == (1, 2, 2)


def test_fit_pm_lowers_spares_with_max_children() -> None:
    current = dynamic(20, 8, 5, 12)
    fitted = fit_pm(current, 4)
    assert fitted.max_children == 4
    assert fitted.max_spare_servers == 4
    assert fitted.min_spare_servers == 4
    assert fitted.start_servers == 4
    assert validate_pm(fitted) == []


def test_fit_pm_keeps_values_that_fit() -> None:
    current = dynamic(20, 4, 2, 6, max_spawn_rate=8)
    assert fit_pm(current, 30) == replace(current, max_children=30)
    assert fit_pm(current, 6) == replace(current, max_children=6)


def test_fit_pm_keeps_unset_start() -> None:
    fitted = fit_pm(dynamic(20, None, 2, 6), 3)
    assert fitted.start_servers is None
    assert (fitted.min_spare_servers, fitted.max_spare_servers) == (2, 3)


def test_fit_pm_fills_unset_spares() -> None:
    fitted = fit_pm(dynamic(10, None, None, None), 10)
    assert (fitted.min_spare_servers, fitted.max_spare_servers) == (1, 3)
    assert validate_pm(fitted) == []


def test_fit_pm_min_spare_capped_by_max_spare() -> None:
    fitted = fit_pm(dynamic(8, None, 5, 3), 8)
    assert (fitted.min_spare_servers, fitted.max_spare_servers) == (3, 3)


def test_fit_pm_spare_target_clamped() -> None:
    fitted = fit_pm(dynamic(20, 4, 2, 6), 5, spare=SpareTarget(3, 9, 8))
    assert (fitted.min_spare_servers, fitted.max_spare_servers, fitted.start_servers) == (3, 5, 5)


def test_fit_pm_spare_target_keeps_operator_start() -> None:
    # The operator's start value still applies when the target names none,
    # so it has to fit the new spare range.
    fitted = fit_pm(dynamic(20, 10, 2, 12), 20, spare=SpareTarget(1, 4))
    assert fitted.start_servers == 4


def test_fit_pm_static_ondemand_untouched_spares() -> None:
    static = PmSettings("static", 10, 3, 0, 99)
    assert fit_pm(static, 4) == replace(static, max_children=4)
    ondemand = PmSettings("ondemand", 10, None, None, None, process_idle_timeout_seconds=0)
    fitted = fit_pm(ondemand, 4, spare=SpareTarget(1, 3))
    assert fitted.max_children == 4
    assert fitted.min_spare_servers is None
    assert fitted.process_idle_timeout_seconds == 10


def test_fit_pm_resets_invalid_spawn_rate() -> None:
    fitted = fit_pm(dynamic(10, None, 1, 3, max_spawn_rate=0), 10)
    assert fitted.max_spawn_rate == 32


def test_fit_pm_rejects_impossible_input() -> None:
    with pytest.raises(ValueError, match="max_children=0"):
        fit_pm(dynamic(10, None, 1, 3), 0)
    with pytest.raises(ValueError, match="'adaptive'"):
        fit_pm(PmSettings("adaptive", 10, None, 1, 3), 5)


optional_ints = st.one_of(st.none(), st.integers(min_value=-5, max_value=300))
pm_names = st.sampled_from(["static", "dynamic", "ondemand", "Dynamic", "STATIC"])
pm_settings = st.builds(
    PmSettings,
    pm=pm_names,
    max_children=st.integers(min_value=-5, max_value=300),
    start_servers=optional_ints,
    min_spare_servers=optional_ints,
    max_spare_servers=optional_ints,
    max_spawn_rate=optional_ints,
    process_idle_timeout_seconds=optional_ints,
)
spare_targets = st.one_of(
    st.none(),
    st.builds(
        SpareTarget,
        min_spare_servers=st.integers(min_value=-5, max_value=300),
        max_spare_servers=st.integers(min_value=-5, max_value=300),
        start_servers=optional_ints,
    ),
)


@given(current=pm_settings, max_children=st.integers(min_value=1, max_value=300),
       spare=spare_targets)
def test_fit_pm_output_always_valid(
    current: PmSettings, max_children: int, spare: SpareTarget | None
) -> None:
    fitted = fit_pm(current, max_children, spare=spare)
    assert validate_pm(fitted) == []
    assert fitted.max_children == max_children
    assert fitted.pm == current.pm


@given(current=pm_settings, max_children=st.integers(min_value=1, max_value=300))
def test_fit_pm_leaves_valid_fitting_settings(current: PmSettings, max_children: int) -> None:
    candidate = replace(current, max_children=max_children)
    if validate_pm(candidate):
        return
    assert fit_pm(current, max_children) == candidate


# Real php-fpm ------------------------------------------------------------

FIT_TABLE = [
    ("shrink_dynamic", dynamic(50, 20, 10, 30), 3, None),
    ("shrink_to_one", dynamic(50, 20, 10, 30), 1, None),
    ("grow_dynamic", dynamic(5, 2, 1, 3), 40, None),
    ("unset_spares", dynamic(5, None, None, None), 5, None),
    ("start_unset", dynamic(30, None, 5, 20), 4, None),
    ("target_above_ceiling", dynamic(10, 2, 1, 3), 6, SpareTarget(4, 12, 10)),
    ("target_inverted", dynamic(10, 2, 1, 3), 10, SpareTarget(7, 2, 1)),
    ("static_shrink", PmSettings("static", 12, 5, 0, 40), 2, None),
    ("ondemand_shrink", PmSettings("ondemand", 12, None, None, None), 2, None),
    ("min_spare_zero", dynamic(4, 1, 0, 2), 4, None),
    ("spawn_rate_zero", dynamic(4, 1, 1, 2, max_spawn_rate=0), 3, None),
]


@requires_fpm
@pytest.mark.parametrize(
    ("current", "max_children", "spare"),
    [pytest.param(row[1], row[2], row[3], id=row[0]) for row in FIT_TABLE],
)
def test_fit_pm_output_accepted_by_fpm(
    tmp_path: Path, current: PmSettings, max_children: int, spare: SpareTarget | None
) -> None:
    fitted = fit_pm(current, max_children, spare=spare)
    verdict = fpm_test(tmp_path, render_pool("www", fitted))
    assert verdict.exit_code == 0, verdict.stderr
    assert verdict.alerts == []


@requires_fpm
@pytest.mark.parametrize(
    ("settings_", "message"),
    [pytest.param(row[1], row[2], id=row[0]) for row in MESSAGE_TABLE],
)
def test_validate_pm_matches_fpm(
    tmp_path: Path, settings_: PmSettings, message: str | None
) -> None:
    verdict = fpm_test(tmp_path, render_pool("www", settings_))
    assert verdict.alerts == validate_pm(settings_), verdict.stderr
    assert verdict.exit_code == (0 if message is None else 78)


@requires_fpm
def test_case_pools_match_fpm(tmp_path: Path) -> None:
    for name, (pool, message) in read_case_pools().items():
        verdict = fpm_test(tmp_path / name, render_pool(name, pool))
        assert verdict.exit_code == 78, name
        assert verdict.alerts == [message], name
        repaired = fpm_test(tmp_path / f"{name}-fit", render_pool(name, fit_pm(pool, 2)))
        assert repaired.exit_code == 0, repaired.stderr


@requires_fpm
@settings(max_examples=60, deadline=None)
@given(current=pm_settings)
def test_validate_pm_agrees_with_fpm_on_random_pools(
    tmp_path_factory: pytest.TempPathFactory, current: PmSettings
) -> None:
    root = tmp_path_factory.mktemp("random-pool")
    verdict = fpm_test(root, render_pool("www", current))
    assert verdict.alerts == validate_pm(current), verdict.stderr
    assert (verdict.exit_code == 0) == (validate_pm(current) == [])

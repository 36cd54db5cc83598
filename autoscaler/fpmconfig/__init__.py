"""Reading php-fpm's effective configuration and applying its pm rules."""

from autoscaler.fpmconfig.model import (
    FpmConfig,
    GlobalConfig,
    IncludeDirective,
    PoolConfig,
    Source,
)
from autoscaler.fpmconfig.preflight import Finding, preflight
from autoscaler.fpmconfig.reader import load_fpm_config, load_with_fpm_binary
from autoscaler.fpmconfig.rules import PmSettings, SpareTarget, fit_pm, validate_pm
from autoscaler.fpmconfig.tester import ConfigTestResult, find_fpm_binary, run_config_test

__all__ = [
    "ConfigTestResult",
    "Finding",
    "FpmConfig",
    "GlobalConfig",
    "IncludeDirective",
    "PmSettings",
    "PoolConfig",
    "Source",
    "SpareTarget",
    "find_fpm_binary",
    "fit_pm",
    "load_fpm_config",
    "load_with_fpm_binary",
    "preflight",
    "run_config_test",
    "validate_pm",
]

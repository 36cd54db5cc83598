"""Reading php-fpm's effective configuration and applying its pm rules."""

from autoscaler.fpmconfig.model import (
    FpmConfig,
    GlobalConfig,
    IncludeDirective,
    PoolConfig,
    Source,
)
from autoscaler.fpmconfig.reader import load_fpm_config, load_with_fpm_binary
from autoscaler.fpmconfig.rules import PmSettings, SpareTarget, fit_pm, validate_pm

__all__ = [
    "FpmConfig",
    "GlobalConfig",
    "IncludeDirective",
    "PmSettings",
    "PoolConfig",
    "Source",
    "SpareTarget",
    "fit_pm",
    "load_fpm_config",
    "load_with_fpm_binary",
    "validate_pm",
]

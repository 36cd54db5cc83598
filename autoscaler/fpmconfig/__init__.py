"""Reading php-fpm's effective configuration and applying its pm rules."""

from autoscaler.fpmconfig.model import FpmConfig, GlobalConfig, PoolConfig, Source
from autoscaler.fpmconfig.rules import PmSettings, SpareTarget, fit_pm, validate_pm

__all__ = [
    "FpmConfig",
    "GlobalConfig",
    "PmSettings",
    "PoolConfig",
    "Source",
    "SpareTarget",
    "fit_pm",
    "validate_pm",
]

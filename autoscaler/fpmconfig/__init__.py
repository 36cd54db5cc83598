"""Reading php-fpm's effective configuration and applying its pm rules."""

from autoscaler.fpmconfig.model import FpmConfig, GlobalConfig, PoolConfig, Source

__all__ = ["FpmConfig", "GlobalConfig", "PoolConfig", "Source"]

"""The effective php-fpm configuration, as php-fpm itself would resolve it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Source:
    """Where a value was defined: the file and its 1-based line."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """The settings of one pool that the agent reads or manages."""

    name: str
    # The reader stores "" when no file sets pm: php-fpm 8.2 then rejects the
    # pool with "the process manager is missing".
    pm: str = "dynamic"
    max_children: int | None = None
    start_servers: int | None = None
    min_spare_servers: int | None = None
    max_spare_servers: int | None = None
    max_spawn_rate: int | None = None
    process_idle_timeout_seconds: float | None = None
    listen: str | None = None
    status_path: str | None = None
    status_listen: str | None = None
    # The longest request php-fpm lets run; 0 means no limit.
    request_terminate_timeout_seconds: float | None = None
    # PHP's memory_limit from php_admin_value or php_value; -1 means no limit,
    # None means the pool leaves it to php.ini.
    memory_limit_bytes: int | None = None
    # Key (as written in php-fpm's configuration, e.g. "pm.max_children") to
    # the place that set its effective value.
    sources: Mapping[str, Source] = field(default_factory=dict)
    # Key to every place that set it, in the order php-fpm read them; the
    # last one is the effective one.
    definitions: Mapping[str, tuple[Source, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GlobalConfig:
    """The ``[global]`` settings the agent depends on."""

    # 0 (php-fpm's default) makes a reload cut in-flight requests.
    process_control_timeout_seconds: float = 0.0
    # 0 means no limit across pools.
    process_max: int = 0
    pid_file: str | None = None
    error_log: str | None = None
    sources: Mapping[str, Source] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IncludeDirective:
    """One ``include`` line: its glob as php-fpm resolved it and the files it read."""

    pattern: str
    source: Source
    matched: tuple[str, ...] = ()
    # The slice of FpmConfig.files read because of this line, nested
    # includes included: files[first_file_index:end_file_index].
    first_file_index: int = 0
    end_file_index: int = 0


@dataclass(frozen=True, slots=True)
class FpmConfig:
    """A resolved php-fpm configuration."""

    path: str
    global_config: GlobalConfig
    pools: Mapping[str, PoolConfig]
    # Every file read, in the order php-fpm reads them.
    files: tuple[str, ...] = ()
    includes: tuple[IncludeDirective, ...] = ()
    # Non-fatal findings: include globs that match nothing, ``${VAR}`` values
    # that could not be resolved, unknown units.
    warnings: tuple[str, ...] = ()

    def pool(self, name: str) -> PoolConfig | None:
        """Return the pool by name; php-fpm compares section names case-insensitively."""
        wanted = name.lower()
        for pool_name, pool in self.pools.items():
            if pool_name.lower() == wanted:
                return pool
        return None

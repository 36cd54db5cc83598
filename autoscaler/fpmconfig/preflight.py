"""Checks of php-fpm's configuration before the agent manages it.

Each check returns findings instead of raising, so that ``check`` can list
every problem at once. An error means the agent's changes would not take
effect or would break php-fpm: the override file is not included, a file
read after it sets the same keys, its folder is not writable, a pool is
missing, or php-fpm rejects a pool's pm values. A warning means the changes
work but cost something, such as a reload that cuts requests or a value the
reader could not resolve. An info finding recommends a setting
(pm.status_listen).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from autoscaler.fpmconfig.model import FpmConfig, IncludeDirective, PoolConfig
from autoscaler.fpmconfig.rules import PmSettings, validate_pm

# Keys the override file may write (fit_pm's output); a file read after the
# override that sets one of them takes the change back.
MANAGED_KEYS = (
    "pm",
    "pm.max_children",
    "pm.start_servers",
    "pm.min_spare_servers",
    "pm.max_spare_servers",
    "pm.max_spawn_rate",
    "pm.process_idle_timeout",
)
RECOMMENDED_CONTROL_TIMEOUT = "10s"

Level = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    """One result of a preflight check; ``pool`` is None for global findings."""

    level: Level
    pool: str | None
    message: str


def preflight(
    config: FpmConfig,
    *,
    pool_names: Iterable[str],
    override_file: str | os.PathLike[str],
) -> list[Finding]:
    """Check that the agent can manage ``pool_names`` through ``override_file``.

    Reads the file system only to check the override's folder.
    """
    override = os.path.abspath(override_file)
    names = list(pool_names)
    findings: list[Finding] = []

    place = _locate_override(config, override)
    if place is None:
        findings.append(Finding(
            "error", None,
            f"the override file {override} is not included by {config.path}, so php-fpm "
            f"never reads it; add 'include = {os.path.dirname(override)}/*.conf' as the last "
            "line of the main file, or move the override into an included folder",
        ))
    findings += _check_folder(override)

    for name in names:
        pool = config.pool(name)
        if pool is None:
            findings.append(Finding(
                "error", name,
                f"pool {name} is not defined in {config.path} or its includes; "
                f"check the pool name (defined pools: {', '.join(config.pools) or 'none'})",
            ))
            continue
        if place is not None:
            findings += _check_order(config, pool, override, place)
        findings += _check_pm(pool)
        if not pool.status_listen:
            findings.append(Finding(
                "info", pool.name,
                f"pool {pool.name} has no pm.status_listen, so its own workers serve the "
                "status page: the status request counts as busy, and it waits in the queue "
                "when the pool is saturated; add 'pm.status_listen = 127.0.0.1:9001' "
                "(PHP 8.0+, a free port) and restrict access to it like the main socket",
            ))

    findings += _check_control_timeout(config)
    findings += [Finding("warning", None, warning) for warning in config.warnings]
    return findings


# the override file ------------------------------------------------------


@dataclass(frozen=True)
class _OverridePlace:
    """The override file's place in php-fpm's reading order."""

    # Index into FpmConfig.files; a file that does not exist yet gets the
    # half-index where its include's glob would put it.
    position: float
    # Every file that includes the override, directly or through other
    # files, with the line of the include that leads to it.
    include_lines: dict[str, int]


def _locate_override(config: FpmConfig, override: str) -> _OverridePlace | None:
    """Return where php-fpm reads the override, or None when no include reaches it."""
    places = []
    for include in config.includes:
        position: float
        if override in include.matched:
            window = config.files[include.first_file_index : include.end_file_index]
            position = include.first_file_index + _last_index(window, override)
        elif _glob_matches(include.pattern, override):
            position = _virtual_position(config, include, override)
        else:
            continue
        places.append(_OverridePlace(position, _include_lines(config, include)))
    # A file included twice is read twice, and the later read wins.
    return max(places, key=lambda place: place.position) if places else None


def _virtual_position(config: FpmConfig, include: IncludeDirective, override: str) -> float:
    # glob(3) sorts its matches, so the new file is read right before the
    # first match that sorts after it, or after everything this line read.
    for match in include.matched:
        if match > override:
            window = config.files[include.first_file_index : include.end_file_index]
            return include.first_file_index + window.index(match) - 0.5
    return include.end_file_index - 0.5


def _include_lines(config: FpmConfig, include: IncludeDirective) -> dict[str, int]:
    lines = {include.source.path: include.source.line}
    current = include
    while True:
        parent = _parent_include(config, current)
        if parent is None:
            return lines
        lines.setdefault(parent.source.path, parent.source.line)
        current = parent


def _parent_include(config: FpmConfig, child: IncludeDirective) -> IncludeDirective | None:
    """Return the include line that read the file containing ``child``."""
    candidates = [
        include
        for include in config.includes
        if child.source.path in include.matched
        and include.first_file_index <= child.first_file_index
        and child.end_file_index <= include.end_file_index
        and include is not child
    ]
    # The innermost one has the shortest window.
    return min(candidates, key=lambda i: i.end_file_index - i.first_file_index, default=None)


def _check_order(
    config: FpmConfig, pool: PoolConfig, override: str, place: _OverridePlace
) -> list[Finding]:
    findings: list[Finding] = []
    reported: set[tuple[str, str]] = set()
    for key in MANAGED_KEYS:
        for source in pool.definitions.get(key, ()):
            if source.path == override or (source.path, key) in reported:
                continue
            if source.path in place.include_lines:
                # The file includes the override: lines below the include
                # are applied after it.
                read_after = source.line > place.include_lines[source.path]
            else:
                read_after = _last_index(config.files, source.path) > place.position
            if not read_after:
                continue
            reported.add((source.path, key))
            findings.append(Finding(
                "error", pool.name,
                f"{source} sets {key} of pool {pool.name} and php-fpm applies it after the "
                f"override file {override}, so its value wins over the agent's; give the "
                "override a name that sorts after it (for example zz-autoscaler.conf), move "
                f"the include below that line, or remove {key} there",
            ))
    return findings


def _check_folder(override: str) -> list[Finding]:
    folder = os.path.dirname(override)
    if not os.path.isdir(folder):
        return [Finding(
            "error", None,
            f"the override file's folder {folder} does not exist; create it, because "
            "php-fpm also fails to start when the folder of an include glob is missing",
        )]
    # The override is replaced by writing a temporary file next to it and
    # renaming it, which needs write access to the folder itself.
    if not os.access(folder, os.W_OK | os.X_OK):
        return [Finding(
            "error", None,
            f"the override file's folder {folder} is not writable by the agent "
            f"(uid {os.geteuid()}); grant write access or run the agent as the folder's owner",
        )]
    return []


# pool settings --------------------------------------------------------------


def _check_pm(pool: PoolConfig) -> list[Finding]:
    if pool.max_children is None:
        return [Finding(
            "error", pool.name,
            f"pool {pool.name} has no readable pm.max_children; set it in the pool's file "
            "so the agent has a starting value",
        )]
    settings = PmSettings(
        pm=pool.pm,
        max_children=pool.max_children,
        start_servers=pool.start_servers,
        min_spare_servers=pool.min_spare_servers,
        max_spare_servers=pool.max_spare_servers,
        max_spawn_rate=pool.max_spawn_rate,
        process_idle_timeout_seconds=(
            None if pool.process_idle_timeout_seconds is None
            else int(pool.process_idle_timeout_seconds)
        ),
    )
    return [
        Finding("error", pool.name, f"php-fpm rejects pool {pool.name}: {message}")
        for message in validate_pm(settings)
    ]


def _check_control_timeout(config: FpmConfig) -> list[Finding]:
    if config.global_config.process_control_timeout_seconds > 0:
        return []
    where = config.global_config.sources.get("process_control_timeout")
    origin = f"set to 0 at {where}" if where else "not set, so php-fpm uses 0"
    return [Finding(
        "warning", None,
        f"process_control_timeout is {origin}: every reload then cuts the requests in flight "
        "about 10 ms after the signal (php-fpm 8.2, measured); set "
        f"'process_control_timeout = {RECOMMENDED_CONTROL_TIMEOUT}' (longer than the usual "
        f"slowest request) in the [global] section of {config.path}",
    )]


# helpers ----------------------------------------------------------------------


def _last_index(files: tuple[str, ...], path: str) -> int:
    return len(files) - 1 - files[::-1].index(path)


def _glob_matches(pattern: str, path: str) -> bool:
    """Match like glob(3): wildcards stay within one path component and skip dot files."""
    pattern_parts = PurePosixPath(pattern).parts
    path_parts = PurePosixPath(path).parts
    if len(pattern_parts) != len(path_parts):
        return False
    for pattern_part, path_part in zip(pattern_parts, path_parts, strict=True):
        if path_part.startswith(".") and not pattern_part.startswith("."):
            return False
        if not fnmatch.fnmatchcase(path_part, pattern_part):
            return False
    return True


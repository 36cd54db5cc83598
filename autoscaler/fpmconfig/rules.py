"""php-fpm's own process-manager rules, and a repair that always satisfies them.

The checks and their wording follow ``fpm_conf_process_all_pools()`` in
php-src ``sapi/fpm/fpm/fpm_conf.c`` (PHP 8.2), checked against the real
``php-fpm8.2 -t``. php-fpm stops at the first failed check, so
``validate_pm`` also returns at most one message: the one php-fpm would print.

This module is pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

PM_STATIC = "static"
PM_DYNAMIC = "dynamic"
PM_ONDEMAND = "ondemand"
PM_STYLES = (PM_STATIC, PM_DYNAMIC, PM_ONDEMAND)

# php-fpm's defaults when the key is absent (php-src fpm_conf.c, PHP 8.2).
DEFAULT_MAX_SPAWN_RATE = 32
DEFAULT_PROCESS_IDLE_TIMEOUT_SECONDS = 10

# Spare values used by fit_pm when the configuration leaves them unset or
# not positive: the values of the www.conf that php-fpm ships.
FALLBACK_MIN_SPARE_SERVERS = 1
FALLBACK_MAX_SPARE_SERVERS = 3


@dataclass(frozen=True)
class PmSettings:
    """The ``pm.*`` values of one pool; ``None`` means the key is not set.

    php-fpm reads an unset spare value as 0, which ``pm = dynamic`` rejects.
    An unset or non-positive ``start_servers`` makes php-fpm use
    ``min_spare + (max_spare - min_spare) // 2``.
    """

    pm: str
    max_children: int
    start_servers: int | None
    min_spare_servers: int | None
    max_spare_servers: int | None
    max_spawn_rate: int | None = None
    process_idle_timeout_seconds: int | None = None


@dataclass(frozen=True)
class SpareTarget:
    """Requested spare-server values for a dynamic pool, before clamping."""

    min_spare_servers: int
    max_spare_servers: int
    start_servers: int | None = None


def normalize_pm(pm: str) -> str | None:
    """Return the process manager in lower case, or None when php-fpm rejects it.

    php-fpm compares the value case-insensitively (``strcasecmp``).
    """
    lowered = pm.strip().lower()
    return lowered if lowered in PM_STYLES else None


def default_start_servers(min_spare_servers: int, max_spare_servers: int) -> int:
    """Return the start_servers php-fpm uses when the key is unset."""
    return min_spare_servers + (max_spare_servers - min_spare_servers) // 2


def validate_pm(settings: PmSettings) -> list[str]:
    """Check the settings as php-fpm 8.2 does; return its message for the first failure.

    The list is empty when php-fpm accepts the settings. Messages carry
    php-fpm's wording without its ``[pool NAME]`` prefix.
    """
    if not settings.pm.strip():
        return ["the process manager is missing (static, dynamic or ondemand)"]
    pm = normalize_pm(settings.pm)
    if pm is None:
        return [
            "unable to parse value for entry 'pm': "
            "invalid process manager (static, dynamic or ondemand)"
        ]

    if settings.max_children < 1:
        return ["pm.max_children must be a positive value"]

    if pm == PM_DYNAMIC:
        return _validate_dynamic(settings)
    if pm == PM_ONDEMAND:
        idle_timeout = _or_default(
            settings.process_idle_timeout_seconds, DEFAULT_PROCESS_IDLE_TIMEOUT_SECONDS
        )
        if idle_timeout < 1:
            return [f"pm.process_idle_timeout({idle_timeout}s) must be greater than 0s"]
    return []


def _validate_dynamic(settings: PmSettings) -> list[str]:
    max_children = settings.max_children
    min_spare = _or_zero(settings.min_spare_servers)
    max_spare = _or_zero(settings.max_spare_servers)
    start = _or_zero(settings.start_servers)

    if min_spare <= 0:
        return [f"pm.min_spare_servers({min_spare}) must be a positive value"]
    if max_spare <= 0:
        return [f"pm.max_spare_servers({max_spare}) must be a positive value"]
    if min_spare > max_children or max_spare > max_children:
        return [
            f"pm.min_spare_servers({min_spare}) and pm.max_spare_servers({max_spare}) "
            f"cannot be greater than pm.max_children({max_children})"
        ]
    if max_spare < min_spare:
        return [
            f"pm.max_spare_servers({max_spare}) must not be less than "
            f"pm.min_spare_servers({min_spare})"
        ]
    # A start value of 0 or less means "unset": php-fpm then computes one
    # between the spare values, which always passes.
    if start > 0 and not min_spare <= start <= max_spare:
        return [
            f"pm.start_servers({start}) must not be less than pm.min_spare_servers({min_spare}) "
            f"and not greater than pm.max_spare_servers({max_spare})"
        ]
    spawn_rate = _or_default(settings.max_spawn_rate, DEFAULT_MAX_SPAWN_RATE)
    if spawn_rate < 1:
        return ["pm.max_spawn_rate must be a positive value"]
    return []


def fit_pm(
    current: PmSettings, max_children: int, *, spare: SpareTarget | None = None
) -> PmSettings:
    """Return settings for ``max_children`` that php-fpm accepts.

    For ``pm = dynamic`` the spare values follow max_children down in the same
    edit, so that 1 <= min_spare <= max_spare <= max_children and
    min_spare <= start <= max_spare. Values that already fit stay as the
    operator wrote them; ``spare``, when given, replaces them and is clamped
    the same way. A start_servers that is unset (or 0 or less) stays as it
    is, because php-fpm's own default always lies between the spare values.
    ``static`` and ``ondemand`` ignore spare values, so only max_children
    changes there (and an ondemand idle timeout below 1 s is reset to
    php-fpm's default).

    Raises ValueError when max_children is below 1 or the process manager is
    not one php-fpm supports, because no spare values can repair either.
    """
    if max_children < 1:
        raise ValueError(
            f"max_children={max_children} is below 1; php-fpm needs at least one child"
        )
    pm = normalize_pm(current.pm)
    if pm is None:
        raise ValueError(
            f"pm={current.pm!r} is not a process manager php-fpm supports; "
            "use static, dynamic or ondemand"
        )

    fitted = replace(current, max_children=max_children)
    if pm == PM_ONDEMAND:
        idle_timeout = current.process_idle_timeout_seconds
        if idle_timeout is not None and idle_timeout < 1:
            fitted = replace(
                fitted, process_idle_timeout_seconds=DEFAULT_PROCESS_IDLE_TIMEOUT_SECONDS
            )
        return fitted
    if pm == PM_STATIC:
        return fitted

    requested_min = current.min_spare_servers
    requested_max = current.max_spare_servers
    requested_start = current.start_servers
    if spare is not None:
        requested_min = spare.min_spare_servers
        requested_max = spare.max_spare_servers
        # Without a requested start, the operator's start value still applies
        # in php-fpm (an override file only replaces the keys it writes), so
        # it is clamped instead of dropped.
        if spare.start_servers is not None:
            requested_start = spare.start_servers

    max_spare = _clamp(_positive_or(requested_max, FALLBACK_MAX_SPARE_SERVERS), 1, max_children)
    # A min_spare above max_spare comes down to it: fewer idle workers is the
    # cautious side when the two disagree.
    min_spare = _clamp(_positive_or(requested_min, FALLBACK_MIN_SPARE_SERVERS), 1, max_spare)
    start = requested_start
    if start is not None and start > 0:
        start = _clamp(start, min_spare, max_spare)

    spawn_rate = current.max_spawn_rate
    if spawn_rate is not None and spawn_rate < 1:
        spawn_rate = DEFAULT_MAX_SPAWN_RATE

    return replace(
        fitted,
        min_spare_servers=min_spare,
        max_spare_servers=max_spare,
        start_servers=start,
        max_spawn_rate=spawn_rate,
    )


def _or_zero(value: int | None) -> int:
    return 0 if value is None else value


def _or_default(value: int | None, default: int) -> int:
    return default if value is None else value


def _positive_or(value: int | None, fallback: int) -> int:
    return value if value is not None and value > 0 else fallback


def _clamp(value: int, lowest: int, highest: int) -> int:
    return max(lowest, min(value, highest))

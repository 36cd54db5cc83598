"""Saturation warnings in php-fpm's error log.

php-fpm words the pool limit warning by process manager (php-src
sapi/fpm/fpm/fpm_process_ctl.c for ``dynamic``, fpm_children.c for
``ondemand``; ``static`` never warns), and warns separately when the
global ``process.max`` stops a fork. Pool names may contain dots and
spaces, so the name is everything between ``[pool `` and the closing
bracket.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

_STAMP = r"\[(?P<time>[^\]]+)\] WARNING: "
MAX_CHILDREN = re.compile(
    _STAMP + r"\[pool (?P<pool>.+?)\] server reached (?:pm\.)?max_children setting \((?P<limit>\d+)\)"
)
SEEMS_BUSY = re.compile(
    _STAMP + r"\[pool (?P<pool>.+?)\] seems busy .*?spawning (?P<spawning>\d+) children, "
    r"there are (?P<idle>\d+) idle, and (?P<total>\d+) total children"
)
PROCESS_MAX = re.compile(_STAMP + r"The maximum number of processes has been reached")


@dataclass(frozen=True, slots=True)
class LogWarning:
    """One saturation warning: ``kind`` is max_children, seems_busy or process_max."""

    kind: str
    time: str
    pool: str | None = None
    limit: int | None = None


def parse_error_log(lines: Iterable[str]) -> list[LogWarning]:
    """Return the saturation warnings among ``lines``; other lines are ignored."""
    found = []
    for line in lines:
        if match := MAX_CHILDREN.search(line):
            found.append(LogWarning("max_children", match["time"], match["pool"], int(match["limit"])))
        elif match := SEEMS_BUSY.search(line):
            found.append(LogWarning("seems_busy", match["time"], match["pool"]))
        elif match := PROCESS_MAX.search(line):
            found.append(LogWarning("process_max", match["time"]))
    return found


def summarize(warnings: Iterable[LogWarning]) -> Counter[tuple[str, str | None]]:
    """Count warnings by (kind, pool)."""
    return Counter((warning.kind, warning.pool) for warning in warnings)

"""Render pools from PmSettings and ask the real php-fpm whether it accepts them."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from autoscaler.fpmconfig.rules import PmSettings
from tests.fpm import find_fpm_binary

# "[04-Dec-2026 19:43:23] ALERT: [pool www] pm.max_children must be a positive value"
ALERT_LINE = re.compile(r"^\[[^\]]+\] ALERT: \[pool (?P<pool>[^\]]+)\] (?P<message>.*)$")


@dataclass(frozen=True)
class FpmVerdict:
    exit_code: int
    alerts: list[str]
    stderr: str


def render_pool(name: str, settings: PmSettings, *, listen: str = "127.0.0.1:9") -> str:
    """Render one pool section; None values are left out, as an operator would."""
    lines = [f"[{name}]", f"listen = {listen}", f"pm = {settings.pm}"]
    keys = {
        "pm.max_children": settings.max_children,
        "pm.start_servers": settings.start_servers,
        "pm.min_spare_servers": settings.min_spare_servers,
        "pm.max_spare_servers": settings.max_spare_servers,
        "pm.max_spawn_rate": settings.max_spawn_rate,
        "pm.process_idle_timeout": settings.process_idle_timeout_seconds,
    }
    lines += [f"{key} = {value}" for key, value in keys.items() if value is not None]
    return "\n".join(lines) + "\n"


def fpm_test(root: Path, pool_text: str) -> FpmVerdict:
    """Run ``php-fpm -t`` on a main file with one global section and the given pool text."""
    binary = find_fpm_binary()
    assert binary is not None, "php-fpm is required; mark the test with @requires_fpm"
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "php-fpm.conf"
    conf.write_text(f"[global]\nerror_log = {root / 'error.log'}\n{pool_text}")
    args = [binary, "-t", "-y", str(conf), "-p", str(root)]
    if os.geteuid() == 0:
        args.insert(1, "-R")
    done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    alerts = [
        match["message"]
        for match in map(ALERT_LINE.match, done.stderr.splitlines())
        if match is not None
    ]
    return FpmVerdict(done.returncode, alerts, done.stderr)

"""Run php-fpm's own configuration test (``php-fpm -t``) and find the binary."""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import re
import shutil
from dataclasses import dataclass, field

from autoscaler.errors import ValidationError

log = logging.getLogger("autoscaler.fpmconfig.tester")

# "[04-Dec-2026 19:43:23] ALERT: [pool www] pm.max_children must be a positive value"
ZLOG_LINE = re.compile(r"^\[[^\]]*\] (?P<level>[A-Z]+): (?P<message>.*)$")
FAILURE_LEVELS = ("ERROR", "ALERT")
# Lines php-fpm adds after the real cause; kept only when nothing else is there.
GENERIC_FAILURES = re.compile(
    r"^(failed to post process the configuration|FPM initialization failed"
    r"|failed to load configuration file '.*')$"
)

# Names tried in order when no binary is configured: the unversioned name
# (official Docker image, source builds), then Debian's versioned names.
UNVERSIONED_NAMES = ("php-fpm", "/usr/local/sbin/php-fpm", "/usr/sbin/php-fpm")
VERSIONED_PATTERNS = ("/usr/sbin/php-fpm[0-9]*", "/usr/local/sbin/php-fpm[0-9]*")


@dataclass(frozen=True)
class ConfigTestResult:
    """Outcome of ``php-fpm -t``: exit 0 means valid, php-fpm 8.2 exits 78 otherwise."""

    ok: bool
    exit_code: int
    # ERROR and ALERT messages from stderr without their timestamp, the cause first.
    messages: list[str] = field(default_factory=list)


async def run_config_test(
    binary: str,
    config_path: str,
    *,
    prefix: str | None = None,
    timeout_seconds: float = 30.0,
) -> ConfigTestResult:
    """Run ``php-fpm -t`` on ``config_path`` and collect php-fpm's error messages.

    ``-R`` is added when the agent runs as root, because php-fpm 8.2 run as
    root rejects a pool without ``user`` unless ``-R`` is given (measured:
    "user has not been defined", exit 78). NOTE: php-fpm resolves ``${VAR}``
    values from the agent's environment here, which can differ from the
    environment of the running master.

    Raises ValidationError when the test cannot run or does not finish in
    time: the candidate is then unverified and must not be reloaded.
    """
    args = ["-t", "-y", config_path]
    if prefix is not None:
        args += ["-p", prefix]
    if os.geteuid() == 0:
        args.insert(0, "-R")

    try:
        process = await asyncio.create_subprocess_exec(
            binary,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise ValidationError(
            f"failed to run {binary} -t: {exc.strerror or exc}; "
            "set PHPFPM_AUTOSCALER_FPM_BINARY to php-fpm's path"
        ) from exc

    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout_seconds)
    except TimeoutError as exc:
        process.kill()
        await process.wait()
        raise ValidationError(
            f"{binary} -t on {config_path} timed out after {timeout_seconds} s; "
            "the candidate was not validated"
        ) from exc

    exit_code = process.returncode if process.returncode is not None else -1
    messages = parse_failures(stderr.decode("utf-8", errors="replace"))
    result = ConfigTestResult(ok=exit_code == 0, exit_code=exit_code, messages=messages)
    log.debug(
        "config_test_done",
        extra={"fields": {"config": config_path, "exit_code": exit_code, "messages": messages}},
    )
    return result


def parse_failures(stderr: str) -> list[str]:
    """Return php-fpm's ERROR and ALERT messages, without the generic ones that follow a cause."""
    failures = [
        match["message"]
        for match in map(ZLOG_LINE.match, stderr.splitlines())
        if match is not None and match["level"] in FAILURE_LEVELS
    ]
    causes = [message for message in failures if not GENERIC_FAILURES.match(message)]
    return causes or failures


def find_fpm_binary(hint: str | None = None) -> str | None:
    """Return the path of a php-fpm binary, or None when there is none.

    ``hint`` (a path or a name on PATH) wins when given. When it does not
    resolve, the result is None rather than another php-fpm, because another
    version could accept a file that the configured one rejects.
    """
    if hint:
        found = shutil.which(hint)
        if found is None:
            log.warning(
                "fpm_binary_not_found",
                extra={"fields": {"binary": hint,
                                  "fix": "set PHPFPM_AUTOSCALER_FPM_BINARY to an executable"}},
            )
        return found

    for name in UNVERSIONED_NAMES:
        found = shutil.which(name)
        if found is not None:
            return found
    versioned = [
        path
        for pattern in VERSIONED_PATTERNS
        for path in glob.glob(pattern)
        if os.access(path, os.X_OK)
    ]
    if versioned:
        # NOTE: with several versions installed this picks the highest, which
        # need not be the one running; pass the master's binary as the hint.
        # Versions compare as numbers, so 8.10 ranks above 8.9.
        return max(versioned, key=_version_key)
    return None


def _version_key(path: str) -> tuple[int, ...]:
    version = re.search(r"php-fpm(\d+(?:\.\d+)*)$", path)
    if version is None:
        return ()
    return tuple(int(part) for part in version.group(1).split("."))

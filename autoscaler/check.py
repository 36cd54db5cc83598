"""``phpfpm-autoscaler check``: everything the agent needs, verified once, with the fix for each problem."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from autoscaler.actuator.override import check_override_path
from autoscaler.errors import AutoscalerError, StatusError
from autoscaler.memory import MemoryEstimator
from autoscaler.policy import MemoryBudget, Observation, PolicySettings, PoolState, decide
from autoscaler.settings import Mode, Settings, unknown_variables
from autoscaler.status import PoolSample


@dataclass
class Report:
    errors: int = 0
    warnings: int = 0

    def line(self, level: str, message: str) -> None:
        if level == "error":
            self.errors += 1
        elif level == "warning":
            self.warnings += 1
        print(f"  [{level}] {message}")


async def run_check(settings: Settings) -> int:
    from autoscaler.controller import policy_settings
    from autoscaler.wiring import make_readers, pm_from_config, read_config, resolve_config_file

    report = Report()
    print(f"settings: valid (mode {settings.mode.value}, {len(settings.status_urls)} status page(s))")
    for message in unknown_variables(os.environ):
        report.line("warning", message)
    if settings.override_file is not None:
        for problem in check_override_path(settings.override_file):
            report.line(
                "error",
                f"{problem}; PHPFPM_AUTOSCALER_OVERRIDE_FILE must name a regular file the agent can write",
            )

    print("status pages:")
    samples: dict[str, PoolSample] = {}
    self_served: list[str] = []
    readers, client = make_readers(settings)
    try:
        for reader in readers:
            try:
                sample = await reader.read()
            except StatusError as exc:
                report.line("error", f"{reader.uri}: {type(exc).__name__}: {exc}")
                continue
            if sample.pool in samples:
                report.line(
                    "error",
                    f"{reader.uri}: pool {sample.pool!r} is listed twice in PHPFPM_AUTOSCALER_STATUS_URLS; "
                    "list each pool once",
                )
            samples[sample.pool] = sample
            queue = "unknown (unix socket)" if sample.queue is None else str(sample.queue)
            report.line(
                "ok",
                f"{reader.uri}: pool {sample.pool!r}, pm {sample.process_manager}, busy "
                f"{sample.busy_workers}, idle {sample.idle_processes}, queue {queue}, "
                f"{sample.poll_duration_seconds * 1000:.1f} ms",
            )
            if sample.status_request_workers:
                self_served.append(sample.pool)
    finally:
        if client is not None:
            await client.aclose()

    print("php-fpm master and configuration:")
    try:
        config_file, root = resolve_config_file(settings)
    except AutoscalerError as exc:
        report.line("error", str(exc))
        config_file, root = None, None
    config = read_config(config_file, root)
    if config is None:
        level = "error" if settings.mode is Mode.AUTO else "warning"
        report.line(
            level,
            "php-fpm's configuration could not be read, so the current pm.max_children is unknown; "
            "set PHPFPM_AUTOSCALER_FPM_CONFIG_FILE",
        )
        for served in self_served:
            report.line(
                "info",
                f"pool {served!r}: the status page is served by the pool itself, so it waits behind a "
                "saturated pool; set pm.status_listen = 127.0.0.1:9001 (PHP 8.0+) and point "
                "PHPFPM_AUTOSCALER_STATUS_URLS at it",
            )
    else:
        report.line("ok", f"configuration {config.path} ({len(config.files)} file(s))")
        timeout = config.global_config.process_control_timeout_seconds
        if timeout == 0 and settings.require_graceful_reload:
            report.line(
                "error",
                "process_control_timeout is 0 and PHPFPM_AUTOSCALER_REQUIRE_GRACEFUL_RELOAD is set, so "
                "the agent refuses every reload; set process_control_timeout = 10s in [global]",
            )
        report.line(
            "ok" if timeout > 0 else "warning",
            f"process_control_timeout = {timeout:g} s, process.max = {config.global_config.process_max}",
        )
        await _check_config_test(report, settings, config_file, root)
        for name, pool in config.pools.items():
            where = pool.sources.get("pm.max_children")
            report.line(
                "ok",
                f"pool {name!r}: pm = {pool.pm}, pm.max_children = {pool.max_children}"
                + (f" (from {where})" if where else ""),
            )
        _report_error_log(report, config.global_config.error_log, root)
        if settings.override_file is not None:
            from autoscaler.fpmconfig.preflight import preflight

            for finding in preflight(config, pool_names=list(samples), override_file=settings.override_file):
                prefix = f"pool {finding.pool!r}: " if finding.pool else ""
                report.line(finding.level, prefix + finding.message)

    if settings.mode is Mode.AUTO:
        print(f"reload backend ({settings.reload_method.value}):")
        try:
            from autoscaler.actuator.backends import make_backend

            backend = make_backend(settings)
            master = backend.master()
        except AutoscalerError as exc:
            report.line("error", str(exc))
        else:
            if master is None:
                report.line(
                    "error",
                    "php-fpm master not found; is php-fpm running and visible to the agent?",
                )
            else:
                report.line("ok", f"master pid {master.pid}")

    if samples and settings.mode is not Mode.OBSERVE:
        print("what the agent would do now (from one sample; scale-downs wait for a full window):")
        known = pm_from_config(config) if config is not None else {}
        policy = policy_settings(settings)
        estimator = MemoryEstimator(settings)
        for name, sample in samples.items():
            pm = known.get(name)
            budget = estimator.budget(name, sample)
            _report_memory(report, name, budget)
            _would_do(report, name, sample, pm.max_children if pm is not None else None, policy, budget)

    print(f"result: {report.errors} error(s), {report.warnings} warning(s)")
    return 1 if report.errors else 0


async def _check_config_test(
    report: Report, settings: Settings, config_file: Path | None, root: Path | None
) -> None:
    """Run ``php-fpm -t`` once, as the agent does before every reload."""
    from autoscaler.errors import ValidationError
    from autoscaler.fpmconfig.tester import find_fpm_binary, run_config_test

    binary = find_fpm_binary(settings.fpm_binary)
    if binary is None and settings.fpm_binary:
        report.line(
            "error",
            f"PHPFPM_AUTOSCALER_FPM_BINARY={settings.fpm_binary!r} is not an executable php-fpm; "
            "set it to the php-fpm binary (e.g. /usr/sbin/php-fpm8.2) or unset it",
        )
        return
    if binary is None or config_file is None or root is not None:
        report.line(
            "info", "php-fpm -t is not available here: candidates are checked with php-fpm's pm rules only"
        )
        return
    try:
        result = await run_config_test(binary, str(config_file))
    except ValidationError as exc:
        report.line("error", f"{binary} -t could not run: {exc}; check PHPFPM_AUTOSCALER_FPM_BINARY")
        return
    if result.ok:
        report.line("ok", f"{binary} -t accepts the configuration")
    else:
        detail = " | ".join(result.messages) or f"exit status {result.exit_code} and no message"
        report.line("error", f"{binary} -t rejects the configuration: {detail}")


# Only the end of a large error log is read: recent warnings are what matter.
ERROR_LOG_TAIL_BYTES = 1 << 20


def _report_error_log(report: Report, path: str | None, root: Path | None) -> None:
    """Count php-fpm's recent saturation warnings, when its error log is a readable file."""
    if not path or not path.startswith("/"):
        return
    from autoscaler.status.errorlog import parse_error_log, summarize

    log_path = root / path.lstrip("/") if root is not None else Path(path)
    try:
        with log_path.open("rb") as handle:
            handle.seek(max(0, log_path.stat().st_size - ERROR_LOG_TAIL_BYTES))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return
    for (kind, pool), count in sorted(summarize(parse_error_log(lines)).items(), key=str):
        if kind == "max_children":
            report.line("warning", f"pool {pool!r} reached pm.max_children {count} time(s) ({path})")
        elif kind == "process_max":
            report.line(
                "warning",
                f"php-fpm reached process.max {count} time(s); the agent keeps the "
                f"sum of its pools within process.max ({path})",
            )
        else:
            report.line("info", f"pool {pool!r} was busy spawning workers {count} time(s) ({path})")


def _would_do(
    report: Report,
    pool: str,
    sample: PoolSample,
    current: int | None,
    policy: PolicySettings,
    budget: MemoryBudget | None,
) -> None:
    now = time.monotonic()
    observation = Observation(
        at_seconds=now,
        busy=sample.busy_workers,
        idle=sample.idle_processes,
        total=sample.total_processes,
        queue=sample.queue,
    )
    state = PoolState().observe(observation, policy)
    decision = decide(pool, state, current, policy, now, budget)
    shown_current = "unknown" if decision.current is None else str(decision.current)
    shown_recommendation = "none" if decision.recommendation is None else str(decision.recommendation)
    action = f"{decision.direction.value} to {decision.target}" if decision.current is not None else "none"
    report.line(
        "info",
        f"pool {pool!r}: current {shown_current}, recommendation {shown_recommendation}, "
        f"ceiling {decision.ceiling}, action {action} ({decision.reason.value}: {decision.message})",
    )


def _report_memory(report: Report, pool: str, budget: MemoryBudget) -> None:
    limit = budget.limit_bytes
    report.line(
        "ok",
        f"pool {pool!r}: memory limit {_mib(limit)} ({budget.limit_source}), reserve "
        f"{_mib(budget.reserve_bytes)}, worker {_mib(budget.worker_bytes)} ({budget.worker_source}), "
        f"ceiling {budget.ceiling}",
    )
    if limit is not None and limit <= budget.reserve_bytes:
        report.line(
            "warning",
            f"the memory limit {_mib(limit)} is not above PHPFPM_AUTOSCALER_MEMORY_RESERVE_BYTES "
            f"({_mib(budget.reserve_bytes)}), so the ceiling is 1 worker; lower the reserve or "
            "raise the limit",
        )


def _mib(value: int | None) -> str:
    return "unknown" if value is None else f"{value / 2**20:.0f} MiB"

"""Build the running agent from settings: readers, php-fpm config, backend, applier, server."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import httpx

from autoscaler.actuator.apply import Applier
from autoscaler.actuator.backends import make_backend
from autoscaler.actuator.override import check_override_path
from autoscaler.controller import Controller
from autoscaler.errors import AutoscalerError, ConfigError
from autoscaler.fpmconfig.model import FpmConfig
from autoscaler.fpmconfig.reader import load_fpm_config
from autoscaler.fpmconfig.rules import PmSettings
from autoscaler.fpmconfig.tester import find_fpm_binary, run_config_test
from autoscaler.httpserver import MetricsServer
from autoscaler.memory import MemoryEstimator
from autoscaler.metrics import Metrics
from autoscaler.settings import Mode, Settings, unknown_variables
from autoscaler.status import StatusReader
from autoscaler.status.uri import parse_status_uri

log = logging.getLogger("autoscaler.agent")

# Extra time for a reload beyond php-fpm's process_control_timeout, which
# bounds how long in-flight requests may delay it.
VERIFY_MARGIN_SECONDS = 5.0


def make_readers(settings: Settings) -> tuple[list[StatusReader], httpx.AsyncClient | None]:
    uris = [parse_status_uri(url) for url in settings.status_urls]
    client = None
    if any(not uri.is_fastcgi for uri in uris):
        client = httpx.AsyncClient(timeout=settings.effective_poll_timeout_seconds, follow_redirects=False)
    readers = [
        StatusReader(uri, deadline_seconds=settings.effective_poll_timeout_seconds, http_client=client)
        for uri in uris
    ]
    return readers, client


def pm_from_config(config: FpmConfig) -> dict[str, PmSettings]:
    result = {}
    for name, pool in config.pools.items():
        if pool.max_children is None:
            continue
        result[name] = PmSettings(
            pm=pool.pm,
            max_children=pool.max_children,
            start_servers=pool.start_servers,
            min_spare_servers=pool.min_spare_servers,
            max_spare_servers=pool.max_spare_servers,
            max_spawn_rate=pool.max_spawn_rate,
        )
    return result


class Agent:
    """The wired agent: a controller, its metrics listener and its clients."""

    def __init__(
        self,
        settings: Settings,
        controller: Controller,
        server: MetricsServer,
        client: httpx.AsyncClient | None,
    ) -> None:
        self.settings = settings
        self.controller = controller
        self.server = server
        self.client = client

    @classmethod
    async def create(cls, settings: Settings) -> Agent:
        log.info("agent_starting", extra={"fields": {"settings": settings.public_dict()}})
        for message in unknown_variables(os.environ):
            log.warning("unknown_setting", extra={"fields": {"message": message}})
        metrics = Metrics()
        readers, client = make_readers(settings)
        config_file, root = resolve_config_file(settings)
        config = read_config(config_file, root)

        def current_pm() -> dict[str, PmSettings]:
            fresh = read_config(config_file, root)
            return pm_from_config(fresh) if fresh is not None else {}

        def process_max() -> int:
            return config.global_config.process_max if config is not None else 0

        estimator = MemoryEstimator(settings)
        controller = Controller(
            settings,
            readers,
            metrics,
            current_pm=current_pm,
            budget=estimator.budget,
            process_max=process_max,
        )
        if config is not None and root is None and settings.override_file is not None:
            log_preflight(config, settings.override_file, fatal=settings.mode is Mode.AUTO)
        if settings.mode is Mode.AUTO:
            assert settings.override_file is not None  # enforced by Settings in auto mode
            problems = check_override_path(settings.override_file)
            if problems:
                raise ConfigError(
                    "; ".join(problems) + "; PHPFPM_AUTOSCALER_OVERRIDE_FILE must name a regular file "
                    "in a folder the agent can write"
                )
            controller.applier = build_applier(settings, controller, config, config_file, root)
        host, _, port = settings.metrics_address.rpartition(":")
        server = MetricsServer(metrics.registry, controller.health, host, int(port))
        return cls(settings, controller, server, client)

    def request_stop(self, signum: int) -> None:
        log.info("stop_requested", extra={"fields": {"signal": signal.Signals(signum).name}})
        self.controller.stop()

    async def run(self) -> None:
        try:
            await self.server.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on PHPFPM_AUTOSCALER_METRICS_ADDRESS={self.settings.metrics_address}: "
                f"{exc.strerror or exc}; choose a free HOST:PORT"
            ) from exc
        await self.controller.run()

    async def close(self) -> None:
        await self.server.stop()
        if self.client is not None:
            await self.client.aclose()


def log_preflight(config: FpmConfig, override_file: Path, *, fatal: bool) -> None:
    """Log the start-up findings about the override file and php-fpm's settings.

    With ``fatal``, an error finding (an override that php-fpm never reads, a
    folder the agent cannot write) stops start-up: every reload would drain
    php-fpm for a change that never takes effect.
    """
    from autoscaler.fpmconfig.preflight import preflight

    levels = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO}
    errors = []
    for finding in preflight(config, pool_names=[], override_file=override_file):
        log.log(
            levels.get(finding.level, logging.INFO),
            "preflight",
            extra={"fields": {"pool": finding.pool, "level": finding.level, "message": finding.message}},
        )
        if finding.level == "error":
            errors.append(finding.message)
    if fatal and errors:
        raise ConfigError("; ".join(errors) + " (run phpfpm-autoscaler check for details)")


def resolve_config_file(settings: Settings) -> tuple[Path | None, Path | None]:
    """Find php-fpm's main config: the setting, else the path on the master's command line.

    Returns the path as the agent can open it, and the folder that stands
    for php-fpm's ``/`` when the file is read through ``/proc/PID/root``.
    """
    if settings.fpm_config_file is not None:
        if not settings.fpm_config_file.exists():
            raise ConfigError(
                f"PHPFPM_AUTOSCALER_FPM_CONFIG_FILE={str(settings.fpm_config_file)!r} does not exist; "
                "set it to php-fpm's main configuration file or unset it"
            )
        return settings.fpm_config_file, None
    from autoscaler.actuator.process import select_master

    try:
        master = select_master(pid_file=str(settings.pid_file) if settings.pid_file else None)
    except AutoscalerError as exc:
        log.warning("master_not_found", extra={"fields": {"error": str(exc)}})
        return None, None
    if master.config_path is None:
        return None, None
    # A sidecar sharing the pod's process namespace can open php-fpm's files
    # under /proc/PID/root when it runs as the master's user (the kernel's
    # ptrace read check guards that link). Try that first, because the same
    # path in the agent's own file system may be another file.
    root = Path(f"/proc/{master.pid}/root")
    through_proc = root / master.config_path.lstrip("/")
    try:
        if through_proc.is_file() and root.resolve() != Path("/"):
            return through_proc, root
    except OSError:
        pass
    direct = Path(master.config_path)
    if direct.is_file():
        return direct, None
    log.warning(
        "config_not_readable",
        extra={"fields": {"path": master.config_path, "fix": "set PHPFPM_AUTOSCALER_FPM_CONFIG_FILE"}},
    )
    return None, None


def read_config(config_file: Path | None, root: Path | None = None) -> FpmConfig | None:
    if config_file is None:
        return None
    try:
        config = load_fpm_config(config_file, root=root)
    except ConfigError as exc:
        log.error("config_read_failed", extra={"fields": {"path": str(config_file), "error": str(exc)}})
        return None
    for warning in config.warnings:
        log.debug("config_warning", extra={"fields": {"path": str(config_file), "warning": warning}})
    return config


def build_applier(
    settings: Settings,
    controller: Controller,
    config: FpmConfig | None,
    config_file: Path | None,
    root: Path | None = None,
) -> Applier:
    assert settings.override_file is not None  # enforced by Settings in auto mode
    backend = make_backend(settings)
    tester = None
    binary = find_fpm_binary(settings.fpm_binary)
    if binary is not None and config_file is not None and root is None:

        async def tester_call() -> list[str]:
            result = await run_config_test(binary, str(config_file))
            return [] if result.ok else result.messages or [f"php-fpm -t exited with {result.exit_code}"]

        tester = tester_call
    else:
        log.warning(
            "config_test_unavailable",
            extra={
                "fields": {
                    "binary": binary,
                    "config_file": str(config_file) if config_file else None,
                    "effect": "candidates are checked by the built-in pm rules only",
                }
            },
        )
    drain = config.global_config.process_control_timeout_seconds if config else 0.0
    if config is not None and drain == 0:
        log.warning(
            "reload_cuts_requests",
            extra={
                "fields": {
                    "process_control_timeout": 0,
                    "refusing": settings.require_graceful_reload,
                    "fix": "set process_control_timeout = 10s in php-fpm's [global] section",
                }
            },
        )

    def reload_guard() -> str | None:
        if not settings.require_graceful_reload:
            return None
        fresh = read_config(config_file, root)
        if fresh is None:
            return "php-fpm's configuration is unreadable, so a graceful reload cannot be confirmed"
        if fresh.global_config.process_control_timeout_seconds == 0:
            return (
                "process_control_timeout is 0, so a reload would cut in-flight requests; set "
                "process_control_timeout = 10s in php-fpm's [global] section, or unset "
                "PHPFPM_AUTOSCALER_REQUIRE_GRACEFUL_RELOAD"
            )
        return None

    verify_seconds = max(settings.reload_verify_timeout_seconds, drain + VERIFY_MARGIN_SECONDS)
    return Applier(
        settings.override_file,
        backend,
        controller.start_times,
        config_tester=tester,
        reload_guard=reload_guard,
        verify_timeout_seconds=verify_seconds,
        stop_requested=controller.stopping.is_set,
    )

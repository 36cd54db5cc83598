"""Settings from the environment: the agent's whole public configuration.

Every variable has the prefix ``PHPFPM_AUTOSCALER_`` and, where it has one,
its unit in the name. The README's table of variables is generated from the
fields below (``phpfpm-autoscaler settings --markdown``), so the two cannot
drift apart.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import shlex
from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from autoscaler.errors import ConfigError

ENV_PREFIX = "PHPFPM_AUTOSCALER_"


class Mode(StrEnum):
    AUTO = "auto"  # decide and apply
    RECOMMEND = "recommend"  # decide, log and publish; never touch php-fpm
    OBSERVE = "observe"  # metrics only, no decisions


class ReloadMethod(StrEnum):
    SIGNAL = "signal"
    SYSTEMD = "systemd"
    SUPERVISOR = "supervisor"
    COMMAND = "command"


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


class Settings(BaseSettings):
    """Validated agent settings; see the README for the table of variables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        validate_default=True,
        allow_inf_nan=False,
    )

    status_urls: Annotated[list[str], NoDecode] = Field(
        default=["tcp://127.0.0.1:9000/status"],
        description=(
            "Comma-separated status page URIs, one per pool: `tcp://HOST:PORT/PATH`, "
            "`unix:///SOCKET;/PATH` or `http(s)://HOST/PATH`."
        ),
    )
    mode: Mode = Field(
        default=Mode.AUTO,
        description="`auto` applies decisions, `recommend` only logs and publishes them, "
        "`observe` publishes pool metrics only.",
    )
    override_file: Path | None = Field(
        default=None,
        description="Override file the agent owns; php-fpm must include it after every "
        "other pool file. Required in `auto` mode.",
    )
    fpm_config_file: Path | None = Field(
        default=None,
        description="php-fpm's main configuration file. Default: taken from the master's command line.",
    )
    fpm_binary: str | None = Field(
        default=None,
        description="php-fpm binary used for `php-fpm -t` before each reload. Default: "
        "`php-fpm8.2`, `php-fpm` or the master's own binary, when found.",
    )
    poll_interval_seconds: float = Field(
        default=1.0, gt=0, le=3600, description="Time between two polls of each status page."
    )
    poll_timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Deadline of one status poll. Default: 80 % of the poll interval.",
    )
    slow_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        description="A poll slower than this counts as a saturation hint (the status "
        "request waited behind busy workers).",
    )
    min_children: int = Field(default=2, ge=1, description="Lowest `pm.max_children` to set.")
    max_children: int = Field(
        default=32,
        ge=1,
        le=100_000,
        description="Highest `pm.max_children` to set, whatever the demand.",
    )
    target_utilization: float = Field(
        default=0.75,
        gt=0,
        le=1,
        description="Share of workers that should be busy at peak demand.",
    )
    tolerance_ratio: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="No change while desired/current is within 1 ± this ratio.",
    )
    decision_window_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Demand is the peak of the samples in this window.",
    )
    scale_down_stabilization_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Scale down only to the highest recommendation within this window.",
    )
    scale_down_max_ratio: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Largest share of workers removed by one scale-down.",
    )
    saturation_step_ratio: float = Field(
        default=1.5,
        gt=1,
        description="On saturation (demand above the limit is invisible), multiply the "
        "current limit by this, at least +1.",
    )
    scale_up_max_ratio: float = Field(
        default=1.0,
        gt=0,
        description="One scale-up adds at most this share of the current workers, or "
        "SCALE_UP_MAX_WORKERS if that is more.",
    )
    scale_up_max_workers: int = Field(
        default=4, ge=1, description="One scale-up may always add this many workers."
    )
    min_reload_interval_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Minimum time from any reload to a reload that scales down.",
    )
    scale_up_interval_seconds: float = Field(
        default=15.0,
        ge=0,
        description="Minimum time from any reload to a reload that scales up.",
    )
    flap_penalty_factor: float = Field(
        default=2.0,
        ge=1,
        description="A scale-up within the stabilization window after a scale-down "
        "multiplies that window by this factor; it divides back after each quiet window.",
    )
    flap_penalty_max: float = Field(
        default=8.0, ge=1, description="Largest multiple of the stabilization window."
    )
    reload_method: ReloadMethod = Field(
        default=ReloadMethod.SIGNAL,
        description="How to reload php-fpm: `signal` (SIGUSR2 to the master), `systemd`, "
        "`supervisor` or `command`.",
    )
    pid_file: Path | None = Field(
        default=None,
        description="php-fpm's PID file, used as a hint and checked against /proc.",
    )
    require_graceful_reload: bool = Field(
        default=False,
        description="Refuse to reload while php-fpm's `process_control_timeout` is 0, "
        "because such a reload cuts in-flight requests. When false the agent only warns.",
    )
    reload_verify_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long to wait for a new `start time` after a reload. The agent "
        "waits at least php-fpm's `process_control_timeout` plus 5 s.",
    )
    metrics_address: str = Field(
        default="0.0.0.0:9253",
        description="HOST:PORT of the `/metrics` and `/healthz` listener.",
    )
    log_format: LogFormat = Field(default=LogFormat.JSON, description="`json` or `text`.")
    log_level: str = Field(default="INFO", description="`DEBUG`, `INFO`, `WARNING` or `ERROR`.")

    # Reload backends (autoscaler/actuator/backends.py).
    systemd_unit: str = Field(
        default="php-fpm.service",
        min_length=1,
        description="systemd unit that `systemctl reload` reloads (method `systemd`). "
        "php-src ships `php-fpm.service`; Debian and Ubuntu name it after the version, "
        "e.g. `php8.2-fpm.service`.",
    )
    supervisor_url: str = Field(
        default="unix:///var/run/supervisor.sock",
        description="supervisord's XML-RPC endpoint (method `supervisor`): "
        "`unix:///PATH/supervisor.sock` for `[unix_http_server]` or "
        "`http://127.0.0.1:9001/RPC2` for `[inet_http_server]`.",
    )
    supervisor_program: str | None = Field(
        default=None,
        description="supervisord program that runs php-fpm in the foreground, as "
        "`supervisorctl status` shows it (`NAME` or `GROUP:NAME`). Required for method "
        "`supervisor`.",
    )
    supervisor_username: str | None = Field(
        default=None,
        description="User name for supervisord's XML-RPC endpoint, when it sets `username`.",
    )
    supervisor_password: SecretStr | None = Field(
        default=None,
        description="Password for supervisord's XML-RPC endpoint; never logged.",
    )
    reload_command: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Command that reloads php-fpm (method `command`): a JSON array of "
        "strings, or words split like a POSIX shell does. It runs without a shell. "
        "Required for method `command`.",
    )
    reload_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Deadline of one reload trigger (signal, `systemctl reload`, "
        "XML-RPC call or command); the command is killed when it passes.",
    )

    # Memory budget (autoscaler/memory.py). Byte values take a plain number or
    # a suffix: K, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti (powers of 1024).
    memory_limit_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Memory available to php-fpm (master and workers), e.g. `2Gi` or the "
        "container limit from the Kubernetes Downward API (`resourceFieldRef: "
        "limits.memory`). Default: the `memory.max` (cgroup v2) or "
        "`memory.limit_in_bytes` (cgroup v1) of the php-fpm master's cgroup when the agent "
        "can see it, else MemTotal of /proc/meminfo. Set it when the agent runs in "
        "another container than php-fpm, since it cannot see php-fpm's cgroup there.",
    )
    memory_reserve_bytes: int = Field(
        default=256 * 1024**2,
        ge=0,
        description="Memory kept out of the workers' share: 128 MiB for OPcache's shared "
        "memory (`opcache.memory_consumption` defaults to 128 MB) plus 128 MiB for the "
        "master (about 20 MB RSS with PHP 8.2), the page cache and other processes under "
        "the same limit. Raise it by the OPcache size you configured above 128 MB and by "
        "any JIT buffer (`opcache.jit_buffer_size`).",
    )
    memory_margin_ratio: float = Field(
        default=0.1,
        ge=0,
        le=10,
        description="Headroom added to the per-worker memory before dividing: the memory "
        "ceiling is floor((limit - reserve) / (worker memory x (1 + margin))).",
    )
    allocator_to_rss_ratio: float = Field(
        default=1.2,
        gt=0,
        le=100,
        description="Factor from PHP's allocator peak (`last request memory` of the status "
        "page) to a worker's memory, used when the workers' PSS cannot be read. Measured on "
        "PHP 8.2: during a request a worker's PSS was 1.04 to 1.2 times that peak "
        "(peak + about 2.3 MiB).",
    )
    worker_memory_bytes: int = Field(
        default=64 * 1024**2,
        gt=0,
        description="Per-worker memory used when neither the workers' PSS "
        "(/proc/PID/smaps_rollup) nor `last request memory` (status page read with "
        "`full`) is available.",
    )
    worker_memory_window_seconds: float = Field(
        default=300.0,
        ge=0,
        description="The per-worker memory is the highest 90th percentile seen within this "
        "window, so the memory ceiling does not move on every poll.",
    )

    @field_validator("status_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("status_urls")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("no status URI given; set at least one, e.g. tcp://127.0.0.1:9000/status")
        # Imported here: the status package imports settings-free code only.
        from autoscaler.status.uri import parse_status_uri

        for url in value:
            try:
                parse_status_uri(url)
            except ConfigError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @field_validator("memory_limit_bytes", "memory_reserve_bytes", "worker_memory_bytes", mode="before")
    @classmethod
    def _parse_byte_size(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_byte_size(value)
        return value

    @field_validator("override_file", "fpm_config_file", "pid_file", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: Any) -> Any:
        # An empty variable means unset, not the current directory.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("override_file")
    @classmethod
    def _check_override_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not value.is_absolute():
            raise ValueError("expected an absolute path, e.g. /etc/php/8.2/fpm/pool.d/zz-autoscaler.conf")
        if value.is_dir():
            raise ValueError("this is a directory; name the file inside it, e.g. DIR/zz-autoscaler.conf")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _check_level(cls, value: Any) -> Any:
        if isinstance(value, str):
            level = value.strip().upper()
            if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
                raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR")
            return level
        return value

    @field_validator("metrics_address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected HOST:PORT, e.g. 0.0.0.0:9253 or [::1]:9253")
        return value

    @model_validator(mode="after")
    def _check_together(self) -> Settings:
        if self.min_children > self.max_children:
            raise ValueError(
                f"{ENV_PREFIX}MIN_CHILDREN={self.min_children} is greater than "
                f"{ENV_PREFIX}MAX_CHILDREN={self.max_children}; lower the first or raise "
                "the second"
            )
        if self.poll_timeout_seconds is not None and (
            self.poll_timeout_seconds >= self.poll_interval_seconds
        ):
            raise ValueError(
                f"{ENV_PREFIX}POLL_TIMEOUT_SECONDS={self.poll_timeout_seconds} must be "
                f"shorter than {ENV_PREFIX}POLL_INTERVAL_SECONDS="
                f"{self.poll_interval_seconds}; lower the timeout"
            )
        if self.mode is Mode.AUTO and self.override_file is None:
            raise ValueError(
                f"{ENV_PREFIX}OVERRIDE_FILE is required in auto mode; set it to a file "
                f"that php-fpm includes last, or set {ENV_PREFIX}MODE=recommend"
            )
        return self

    @field_validator("reload_command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"starts with '[' but is not a JSON array ({exc.msg}); write it as "
                    '["/usr/bin/sv", "reload", "php-fpm"] or as plain words'
                ) from exc
            if not isinstance(parsed, list) or not all(isinstance(arg, str) for arg in parsed):
                raise ValueError('expected a JSON array of strings, e.g. ["sv", "reload", "php-fpm"]')
            return parsed
        try:
            return shlex.split(text)
        except ValueError as exc:
            raise ValueError(f"cannot split into arguments ({exc}); close the quote") from exc

    @model_validator(mode="after")
    def _check_reload_backend(self) -> Settings:
        method = f"{ENV_PREFIX}RELOAD_METHOD={self.reload_method.value}"
        if self.reload_method is ReloadMethod.COMMAND and not self.reload_command:
            raise ValueError(
                f"{ENV_PREFIX}RELOAD_COMMAND is required with {method}; set it to the "
                'command that reloads php-fpm, e.g. ["/usr/bin/sv", "reload", "php-fpm"]'
            )
        if self.reload_method is ReloadMethod.SUPERVISOR:
            if not self.supervisor_program:
                raise ValueError(
                    f"{ENV_PREFIX}SUPERVISOR_PROGRAM is required with {method}; set it to "
                    "the program name that `supervisorctl status` shows for php-fpm"
                )
            if not self.supervisor_url.startswith(("unix:///", "http://", "https://")):
                raise ValueError(
                    f"{ENV_PREFIX}SUPERVISOR_URL={self.supervisor_url!r} is not a supervisord "
                    "address; set unix:///PATH/supervisor.sock or http://127.0.0.1:9001/RPC2"
                )
        if (self.supervisor_username is None) != (self.supervisor_password is None):
            raise ValueError(
                f"{ENV_PREFIX}SUPERVISOR_USERNAME and {ENV_PREFIX}SUPERVISOR_PASSWORD must be "
                "set together; set both to supervisord's username and password, or neither"
            )
        return self

    @property
    def effective_poll_timeout_seconds(self) -> float:
        if self.poll_timeout_seconds is not None:
            return self.poll_timeout_seconds
        return self.poll_interval_seconds * 0.8

    @property
    def log_level_number(self) -> int:
        return int(logging.getLevelName(self.log_level))

    def public_dict(self) -> dict[str, Any]:
        """Return the settings as plain values, for the start-up log line."""
        return {name: _plain(value) for name, value in self.model_dump().items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, SecretStr):
        return "**********" if value.get_secret_value() else ""
    return value


_BYTE_SUFFIXES = {
    "": 1,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "KI": 1024,
    "MI": 1024**2,
    "GI": 1024**3,
    "TI": 1024**4,
}
_BYTE_SIZE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<suffix>[A-Za-z]*)")


def parse_byte_size(text: str) -> int:
    """Parse ``2147483648``, ``2Gi`` or ``512M`` into bytes, rounding down.

    Suffixes follow Kubernetes quantities: K, M, G, T are powers of 1000 and
    Ki, Mi, Gi, Ti powers of 1024; a trailing ``B`` (``512MB``, ``2GiB``) is
    accepted. A lower-case ``m`` is rejected, because Kubernetes reads it as
    milli while Docker reads it as MiB.
    """
    match = _BYTE_SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a byte size; write a whole number of bytes or a number with "
            "a suffix, e.g. 2147483648, 2Gi or 512M"
        )
    suffix = match["suffix"]
    if suffix.startswith("m"):
        raise ValueError(
            f"{text!r} is ambiguous: 'm' means milli in Kubernetes and MiB in Docker; "
            "write Mi (1024 x 1024) or M (1000 x 1000)"
        )
    key = suffix.upper().removesuffix("B")
    if key not in _BYTE_SUFFIXES:
        raise ValueError(f"{text!r} has an unknown suffix {suffix!r}; use K, M, G, T, Ki, Mi, Gi or Ti")
    return int(Decimal(match["number"]) * _BYTE_SUFFIXES[key])


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Build settings from the environment, or raise ConfigError with one line per problem.

    Each line names the variable, the value it had and what to set instead.
    """
    try:
        if environ is None:
            return Settings()
        # Only the given mapping counts: an explicit environ is used by tests
        # and by `check --env-file`.
        values = {
            key[len(ENV_PREFIX) :].lower(): value
            for key, value in environ.items()
            if key.upper().startswith(ENV_PREFIX)
        }
        return Settings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, environ)) from exc


def _describe(exc: ValidationError, environ: dict[str, str] | None) -> str:
    import os

    source = os.environ if environ is None else environ
    lines = []
    for error in exc.errors():
        location = [str(part) for part in error["loc"] if isinstance(part, str)]
        message = error["msg"].removeprefix("Value error, ")
        if location:
            variable = env_name(location[0])
            raw = _lookup(source, variable)
            shown = "(unset)" if raw is None else repr(raw)
            lines.append(f"{variable}={shown} is invalid: {message}")
        else:
            # Model-level checks name their variables (without the prefix).
            lines.append(f"invalid settings: {message}")
    return "; ".join(lines)


def _lookup(source: Any, variable: str) -> str | None:
    for key, value in source.items():
        if key.upper() == variable:
            return str(value)
    return None


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """Name every PHPFPM_AUTOSCALER_* variable that is no setting, with the closest match."""
    known = {env_name(name) for name in Settings.model_fields}
    messages = []
    for key in sorted(environ):
        upper = key.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.85)
        hint = f"; did you mean {close[0]}?" if close else "; it is ignored"
        messages.append(f"{key} is not a setting of this agent{hint}")
    return messages


def settings_markdown_table() -> str:
    """Render the README table of environment variables from the field definitions."""
    rows = ["| variable | default | description |", "| --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        default = info.default
        if isinstance(default, list):
            shown = ",".join(default)
        elif default is None:
            shown = "(unset)"
        else:
            shown = str(_plain(default))
        rows.append(f"| `{env_name(name)}` | `{shown}` | {info.description or ''} |")
    return "\n".join(rows) + "\n"

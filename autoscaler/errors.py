"""The exception tree of phpfpm-autoscaler.

Foreign errors (httpx, OSError, subprocess) are mapped to these once, at the
boundary where they occur, with ``raise ... from exc``::

    AutoscalerError
    ├── ConfigError                  settings or php-fpm configuration cannot be used
    ├── StatusError                  one poll of a status page failed
    │   ├── StatusConnectError       connection refused, socket missing (transient)
    │   ├── StatusTimeoutError       no complete reply within the deadline (saturation hint)
    │   ├── StatusBusyError          503 or an empty body (transient, saturation hint)
    │   ├── StatusAccessError        403 or 404: the poller is misconfigured (not transient)
    │   └── StatusParseError         a reply that is not a status page
    └── ApplyError                   a change could not be applied
        ├── ValidationError          the candidate configuration is invalid; nothing was reloaded
        ├── ReloadError              the reload could not be triggered
        └── VerificationError        the reload was triggered but php-fpm did not come back
"""

from __future__ import annotations


class AutoscalerError(Exception):
    """Base class of every error the agent raises on purpose."""


class ConfigError(AutoscalerError):
    """Settings or php-fpm configuration that the agent cannot work with."""


class StatusError(AutoscalerError):
    """A poll of one status page failed.

    ``transient`` tells whether a retry can succeed without an operator;
    ``saturation_hint`` tells whether the failure is evidence that the pool is
    saturated (a timeout or 503 through a busy pool), which may justify a scale
    up but never a scale down.
    """

    transient: bool = True
    saturation_hint: bool = False
    stage: str = "status"

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class StatusConnectError(StatusError):
    """The status endpoint refused the connection or does not exist."""


class StatusTimeoutError(StatusError):
    """The status page did not answer completely within the deadline."""

    saturation_hint = True


class StatusBusyError(StatusError):
    """php-fpm replied 503 or closed the connection with an empty body."""

    saturation_hint = True


class StatusAccessError(StatusError):
    """php-fpm replied 403 or 404: the status path or access rules are wrong."""

    transient = False


class StatusParseError(StatusError):
    """The reply was not a php-fpm status page in any known format."""

    transient = False


class ApplyError(AutoscalerError):
    """A change to php-fpm could not be applied."""

    stage = "apply"


class ValidationError(ApplyError):
    """The candidate configuration is invalid, so it was not reloaded."""

    stage = "validate"


class ReloadError(ApplyError):
    """The reload could not be triggered (no master, signal refused, command failed)."""

    stage = "reload"


class VerificationError(ApplyError):
    """The reload was triggered, but php-fpm did not come back with a new start time."""

    stage = "verify"

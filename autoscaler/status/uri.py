"""Status page addresses: ``tcp://HOST:PORT/PATH``, ``unix:///SOCKET;/PATH``, ``http(s)://...``."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from autoscaler.errors import ConfigError

EXAMPLES = (
    "tcp://127.0.0.1:9000/status, unix:///run/php/php-fpm.sock;/status or http://127.0.0.1/status"
)


@dataclass(frozen=True, slots=True)
class StatusURI:
    """A parsed status page address."""

    raw: str
    scheme: str  # "tcp", "unix", "http" or "https"
    path: str  # the pool's pm.status_path, e.g. "/status"
    host: str | None = None
    port: int | None = None
    socket_path: str | None = None

    @property
    def is_fastcgi(self) -> bool:
        return self.scheme in ("tcp", "unix")

    @property
    def queue_visible(self) -> bool:
        """Whether php-fpm can report a listen queue through this address.

        Linux reports the backlog of TCP listeners only, so a pool on a unix
        socket always shows 0 (measured on PHP 8.2). Over HTTP the pool's own
        listener is unknown, so the queue is trusted.
        """
        return self.scheme != "unix"

    def __str__(self) -> str:
        return self.raw


def parse_status_uri(raw: str) -> StatusURI:
    """Parse one status address, or raise ConfigError naming the value and the expected form."""
    text = raw.strip()
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigError(f"status URI {raw!r} has no scheme; expected {EXAMPLES}")
    if scheme == "unix":
        socket_path, sep, path = rest.partition(";")
        if not sep or not path.startswith("/"):
            raise ConfigError(
                f"status URI {raw!r} has no status path after ';'; expected "
                "unix:///run/php/php-fpm.sock;/status"
            )
        if not socket_path.startswith("/"):
            raise ConfigError(f"status URI {raw!r}: the socket path must be absolute")
        return StatusURI(raw=text, scheme="unix", path=path, socket_path=socket_path)
    if scheme in ("tcp", "http", "https"):
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(
                f"status URI {raw!r} has an invalid port; expected {EXAMPLES}"
            ) from exc
        if not parts.hostname:
            raise ConfigError(f"status URI {raw!r} has no host; expected {EXAMPLES}")
        if scheme == "tcp" and port is None:
            raise ConfigError(
                f"status URI {raw!r} has no port; expected tcp://127.0.0.1:9000/status"
            )
        path = parts.path or "/status"
        if parts.query:
            raise ConfigError(
                f"status URI {raw!r} has a query; leave it out, the agent asks for ?json&full itself"
            )
        return StatusURI(raw=text, scheme=scheme, path=path, host=parts.hostname, port=port)
    raise ConfigError(f"status URI {raw!r} has an unknown scheme {scheme!r}; expected {EXAMPLES}")

"""Poll one php-fpm status page over FastCGI (TCP or unix socket) or HTTP(S).

One ``StatusReader`` per status URI. Each ``read()`` has a deadline that
covers everything: connection retries, the request, the fallback to the
plain format and parsing. Only a failure to set up the connection
(StatusConnectError) is retried, a couple of times with a short backoff and
only while the deadline allows. A timeout or a reply that is not a status
page is raised at once, because retrying would hide saturation.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from types import TracebackType

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
)

from autoscaler.errors import (
    StatusBusyError,
    StatusConnectError,
    StatusError,
    StatusParseError,
    StatusTimeoutError,
)
from autoscaler.status.fastcgi import MAX_RESPONSE_BYTES, fastcgi_request, request_params
from autoscaler.status.model import PoolSample
from autoscaler.status.parse import check_reply_status, parse_status
from autoscaler.status.uri import StatusURI

log = logging.getLogger("autoscaler.status.reader")

JSON_QUERY = "json&full"
# The plain format with one block per worker. Older php-fpm versions wrote
# request URIs unescaped into the JSON, and a line-based format survives that.
TEXT_QUERY = "full"


@dataclass(frozen=True, slots=True)
class _Reply:
    status_code: int
    content_type: str | None
    body: bytes


class StatusReader:
    """Read one pool's status page into a ``PoolSample``.

    ``deadline_seconds`` bounds one ``read()`` in full. HTTP(S) URIs use
    ``http_client`` when given (the caller closes it), else a client this
    reader owns and closes in ``aclose()``.
    """

    def __init__(
        self,
        uri: StatusURI,
        *,
        deadline_seconds: float,
        http_client: httpx.AsyncClient | None = None,
        connect_attempts: int = 3,
        connect_backoff_seconds: float = 0.05,
    ) -> None:
        if deadline_seconds <= 0:
            raise ValueError(f"deadline_seconds={deadline_seconds!r} must be above 0")
        if connect_attempts < 1:
            raise ValueError(f"connect_attempts={connect_attempts!r} must be at least 1")
        self.uri = uri
        self.deadline_seconds = deadline_seconds
        self._connect_attempts = connect_attempts
        self._connect_backoff_seconds = connect_backoff_seconds
        self._owns_client = http_client is None and not uri.is_fastcgi
        self._client = http_client
        if self._owns_client:
            self._client = httpx.AsyncClient(
                follow_redirects=False, headers={"User-Agent": "phpfpm-autoscaler"}
            )
        # Whether an earlier full read showed our own request among the busy
        # workers, which means the page is served by the pool it reports on.
        self._reads_through_pool: bool | None = None
        self._fallback_logged = False

    async def __aenter__(self) -> StatusReader:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this reader created it."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()

    async def read(self) -> PoolSample:
        """Poll the status page once, within the deadline.

        Raises StatusTimeoutError when the deadline passes, StatusConnectError
        when no connection can be made after the retries, and the errors of
        ``check_reply_status`` and ``parse_status`` for replies that are not
        a status page.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.deadline_seconds
        try:
            async with asyncio.timeout_at(deadline):
                sample = await self._read_any_format(deadline)
        except TimeoutError as exc:
            raise StatusTimeoutError(
                f"status page {self.uri} did not reply within {self.deadline_seconds:.3g} s",
                url=self.uri.raw,
            ) from exc
        sample = self._account_for_own_request(sample)
        return replace(sample, poll_duration_seconds=loop.time() - started)

    async def _read_any_format(self, deadline: float) -> PoolSample:
        reply = await self._fetch_checked(JSON_QUERY, deadline)
        try:
            return self._parse(reply)
        except StatusParseError as json_error:
            # Only a 200 reply that is not readable JSON gets here: a status code
            # that means an error was raised by _fetch_checked and is not retried.
            if not self._fallback_logged:
                self._fallback_logged = True
                log.warning(
                    "status_json_unreadable",
                    extra={"fields": {"url": self.uri.raw, "error": str(json_error)}},
                )
            text_reply = await self._fetch_checked(TEXT_QUERY, deadline)
            try:
                return self._parse(text_reply)
            except StatusParseError as text_error:
                raise StatusParseError(
                    f"{json_error}; the plain format failed too: {text_error}", url=self.uri.raw
                ) from text_error

    async def _fetch_checked(self, query: str, deadline: float) -> _Reply:
        reply = await self._fetch_with_retries(query, deadline)
        check_reply_status(
            reply.status_code, reply.body, status_path=self.uri.path, url=self.uri.raw
        )
        return reply

    def _parse(self, reply: _Reply) -> PoolSample:
        return parse_status(
            reply.body,
            content_type=reply.content_type,
            status_path=self.uri.path,
            queue_known=self.uri.queue_visible,
            url=self.uri.raw,
        )

    def _account_for_own_request(self, sample: PoolSample) -> PoolSample:
        """Subtract our own request where the worker list cannot show it.

        Read through the pool's own socket, the status request occupies a
        worker and counts in ``active processes`` (measured on PHP 8.2: an idle
        pool shows 1). A complete worker list shows it directly; without one,
        the reader relies on what the last complete list showed.
        """
        if sample.workers is not None and sample.skipped_workers == 0:
            self._reads_through_pool = sample.status_request_workers > 0
            return sample
        if self._reads_through_pool and sample.status_request_workers == 0:
            return replace(sample, status_request_workers=1)
        return sample

    async def _fetch_with_retries(self, query: str, deadline: float) -> _Reply:
        remaining = deadline - asyncio.get_running_loop().time()
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(StatusConnectError),
            stop=stop_after_attempt(self._connect_attempts) | stop_before_delay(remaining),
            wait=wait_exponential(multiplier=self._connect_backoff_seconds, max=1.0),
            before_sleep=self._log_retry,
            reraise=True,
        )
        return await retrying(self._fetch, query, deadline)

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.debug(
            "status_connect_retry",
            extra={
                "fields": {
                    "url": self.uri.raw,
                    "attempt": state.attempt_number,
                    "sleep_seconds": state.upcoming_sleep,
                    "error": str(error),
                }
            },
        )

    async def _fetch(self, query: str, deadline: float) -> _Reply:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise StatusTimeoutError(
                f"status page {self.uri} did not reply within {self.deadline_seconds:.3g} s",
                url=self.uri.raw,
            )
        if self.uri.is_fastcgi:
            return await self._fetch_fastcgi(query, remaining)
        return await self._fetch_http(query, remaining)

    async def _fetch_fastcgi(self, query: str, timeout_seconds: float) -> _Reply:
        # SCRIPT_NAME and SCRIPT_FILENAME are the status path: php-fpm compares
        # SCRIPT_NAME with pm.status_path and replies 404 without SCRIPT_FILENAME.
        params = request_params(self.uri.path, query)
        try:
            response = await fastcgi_request(
                params,
                host=self.uri.host,
                port=self.uri.port,
                socket_path=self.uri.socket_path,
                timeout_seconds=timeout_seconds,
            )
        except StatusError as exc:
            # fastcgi.py names only the socket; the caller logs errors by URI.
            exc.url = exc.url or self.uri.raw
            raise
        return _Reply(response.status, response.headers.get("content-type"), response.body)

    async def _fetch_http(self, query: str, timeout_seconds: float) -> _Reply:
        assert self._client is not None, "an HTTP reader always has a client"
        # The raw query: php-fpm looks for the words "json" and "full" in it,
        # and httpx's params= would send "json=&full=".
        url = f"{self.uri.raw}?{query}"
        try:
            async with self._client.stream(
                "GET", url, timeout=httpx.Timeout(timeout_seconds)
            ) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise StatusParseError(
                            f"reply from {url} exceeds {MAX_RESPONSE_BYTES} bytes; "
                            "a status page is far smaller",
                            url=self.uri.raw,
                        )
                return _Reply(
                    response.status_code, response.headers.get("content-type"), bytes(body)
                )
        except httpx.ConnectError as exc:
            raise StatusConnectError(f"cannot connect to {url}: {exc}", url=self.uri.raw) from exc
        except httpx.TimeoutException as exc:
            raise StatusTimeoutError(
                f"status page {url} did not reply within {timeout_seconds:.3g} s",
                url=self.uri.raw,
            ) from exc
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise StatusBusyError(
                f"connection to {url} failed mid-request: {exc!r}", url=self.uri.raw
            ) from exc
        except httpx.TransportError as exc:
            raise StatusConnectError(f"request to {url} failed: {exc!r}", url=self.uri.raw) from exc

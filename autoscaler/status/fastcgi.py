"""A small asyncio FastCGI client: one request per connection, a deadline on each.

Protocol: FastCGI 1.0 (the specification by Open Market, 1996), responder role
only. No Python FastCGI client is maintained, and the status page needs only
a GET with an empty body, so this implements just that, plus a request body
for tests and the demo load generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from autoscaler.errors import (
    StatusBusyError,
    StatusConnectError,
    StatusParseError,
    StatusTimeoutError,
)

FCGI_VERSION = 1
FCGI_BEGIN_REQUEST = 1
FCGI_END_REQUEST = 3
FCGI_PARAMS = 4
FCGI_STDIN = 5
FCGI_STDOUT = 6
FCGI_STDERR = 7
FCGI_RESPONDER = 1
REQUEST_ID = 1
MAX_CONTENT = 65535
HEADER = struct.Struct("!BBHHBx")
# A status page of 500 workers is about 200 KB; anything far larger is not one.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FastCGIResponse:
    """A FastCGI responder's reply, split into CGI headers and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    stderr: bytes
    app_status: int


def encode_params(params: Mapping[str, str]) -> bytes:
    """Encode name-value pairs with FastCGI's 1- or 4-byte lengths."""
    out = bytearray()
    for name, value in params.items():
        for item in (name.encode(), value.encode()):
            length = len(item)
            if length < 128:
                out.append(length)
            else:
                out += struct.pack("!I", length | 0x80000000)
        out += name.encode() + value.encode()
    return bytes(out)


def _record(record_type: int, content: bytes) -> bytes:
    padding = -len(content) % 8
    return (
        HEADER.pack(FCGI_VERSION, record_type, REQUEST_ID, len(content), padding)
        + content
        + (b"\0" * padding)
    )


def _stream(record_type: int, content: bytes) -> bytes:
    chunks = [
        _record(record_type, content[offset : offset + MAX_CONTENT])
        for offset in range(0, len(content), MAX_CONTENT)
    ]
    chunks.append(_record(record_type, b""))
    return b"".join(chunks)


def build_request(params: Mapping[str, str], body: bytes = b"") -> bytes:
    begin = struct.pack("!HB5x", FCGI_RESPONDER, 0)
    return (
        _record(FCGI_BEGIN_REQUEST, begin)
        + _stream(FCGI_PARAMS, encode_params(params))
        + _stream(FCGI_STDIN, body)
    )


def request_params(
    script: str,
    query: str = "",
    *,
    method: str = "GET",
    script_filename: str | None = None,
    content_length: int = 0,
) -> dict[str, str]:
    """CGI parameters for a request of ``script``.

    For the status page php-fpm matches SCRIPT_NAME against pm.status_path;
    SCRIPT_FILENAME must be set too, or php-fpm replies "File not found.".
    """
    uri = script + (f"?{query}" if query else "")
    return {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "phpfpm-autoscaler",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": script,
        "SCRIPT_FILENAME": script_filename or script,
        "REQUEST_URI": uri,
        "DOCUMENT_URI": script,
        "QUERY_STRING": query,
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_NAME": "localhost",
        "SERVER_ADDR": "127.0.0.1",
        "SERVER_PORT": "80",
        "CONTENT_LENGTH": str(content_length),
        "CONTENT_TYPE": "application/octet-stream" if content_length else "",
    }


async def fastcgi_request(
    params: Mapping[str, str],
    *,
    host: str | None = None,
    port: int | None = None,
    socket_path: str | None = None,
    body: bytes = b"",
    timeout_seconds: float,
) -> FastCGIResponse:
    """Send one FastCGI request and read the whole reply within ``timeout_seconds``.

    Raises StatusConnectError when no connection can be made, StatusTimeoutError
    when the deadline passes (the connection is closed either way), and
    StatusBusyError when php-fpm closes the connection before ending the
    request.
    """
    target = socket_path or f"{host}:{port}"
    writer: asyncio.StreamWriter | None = None
    completed = False
    try:
        async with asyncio.timeout(timeout_seconds):
            try:
                if socket_path is not None:
                    reader, writer = await asyncio.open_unix_connection(socket_path)
                else:
                    reader, writer = await asyncio.open_connection(host, port)
            except OSError as exc:
                raise StatusConnectError(f"cannot connect to {target}: {exc}") from exc
            writer.write(build_request(params, body))
            await writer.drain()
            response = await _read_response(reader, target)
            completed = True
            return response
    except TimeoutError as exc:
        raise StatusTimeoutError(
            f"no complete FastCGI reply from {target} within {timeout_seconds:.3g} s"
        ) from exc
    except (ConnectionError, OSError) as exc:
        raise StatusBusyError(f"connection to {target} failed mid-request: {exc}") from exc
    finally:
        if writer is not None:
            # After a timeout or an error, abort: a graceful close would first
            # wait to flush data that a stuck peer may never read.
            if completed:
                writer.close()
            else:
                writer.transport.abort()
            with contextlib.suppress(OSError, RuntimeError):
                await writer.wait_closed()


async def _read_response(reader: asyncio.StreamReader, target: str) -> FastCGIResponse:
    stdout = bytearray()
    stderr = bytearray()
    while True:
        try:
            header = await reader.readexactly(HEADER.size)
        except asyncio.IncompleteReadError as exc:
            raise StatusBusyError(
                f"{target} closed the connection before the end of the reply ({len(stdout)} bytes received)"
            ) from exc
        version, record_type, _request_id, length, padding = HEADER.unpack(header)
        if version != FCGI_VERSION:
            raise StatusParseError(
                f"{target} is not a FastCGI server (record version {version}, expected "
                f"{FCGI_VERSION}); check that the status URI names php-fpm's listen address"
            )
        try:
            content = await reader.readexactly(length + padding)
        except asyncio.IncompleteReadError as exc:
            raise StatusBusyError(
                f"{target} closed the connection in the middle of a FastCGI record "
                f"({len(stdout)} bytes of reply received)"
            ) from exc
        content = content[:length]
        if record_type == FCGI_STDOUT:
            stdout += content
        elif record_type == FCGI_STDERR:
            stderr += content
        elif record_type == FCGI_END_REQUEST:
            app_status = struct.unpack("!I", content[:4])[0] if len(content) >= 4 else 0
            return _split(bytes(stdout), bytes(stderr), app_status)
        if len(stdout) + len(stderr) > MAX_RESPONSE_BYTES:
            raise StatusParseError(
                f"reply from {target} exceeds {MAX_RESPONSE_BYTES} bytes; a status page is far smaller"
            )


def _split(stdout: bytes, stderr: bytes, app_status: int) -> FastCGIResponse:
    head, sep, body = stdout.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = stdout.partition(b"\n\n")
    if not sep:
        head, body = b"", stdout
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines():
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    status = 200
    status_header = headers.get("status", "")
    if status_header[:3].isdigit():
        status = int(status_header[:3])
    return FastCGIResponse(status=status, headers=headers, body=body, stderr=stderr, app_status=app_status)

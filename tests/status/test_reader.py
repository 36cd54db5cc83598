"""StatusReader against a real php-fpm (FastCGI on TCP and unix sockets) and, for
replies php-fpm cannot be made to send, against HTTP fakes (respx)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import respx

from autoscaler.errors import (
    StatusAccessError,
    StatusBusyError,
    StatusConnectError,
    StatusParseError,
    StatusTimeoutError,
)
from autoscaler.status.model import PoolSample
from autoscaler.status.reader import StatusReader
from autoscaler.status.uri import parse_status_uri
from tests.conftest import requires_fpm
from tests.fpm import FpmServer, PoolSpec, free_port

CAPTURED = Path(__file__).parents[1] / "fixtures" / "status"
HTTP_URI = "http://127.0.0.1:8080/status"


async def read_once(
    uri: str,
    *,
    deadline_seconds: float = 5.0,
    connect_attempts: int = 3,
    connect_backoff_seconds: float = 0.05,
) -> PoolSample:
    reader = StatusReader(
        parse_status_uri(uri),
        deadline_seconds=deadline_seconds,
        connect_attempts=connect_attempts,
        connect_backoff_seconds=connect_backoff_seconds,
    )
    async with reader:
        return await reader.read()


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def wait_until_busy(server: FpmServer, busy: int) -> None:
    """Wait until the pool shows ``busy`` workers, read through pm.status_listen."""
    uri = server.status_url(via_status_listen=True)
    for _ in range(100):
        if (await read_once(uri)).busy_workers == busy:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the pool never had {busy} busy workers: {server.log()}")


# Real php-fpm -------------------------------------------------------------------------


@requires_fpm
async def test_tcp_idle_pool_subtracts_own_request(fpm: FpmServer) -> None:
    sample = await read_once(fpm.status_url("www"))
    assert sample.pool == "www"
    assert sample.source_format == "json"
    assert sample.workers is not None
    assert sample.status_request_workers == 1
    assert sample.busy_workers == 0
    assert sample.queue_known is True
    assert sample.poll_duration_seconds > 0


@requires_fpm
async def test_unix_idle_pool_queue_unknown(fpm: FpmServer) -> None:
    sample = await read_once(fpm.status_url("sock"))
    assert sample.pool == "sock"
    assert sample.status_request_workers == 1
    assert sample.busy_workers == 0
    assert sample.queue_known is False
    assert sample.queue is None


@requires_fpm
async def test_busy_worker_counted(fpm: FpmServer) -> None:
    long_request = asyncio.create_task(fpm.request("/work.php", "seconds=1.5"))
    try:
        for _ in range(50):
            sample = await read_once(fpm.status_url("www"))
            if sample.busy_workers:
                break
            await asyncio.sleep(0.05)
        assert sample.busy_workers == 1
        assert sample.status_request_workers == 1
    finally:
        await long_request


@requires_fpm
async def test_status_listen_has_no_own_request(
    fpm_factory: Callable[..., FpmServer],
) -> None:
    server = fpm_factory(PoolSpec(status_listen=True))
    sample = await read_once(server.status_url(via_status_listen=True))
    assert sample.pool == "www"
    assert sample.status_request_workers == 0
    assert sample.busy_workers == 0


@requires_fpm
async def test_saturated_pool_times_out(fpm_factory: Callable[..., FpmServer]) -> None:
    server = fpm_factory(
        PoolSpec(max_children=1, start_servers=1, max_spare_servers=1, status_listen=True)
    )
    long_request = asyncio.create_task(server.request("/work.php", "seconds=3"))
    try:
        await wait_until_busy(server, 1)
        with pytest.raises(StatusTimeoutError) as caught:
            await read_once(server.status_url(), deadline_seconds=0.3)
        assert caught.value.saturation_hint is True
        assert caught.value.url == server.status_url()
        # pm.status_listen still replies while the pool is saturated.
        sample = await read_once(server.status_url(via_status_listen=True), deadline_seconds=1.0)
        assert sample.busy_workers == 1
        assert sample.idle_processes == 0
    finally:
        await long_request


@requires_fpm
async def test_timed_out_polls_leak_nothing(fpm_factory: Callable[..., FpmServer]) -> None:
    server = fpm_factory(
        PoolSpec(max_children=1, start_servers=1, max_spare_servers=1, status_listen=True)
    )
    long_request = asyncio.create_task(server.request("/work.php", "seconds=4"))
    try:
        await wait_until_busy(server, 1)
        reader = StatusReader(parse_status_uri(server.status_url()), deadline_seconds=0.05)
        with pytest.raises(StatusTimeoutError):
            await reader.read()  # warm up whatever the event loop opens lazily
        fds_before = open_fd_count()
        tasks_before = len(asyncio.all_tasks())
        timeouts = 0
        for _ in range(30):
            try:
                await reader.read()
            except StatusTimeoutError:
                timeouts += 1
        await asyncio.sleep(0)  # let aborted transports run their close callbacks
        assert timeouts == 30
        assert open_fd_count() <= fds_before
        assert len(asyncio.all_tasks()) <= tasks_before
    finally:
        await long_request


@requires_fpm
async def test_wrong_status_path_is_access_error(fpm: FpmServer) -> None:
    uri = f"tcp://127.0.0.1:{fpm.pool('www').port}/fpm-status"
    with pytest.raises(StatusAccessError, match=r"pm\.status_path = /fpm-status") as caught:
        await read_once(uri)
    assert caught.value.transient is False
    assert caught.value.url == uri


async def test_connection_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="autoscaler.status.reader")
    with pytest.raises(StatusConnectError):
        await read_once(f"tcp://127.0.0.1:{free_port()}/status", connect_attempts=3)
    retries = [r for r in caplog.records if r.getMessage() == "status_connect_retry"]
    assert len(retries) == 2


async def test_missing_unix_socket(tmp_path: Path) -> None:
    with pytest.raises(StatusConnectError, match="absent.sock"):
        await read_once(f"unix://{tmp_path}/absent.sock;/status")


async def test_retries_stop_before_deadline(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="autoscaler.status.reader")
    # Ten attempts with a backoff of 0.2 s and more do not fit into 0.5 s: the
    # reader gives up early with the connection error instead of a timeout.
    with pytest.raises(StatusConnectError):
        await read_once(
            f"tcp://127.0.0.1:{free_port()}/status",
            deadline_seconds=0.5,
            connect_attempts=10,
            connect_backoff_seconds=0.2,
        )
    retries = [r for r in caplog.records if r.getMessage() == "status_connect_retry"]
    assert 1 <= len(retries) < 9


def test_reader_rejects_bad_arguments() -> None:
    uri = parse_status_uri("tcp://127.0.0.1:9000/status")
    with pytest.raises(ValueError, match="deadline_seconds"):
        StatusReader(uri, deadline_seconds=0)
    with pytest.raises(ValueError, match="connect_attempts"):
        StatusReader(uri, deadline_seconds=1, connect_attempts=0)


# HTTP (respx) ---------------------------------------------------------------------


@pytest.fixture
async def http_reader() -> AsyncIterator[StatusReader]:
    reader = StatusReader(parse_status_uri(HTTP_URI), deadline_seconds=2.0)
    yield reader
    await reader.aclose()


def status_route(router: respx.MockRouter) -> respx.Route:
    return router.route(method="GET", host="127.0.0.1", port=8080, path="/status")


async def test_http_reads_json_full(http_reader: StatusReader) -> None:
    body = (CAPTURED / "json_full.json").read_bytes()
    with respx.mock() as router:
        route = status_route(router).respond(
            200, content=body, headers={"content-type": "application/json"}
        )
        sample = await http_reader.read()
    assert route.call_count == 1
    assert route.calls[0].request.url.query == b"json&full"
    assert sample.status_request_workers == 1
    assert sample.busy_workers == 1


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (403, b"Access denied.\n", StatusAccessError),
        (404, b"File not found.\n", StatusAccessError),
        (503, b"Server busy. Please try again later.\n", StatusBusyError),
        (200, b"", StatusBusyError),
    ],
    ids=["403", "404", "503", "empty"],
)
async def test_http_non_status_replies(
    http_reader: StatusReader, status: int, body: bytes, error: type[Exception]
) -> None:
    with respx.mock() as router:
        route = status_route(router).respond(status, content=body)
        with pytest.raises(error):
            await http_reader.read()
    # Neither a bad page nor a busy pool is retried.
    assert route.call_count == 1


async def test_http_falls_back_to_plain_format(http_reader: StatusReader) -> None:
    plain = (CAPTURED / "plain_full.txt").read_bytes()
    with respx.mock() as router:
        route = status_route(router)
        route.side_effect = [
            httpx.Response(200, content=b'{"pool":"www","process man'),
            httpx.Response(200, content=plain),
        ]
        sample = await http_reader.read()
    assert [call.request.url.query for call in route.calls] == [b"json&full", b"full"]
    assert sample.source_format == "text"
    assert sample.busy_workers == 1


async def test_http_both_formats_unreadable(http_reader: StatusReader) -> None:
    with respx.mock() as router:
        route = status_route(router).respond(200, content=b"<html>maintenance</html>")
        with pytest.raises(StatusParseError, match="plain format failed too"):
            await http_reader.read()
    assert route.call_count == 2


async def test_http_without_worker_list_uses_learned_own_request(
    http_reader: StatusReader,
) -> None:
    full = (CAPTURED / "json_full.json").read_bytes()
    short = (CAPTURED / "json.json").read_bytes()
    with respx.mock() as router:
        status_route(router).side_effect = [
            httpx.Response(200, content=full),
            httpx.Response(200, content=short),
        ]
        await http_reader.read()
        sample = await http_reader.read()
    assert sample.workers is None
    assert sample.status_request_workers == 1
    assert sample.active_processes is not None
    assert sample.busy_workers == max(0, sample.active_processes - 1)


async def test_http_without_worker_list_subtracts_nothing_unlearned(
    http_reader: StatusReader,
) -> None:
    with respx.mock() as router:
        status_route(router).respond(200, content=(CAPTURED / "json.json").read_bytes())
        sample = await http_reader.read()
    assert sample.status_request_workers == 0
    assert sample.busy_workers == sample.active_processes


async def test_http_connect_error_retried(http_reader: StatusReader) -> None:
    with respx.mock() as router:
        route = status_route(router).mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(StatusConnectError):
            await http_reader.read()
    assert route.call_count == 3


async def test_http_timeout_not_retried(http_reader: StatusReader) -> None:
    with respx.mock() as router:
        route = status_route(router).mock(side_effect=httpx.ReadTimeout("slow"))
        with pytest.raises(StatusTimeoutError):
            await http_reader.read()
    assert route.call_count == 1


async def test_http_error_status_not_retried_as_plain(http_reader: StatusReader) -> None:
    with respx.mock() as router:
        route = status_route(router).respond(500, content=b"<html>Internal error</html>")
        with pytest.raises(StatusParseError, match="status 500"):
            await http_reader.read()
    assert route.call_count == 1


async def test_http_owned_client_closed() -> None:
    reader = StatusReader(parse_status_uri(HTTP_URI), deadline_seconds=1.0)
    client = reader._client
    assert client is not None
    await reader.aclose()
    assert client.is_closed


async def test_http_shared_client_left_open() -> None:
    async with httpx.AsyncClient() as client:
        reader = StatusReader(parse_status_uri(HTTP_URI), deadline_seconds=1.0, http_client=client)
        await reader.aclose()
        assert not client.is_closed

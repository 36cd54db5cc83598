"""Parser tests on bodies captured from php-fpm 8.2 and on field cases.

tests/fixtures/status/ contains real bodies (regenerate them with
tests/fixtures/status/capture.py); tests/fixtures/cases/ contains bodies from
other PHP versions and broken replies seen in production.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from autoscaler.errors import (
    StatusAccessError,
    StatusBusyError,
    StatusConnectError,
    StatusError,
    StatusParseError,
    StatusTimeoutError,
)
from autoscaler.status import parse
from autoscaler.status.model import PoolSample
from autoscaler.status.parse import POOL_FIELDS, check_reply_status, parse_status
from tests.conftest import SHARED_CASES
from tests.fixtures.status.capture import LONG_REQUEST_QUERY, LONG_REQUEST_SCRIPT

CAPTURED = Path(__file__).parents[1] / "fixtures" / "status"
JSON_PAGES = ("json.json", "json_full.json", "status_listen_json_full.json", "unix_json.json")


def read_parse(
    body: bytes | str, *, queue_known: bool = True, status_path: str = "/status"
) -> PoolSample:
    return parse_status(body, content_type=None, status_path=status_path, queue_known=queue_known)


def split_cgi(raw: bytes) -> tuple[int, bytes]:
    """Return the status code and body of a CGI reply (200 when no Status header)."""
    head, separator, body = raw.partition(b"\r\n\r\n")
    if not separator:
        return 200, raw
    status = 200
    for line in head.decode().splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "status":
            status = int(value.split()[0])
    return status, body


DECODERS = ["json"]
try:
    import orjson  # noqa: F401

    DECODERS.append("orjson")
except ImportError:
    pass


@pytest.fixture(params=DECODERS)
def json_decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test with each JSON decoder the parser can use."""
    if request.param == "json":
        monkeypatch.setattr(parse, "_loads", json.loads)
    else:
        monkeypatch.setattr(parse, "_loads", orjson.loads)
    yield request.param


# Real php-fpm 8.2 bodies ----------------------------------------------------------


@pytest.mark.parametrize("name", JSON_PAGES)
def test_json_pool_fields_match_raw(name: str, json_decoder: str) -> None:
    body = (CAPTURED / name).read_bytes()
    raw = json.loads(body)
    sample = read_parse(body)
    for key, field in POOL_FIELDS.items():
        value = getattr(sample, field.name)
        if key not in raw:
            assert value is None, f"{key} is absent, so {field.name} must be None"
        elif key == "start time":
            assert value == float(raw[key])
        else:
            assert value == raw[key], key
    assert sample.source_format == "json"
    assert sample.plausible, sample.anomalies


def test_json_without_full_has_no_workers() -> None:
    sample = read_parse((CAPTURED / "json.json").read_bytes())
    assert sample.workers is None
    assert sample.busy_workers == sample.active_processes


@pytest.mark.parametrize("name", ["json_full.json", "status_listen_json_full.json"])
def test_json_full_workers_match_raw(name: str, json_decoder: str) -> None:
    body = (CAPTURED / name).read_bytes()
    raw_workers = json.loads(body)["processes"]
    sample = read_parse(body)
    assert sample.workers is not None
    assert len(sample.workers) == len(raw_workers)
    assert sample.skipped_workers == 0
    for worker, raw in zip(sample.workers, raw_workers, strict=True):
        assert worker.pid == raw["pid"]
        assert worker.state == raw["state"]
        assert worker.requests_total == raw["requests"]
        assert worker.request_duration_seconds == raw["request duration"] / 1_000_000
        assert worker.request_uri == raw["request uri"]
        assert worker.last_request_memory_bytes == raw["last request memory"]
        assert worker.last_request_cpu_percent == raw["last request cpu"]


def test_json_full_own_socket_subtracts_status_request() -> None:
    sample = read_parse((CAPTURED / "json_full.json").read_bytes())
    assert sample.workers is not None
    application = [w for w in sample.workers if w.busy and w.request_uri != "/status?json&full"]
    assert sample.status_request_workers == 1
    assert sample.busy_workers == 1
    assert [w.request_uri for w in application] == [f"{LONG_REQUEST_SCRIPT}?{LONG_REQUEST_QUERY}"]


def test_json_full_status_listen_has_no_status_request() -> None:
    sample = read_parse((CAPTURED / "status_listen_json_full.json").read_bytes())
    assert sample.status_request_workers == 0
    assert sample.busy_workers == 1


def test_plain_matches_json_page() -> None:
    plain = read_parse((CAPTURED / "plain.txt").read_bytes())
    from_json = read_parse((CAPTURED / "json.json").read_bytes())
    assert plain.source_format == "text"
    assert plain.pool == from_json.pool
    assert plain.process_manager == from_json.process_manager
    # The plain format prints a date and JSON a Unix time; both are the same start.
    assert plain.start_time_seconds == from_json.start_time_seconds
    assert plain.listen_queue_length == from_json.listen_queue_length
    assert plain.workers is None
    assert plain.plausible


def test_plain_full_reads_worker_blocks() -> None:
    sample = read_parse((CAPTURED / "plain_full.txt").read_bytes())
    assert sample.workers is not None
    assert len(sample.workers) >= 2
    assert all(worker.pid is not None for worker in sample.workers)
    assert sample.status_request_workers == 1
    assert sample.busy_workers == 1
    uris = {worker.request_uri for worker in sample.workers}
    assert f"{LONG_REQUEST_SCRIPT}?{LONG_REQUEST_QUERY}" in uris
    assert "/status?full" in uris


def test_unix_socket_queue_is_unknown() -> None:
    body = (CAPTURED / "unix_json.json").read_bytes()
    assert read_parse(body, queue_known=False).queue is None
    # The zero backlog length gives it away even when the caller expects a queue.
    sample = read_parse(body, queue_known=True)
    assert sample.listen_queue_length == 0
    assert sample.queue_known is False
    assert sample.queue is None


def test_tcp_queue_is_known() -> None:
    sample = read_parse((CAPTURED / "json.json").read_bytes())
    assert sample.queue_known is True
    assert sample.queue == sample.listen_queue


@pytest.mark.parametrize(
    ("name", "kind"),
    [("xml.xml", "XML"), ("html.html", "HTML"), ("openmetrics.txt", "OpenMetrics")],
)
def test_other_formats_rejected(name: str, kind: str) -> None:
    with pytest.raises(StatusParseError, match=kind) as caught:
        read_parse((CAPTURED / name).read_bytes())
    assert "?json&full" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "status"), [("access_denied.cgi", 403), ("file_not_found.cgi", 404)]
)
def test_real_non_status_replies(name: str, status: int) -> None:
    code, body = split_cgi((CAPTURED / name).read_bytes())
    assert code == status
    with pytest.raises(StatusAccessError, match=r"pm\.status_path = /status"):
        check_reply_status(code, body, status_path="/status")
    with pytest.raises(StatusAccessError, match=r"pm\.status_path = /status"):
        read_parse(body)


# Broken JSON from older php-fpm ---------------------------------------------


def test_broken_json_reads_pool_fields(json_decoder: str) -> None:
    sample = read_parse((SHARED_CASES / "json_full_broken_escaping.txt").read_bytes())
    assert sample.pool == "www"
    assert sample.start_time_seconds == 1718000000.0
    assert sample.accepted_connections_total == 52311
    assert sample.max_listen_queue == 2
    assert sample.listen_queue_length == 511
    assert sample.idle_processes == 2
    assert sample.active_processes == 2
    assert sample.total_processes == 4
    assert sample.max_children_reached_total == 1
    assert sample.slow_requests_total == 0


def test_broken_json_repairs_worker_strings(json_decoder: str) -> None:
    sample = read_parse((SHARED_CASES / "json_full_broken_escaping.txt").read_bytes())
    assert sample.workers is not None
    assert sample.skipped_workers == 0
    uris = [worker.request_uri for worker in sample.workers]
    assert uris == [
        '/search?q="red shoes"&page=2',
        "/report?title=line one\nline two",
        "/status?json&full",
        "/caf\u00e9/menu?x=1\\2",
    ]
    assert [worker.state for worker in sample.workers] == ["Running", "Idle", "Running", "Idle"]
    assert sample.workers[1].last_request_memory_bytes == 4194304
    assert sample.status_request_workers == 1
    assert sample.busy_workers == 1


def test_broken_json_skips_unreadable_worker() -> None:
    sample = read_parse((SHARED_CASES / "json_full_broken_truncated_worker.txt").read_bytes())
    assert sample.workers is not None
    assert [worker.pid for worker in sample.workers] == [2101, 2102, 2103]
    assert sample.skipped_workers == 1
    # With a worker missing, busy comes from 'active processes' less our request.
    assert sample.active_processes == 2
    assert sample.busy_workers == 1
    assert sample.accepted_connections_total == 52311


@pytest.mark.parametrize(
    "body",
    ['{"pool":"www","proc', '{"error": "not found"}', "{", '{"pool":"www"}'],
    ids=["truncated", "other-json", "brace", "no-numbers"],
)
def test_unreadable_json_raises(body: str) -> None:
    with pytest.raises(StatusParseError, match="status page|cannot be read"):
        read_parse(body)


# The field set differs by PHP version ------------------------------------------


def test_php53_text_without_slow_requests() -> None:
    sample = read_parse((SHARED_CASES / "text_php53_no_slow_requests.txt").read_bytes())
    assert sample.pool == "legacy"
    assert sample.slow_requests_total is None
    assert sample.memory_peak_bytes is None
    assert sample.accepted_connections_total == 4
    assert sample.max_children_reached_total == 0
    expected = datetime(2016, 6, 14, 23, 35, 42, tzinfo=timezone(timedelta(hours=3)))
    assert sample.start_time_seconds == expected.timestamp()


def test_php84_text_with_memory_peak() -> None:
    sample = read_parse((SHARED_CASES / "text_php84_memory_peak.txt").read_bytes())
    assert sample.memory_peak_bytes == 81326080
    assert sample.slow_requests_total == 0
    assert sample.process_manager == "ondemand"


# "memory peak" (PHP 8.4) is absent from the 8.2 page already.
@pytest.mark.parametrize("key", sorted(set(POOL_FIELDS) - {"pool", "memory peak"}))
def test_missing_json_key_is_none(key: str) -> None:
    raw: dict[str, Any] = json.loads((CAPTURED / "json.json").read_bytes())
    del raw[key]
    sample = read_parse(json.dumps(raw))
    assert getattr(sample, POOL_FIELDS[key].name) is None


def test_unknown_keys_ignored() -> None:
    raw: dict[str, Any] = json.loads((CAPTURED / "json.json").read_bytes())
    raw["memory peak"] = 81326080
    raw["some future key"] = {"nested": [1, 2]}
    sample = read_parse(json.dumps(raw))
    assert sample.memory_peak_bytes == 81326080
    assert sample.accepted_connections_total == raw["accepted conn"]


# Worker states -----------------------------------------------------------------

STATE_ROWS = [
    ("Idle", False),
    ("Running", True),
    ("Reading headers", True),
    ("Getting request information", True),
    ("Getting request informations", True),
    ("Finishing", True),
    ("Ending", True),
    ("Creating", True),
    ("Sleeping", True),  # not a php-fpm state: busy, and reported as unknown
]


def _json_page_with_state(state: str) -> str:
    raw: dict[str, Any] = json.loads((CAPTURED / "json_full.json").read_bytes())
    for worker in raw["processes"]:
        if worker["request uri"].startswith(LONG_REQUEST_SCRIPT):
            worker["state"] = state
    return json.dumps(raw)


def _plain_page_with_state(state: str) -> str:
    text = (CAPTURED / "plain_full.txt").read_text()
    blocks = text.split("************************")
    for index, block in enumerate(blocks):
        if f"{LONG_REQUEST_SCRIPT}?" in block:
            blocks[index] = block.replace("state:                Running", f"state: {state}")
    return "************************".join(blocks)


@pytest.mark.parametrize(("state", "busy"), STATE_ROWS)
@pytest.mark.parametrize("page", [_json_page_with_state, _plain_page_with_state])
def test_worker_state_busy(state: str, busy: bool, page: Any) -> None:
    sample = read_parse(page(state))
    assert sample.workers is not None
    worker = next(
        w for w in sample.workers if (w.request_uri or "").startswith(LONG_REQUEST_SCRIPT)
    )
    assert worker.state == state
    assert worker.busy is busy
    assert sample.busy_workers == (1 if busy else 0)
    assert sample.unknown_states == (("Sleeping",) if state == "Sleeping" else ())


def test_all_states_case() -> None:
    sample = read_parse((SHARED_CASES / "json_full_worker_states.json").read_bytes())
    assert sample.workers is not None
    assert len(sample.workers) == 8
    assert sample.busy_workers == 6
    assert sample.unknown_states == ()
    finishing = next(w for w in sample.workers if w.state == "Finishing")
    assert finishing.request_duration_seconds == 259200.0  # three days, in seconds
    reading = next(w for w in sample.workers if w.state == "Reading headers")
    assert reading.request_uri is None
    assert reading.request_method is None


# A saturated pool on a unix socket ----------------------------------------------


@pytest.mark.parametrize("queue_known", [False, True])
def test_saturated_unix_pool_queue_unknown(queue_known: bool) -> None:
    sample = read_parse(
        (SHARED_CASES / "json_saturated_unix.json").read_bytes(), queue_known=queue_known
    )
    assert sample.queue is None
    assert sample.listen_queue == 0
    assert sample.idle_processes == 0
    assert sample.active_processes == sample.total_processes == 4
    assert sample.busy_workers == 4


# Replies that are not a status page ---------------------------------------------

REPLY_ROWS = [
    ("reply_access_denied.cgi", 403, StatusAccessError, "security.limit_extensions"),
    ("reply_file_not_found.cgi", 404, StatusAccessError, "SCRIPT_FILENAME"),
    ("reply_server_busy.cgi", 503, StatusBusyError, "busy"),
    ("reply_empty.cgi", 200, StatusBusyError, "empty body"),
]


@pytest.mark.parametrize(("name", "status", "error", "words"), REPLY_ROWS)
def test_non_status_reply_error(
    name: str, status: int, error: type[StatusError], words: str
) -> None:
    code, body = split_cgi((SHARED_CASES / name).read_bytes())
    assert code == status
    if code != 200:
        with pytest.raises(error, match=words):
            check_reply_status(code, body, status_path="/status")
    with pytest.raises(error, match=words):
        read_parse(body)


def test_non_status_reply_kinds() -> None:
    assert StatusAccessError.transient is False
    assert StatusBusyError.transient is True
    assert StatusBusyError.saturation_hint is True
    assert StatusParseError.transient is False


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, StatusAccessError),
        (502, StatusConnectError),
        (504, StatusTimeoutError),
        (500, StatusParseError),
        (301, StatusParseError),
    ],
)
def test_other_status_codes(status: int, error: type[StatusError]) -> None:
    with pytest.raises(error, match=str(status)):
        check_reply_status(status, b"<html>proxy page</html>", status_path="/status")


def test_check_reply_status_accepts_200() -> None:
    check_reply_status(200, b"{}", status_path="/status")


def test_garbage_body_names_first_bytes() -> None:
    with pytest.raises(StatusParseError, match="Hello from nginx"):
        read_parse(b"Hello from nginx, this is not php-fpm")


# Sanity -----------------------------------------------------------------------------


def _json_page(**changes: int) -> str:
    raw: dict[str, Any] = json.loads((CAPTURED / "json.json").read_bytes())
    raw.update({key.replace("_", " "): value for key, value in changes.items()})
    return json.dumps(raw)


def test_active_above_total_is_implausible() -> None:
    sample = read_parse(_json_page(active_processes=9, total_processes=4, idle_processes=0))
    assert sample.active_processes == 9
    assert not sample.plausible
    assert any("'active processes' (9)" in text for text in sample.anomalies)


def test_negative_count_is_implausible() -> None:
    sample = read_parse(_json_page(idle_processes=-1))
    assert sample.idle_processes == -1
    assert not sample.plausible
    assert any("negative" in text for text in sample.anomalies)


def test_wrapped_counter_is_implausible() -> None:
    sample = read_parse(_json_page(listen_queue=2**64 - 1))
    assert not sample.plausible
    assert any("unsigned" in text for text in sample.anomalies)


def test_invalid_value_is_none_and_implausible() -> None:
    raw: dict[str, Any] = json.loads((CAPTURED / "json.json").read_bytes())
    raw["accepted conn"] = "many"
    sample = read_parse(json.dumps(raw))
    assert sample.accepted_connections_total is None
    assert any("'accepted conn'" in text for text in sample.anomalies)

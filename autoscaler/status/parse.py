"""Parse php-fpm status pages into ``PoolSample``.

Reads the JSON format (``?json``, ``?json&full``) and the plain text format
(no query, ``?full``). Raw php-fpm keys are mapped to field names in two
tables, ``POOL_FIELDS`` and ``WORKER_FIELDS``, and nowhere else. A key that
is missing stays ``None`` (unknown, never 0) and unknown keys are ignored,
because the field set differs by PHP version (PHP 5.3 has no
``slow requests``, PHP 8.4 adds ``memory peak``).

Older php-fpm versions wrote ``request uri``, ``user`` and ``script`` into
the JSON without escaping them, so a quote, a backslash or a newline in a
URI makes the page invalid JSON. Such a page is repaired entry by entry: the
keys are fixed and known, so each value ends where the next known key
starts. A worker entry that cannot be repaired is skipped and counted in
``PoolSample.skipped_workers``, and the pool-level numbers, which come
before ``"processes"``, are still read.

Replies that are not a status page raise a typed ``StatusError`` instead of
producing a row of zeros. ``check_reply_status`` does the same for the HTTP
or CGI status code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Final, NamedTuple

from autoscaler.errors import (
    StatusAccessError,
    StatusBusyError,
    StatusConnectError,
    StatusParseError,
    StatusTimeoutError,
)
from autoscaler.status.model import KNOWN_STATES, PoolSample, WorkerSample

Converter = Callable[[object], Any]

# orjson decodes a 500-worker ``json&full`` page about 3 times faster than the
# standard library (bench/parse_bench.py). Both raise a ValueError subclass on
# invalid JSON. orjson also rejects integers beyond 64 bits, which the repair
# path then reads.
_loads: Callable[[str], Any]
try:
    from orjson import loads as _orjson_loads
except ImportError:  # NOTE: orjson is optional; without it parsing is slower, not different.
    _loads = json.loads
else:
    _loads = _orjson_loads


class Field(NamedTuple):
    """Target field and converter of one php-fpm key."""

    name: str  # the PoolSample or WorkerSample field
    convert: Converter  # raises ValueError for a value that cannot be read
    # The type a JSON value has when it needs no conversion, so the common case
    # costs no call (a 500-worker page has 4,500 worker values); None if every
    # value is converted.
    ready_type: type | None


# A value this large is a negative number printed as unsigned: no real
# counter of a php-fpm pool gets near it.
_WRAPPED_MINIMUM: Final = 2**62


def _to_int(value: object) -> int:
    if type(value) is int:
        return value
    if isinstance(value, str):
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"{value!r} is not a whole number")


def _to_float(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueError(f"{value!r} is not a number")


def _microseconds_to_seconds(value: object) -> float:
    # php-fpm reports ``request duration`` in microseconds (PHP 8.2: a request
    # read 1.007 s after it started showed 1002645).
    return _to_int(value) / 1_000_000


def _to_text(value: object) -> str:
    if isinstance(value, str):
        return value.strip()
    raise ValueError(f"{value!r} is not a string")


def _to_optional_text(value: object) -> str | None:
    # php-fpm prints "-" for a request field it does not have.
    text = _to_text(value)
    return None if text == "-" else text


_MONTHS: Final = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}
# php-fpm 8.2 prints ``start time`` as a date with an English month and a UTC
# offset in the plain and HTML formats, and as a Unix time in JSON and XML.
_FPM_DATE_RE: Final = re.compile(
    r"(\d{1,2})/([A-Za-z]{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2})\s+([+-])(\d{2})(\d{2})"
)


def _to_unix_time(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = _to_text(value)
    if text.isdigit():
        return float(text)
    match = _FPM_DATE_RE.fullmatch(text)
    month = _MONTHS.get(match.group(2).title()) if match else None
    if match is None or month is None:
        raise ValueError(f"{value!r} is neither a Unix time nor a date like 04/Dec/2026:19:16:10 +0000")
    day, _, year, hour, minute, second, sign, offset_hours, offset_minutes = match.groups()
    offset = timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
    zone = timezone(offset if sign == "+" else -offset)
    moment = datetime(int(year), month, int(day), int(hour), int(minute), int(second), tzinfo=zone)
    return moment.timestamp()


# The one mapping from php-fpm's pool-level keys to PoolSample fields.
POOL_FIELDS: Final[Mapping[str, Field]] = {
    "pool": Field("pool", _to_text, str),
    "process manager": Field("process_manager", _to_text, str),
    "start time": Field("start_time_seconds", _to_unix_time, float),
    "start since": Field("start_since_seconds", _to_int, int),
    "accepted conn": Field("accepted_connections_total", _to_int, int),
    "listen queue": Field("listen_queue", _to_int, int),
    "max listen queue": Field("max_listen_queue", _to_int, int),
    "listen queue len": Field("listen_queue_length", _to_int, int),
    "idle processes": Field("idle_processes", _to_int, int),
    "active processes": Field("active_processes", _to_int, int),
    "total processes": Field("total_processes", _to_int, int),
    "max active processes": Field("max_active_processes", _to_int, int),
    "max children reached": Field("max_children_reached_total", _to_int, int),
    "slow requests": Field("slow_requests_total", _to_int, int),
    "memory peak": Field("memory_peak_bytes", _to_int, int),
}

# The one mapping from the keys of a worker block (``full``) to WorkerSample
# fields. The plain format spells "request URI"; keys are compared in lower case.
WORKER_FIELDS: Final[Mapping[str, Field]] = {
    "pid": Field("pid", _to_int, int),
    "state": Field("state", _to_text, str),
    "start since": Field("start_since_seconds", _to_int, int),
    "requests": Field("requests_total", _to_int, int),
    "request duration": Field("request_duration_seconds", _microseconds_to_seconds, None),
    "request method": Field("request_method", _to_optional_text, None),
    "request uri": Field("request_uri", _to_optional_text, None),
    "last request cpu": Field("last_request_cpu_percent", _to_float, float),
    "last request memory": Field("last_request_memory_bytes", _to_int, int),
}

_POOL_NUMBER_KEYS: Final = frozenset(POOL_FIELDS) - {"pool", "process manager"}
_POOL_FIELD_NAMES: Final = tuple(field.name for field in POOL_FIELDS.values())


# Replies that are not a status page -------------------------------------------


def _access_denied_message(where: str, status_path: str | None) -> str:
    path = status_path or "the status path"
    return (
        f"{where} replied 'Access denied.' (403): php-fpm did not recognise {path} as its "
        f"status page, ran it as a script and rejected it (security.limit_extensions). "
        f"Set pm.status_path = {path} in the pool, or correct the path of the status URI; "
        "over HTTP, also check that the web server passes the request to php-fpm and "
        "allows it from the agent's address"
    )


def _not_found_message(where: str, status_path: str | None) -> str:
    path = status_path or "the status path"
    return (
        f"{where} replied 'File not found.' (404): php-fpm did not recognise {path} as its "
        f"status page and found no script of that name (php-fpm logs 'Primary script "
        f"unknown'). Set pm.status_path = {path} in the pool, or correct the path of the "
        "status URI; over HTTP, the web server must send SCRIPT_NAME and SCRIPT_FILENAME "
        "equal to the status path and allow the agent's address"
    )


def check_reply_status(
    status_code: int, body: bytes | str, *, status_path: str | None, url: str | None = None
) -> None:
    """Raise the StatusError that a non-200 HTTP or CGI status code means.

    403 and 404 are configuration errors (StatusAccessError), 503 is a busy
    pool (StatusBusyError), 502 an unreachable php-fpm behind a web server
    (StatusConnectError) and 504 a timeout behind one (StatusTimeoutError).
    Any other status than 200 raises StatusParseError.
    """
    if status_code == 200:
        return
    where = url or "the status page"
    if status_code == 403:
        raise StatusAccessError(_access_denied_message(where, status_path), url=url)
    if status_code == 404:
        raise StatusAccessError(_not_found_message(where, status_path), url=url)
    if status_code in (401, 407):
        raise StatusAccessError(
            f"{where} replied {status_code}: it requires authentication, which the agent "
            "does not send; allow the agent's address without authentication",
            url=url,
        )
    if status_code == 503:
        raise StatusBusyError(f"{where} replied 503 (server busy); the pool may be saturated", url=url)
    if status_code == 502:
        raise StatusConnectError(f"{where} replied 502: the web server could not reach php-fpm", url=url)
    if status_code == 504:
        raise StatusTimeoutError(
            f"{where} replied 504: php-fpm did not respond to the web server in time", url=url
        )
    raise StatusParseError(
        f"{where} replied with status {status_code}, expected 200; the reply starts with {_head(body)!r}",
        url=url,
    )


def _head(body: bytes | str, size: int = 80) -> str:
    text = body if isinstance(body, str) else body[: size * 4].decode("utf-8", errors="replace")
    return text[:size]


def _reject_non_status_body(
    text: str, content_type: str | None, status_path: str | None, url: str | None
) -> None:
    where = url or "the status page"
    if not text:
        raise StatusBusyError(f"{where} replied with an empty body; the pool may be saturated", url=url)
    if text.startswith("Access denied."):
        raise StatusAccessError(_access_denied_message(where, status_path), url=url)
    if text.startswith("File not found."):
        raise StatusAccessError(_not_found_message(where, status_path), url=url)
    if text.startswith("Server busy"):
        raise StatusBusyError(f"{where} replied 'Server busy'; the pool may be saturated", url=url)
    kind = None
    if text.startswith("<"):
        kind = "HTML" if "<html" in text[:500].lower() else "XML"
    elif text.startswith("#") and "phpfpm_" in text[:2000]:
        kind = "OpenMetrics"
    if kind is not None:
        raise StatusParseError(
            f"{where} replied with the {kind} status format (content type {content_type!r}); "
            "the agent reads the JSON and plain text formats only. Check that the query "
            "?json&full reaches php-fpm unchanged (a web server may rewrite or drop it)",
            url=url,
        )


# JSON -----------------------------------------------------------------------------

_PROCESSES_RE: Final = re.compile(r',\s*"processes"\s*:\s*\[')
_ENTRY_START_RE: Final = re.compile(r'\{\s*"pid"\s*:')
_LIST_END_RE: Final = re.compile(r"\]\s*\}\s*$")
_NUMBER_RE: Final = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_ESCAPE_RE: Final = re.compile(r'\\(["\\/bfnrt]|u[0-9a-fA-F]{4})')
_SIMPLE_ESCAPES: Final = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


def _key_pattern(keys: Mapping[str, object]) -> re.Pattern[str]:
    names = "|".join(re.escape(key) for key in sorted(keys, key=len, reverse=True))
    return re.compile(r'[{,]\s*"(' + names + r')"\s*:\s*')


# Worker keys that php-fpm writes but the agent does not use. The repair
# needs them all, because a value ends where the next key starts.
_UNMAPPED_WORKER_KEYS: Final = ("start time", "content length", "user", "script")
_POOL_KEY_RE: Final = _key_pattern(POOL_FIELDS)
_WORKER_KEY_RE: Final = _key_pattern({**WORKER_FIELDS, **dict.fromkeys(_UNMAPPED_WORKER_KEYS)})


def _unescape_leniently(raw: str) -> str:
    """Decode JSON escapes and keep everything else, a lone backslash included."""

    def replace(match: re.Match[str]) -> str:
        escape = match.group(1)
        if escape[0] == "u":
            return chr(int(escape[1:], 16))
        return _SIMPLE_ESCAPES[escape]

    return _ESCAPE_RE.sub(replace, raw)


def _scan_value(raw: str) -> object:
    if raw.startswith('"'):
        end = raw.rfind('"')
        if end == 0:
            raise ValueError("unterminated string")
        return _unescape_leniently(raw[1:end])
    match = _NUMBER_RE.match(raw)
    if match is None:
        raise ValueError(f"{raw[:20]!r} is not a JSON number or string")
    number = match.group()
    return int(number) if match.group(1) is None and match.group(2) is None else float(number)


def _scan_object(text: str, key_pattern: re.Pattern[str]) -> dict[str, object]:
    """Read ``"key":value`` pairs of known keys from invalid JSON.

    php-fpm writes every key, so a value ends where the next known key
    starts. Quotes, newlines and backslashes inside a string value are kept.
    """
    matches = list(key_pattern.finditer(text))
    found: dict[str, object] = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        try:
            value = _scan_value(text[match.end() : end].strip())
        except ValueError:
            continue
        found.setdefault(match.group(1), value)
    return found


def _loads_object(text: str) -> dict[str, Any] | None:
    try:
        value = _loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _read_json(text: str, where: str, url: str | None) -> tuple[dict[str, Any], list[Any] | None]:
    document = _loads_object(text)
    if document is not None:
        processes = document.get("processes")
        if processes is None:
            return document, None
        if not isinstance(processes, list):
            raise StatusParseError(f"{where}: 'processes' is not a list", url=url)
        return document, processes
    return _read_broken_json(text, where, url)


def _read_broken_json(text: str, where: str, url: str | None) -> tuple[dict[str, Any], list[Any] | None]:
    match = _PROCESSES_RE.search(text)
    head = text[: match.start()] if match else text
    pool = _loads_object(head.rstrip().rstrip("}") + "}") or _scan_object(head, _POOL_KEY_RE)
    if "pool" not in pool or not _POOL_NUMBER_KEYS & pool.keys():
        raise StatusParseError(
            f"{where} replied with JSON that cannot be read, not even its pool-level "
            f"fields; it starts with {_head(text)!r}",
            url=url,
        )
    if match is None:
        return pool, None
    tail = text[match.end() :]
    starts = [entry.start() for entry in _ENTRY_START_RE.finditer(tail)]
    if not starts:
        # "processes":[] is a pool without workers; any other remainder is unreadable.
        return pool, [] if _LIST_END_RE.fullmatch(tail.strip()) else None
    entries: list[Any] = []
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(tail)
        chunk = _LIST_END_RE.sub("", tail[start:end].rstrip()).rstrip().rstrip(",")
        entries.append(_loads_object(chunk) or _scan_object(chunk, _WORKER_KEY_RE))
    return pool, entries


# Plain text -----------------------------------------------------------------------


def _read_text(text: str) -> tuple[dict[str, str], list[dict[str, str]] | None]:
    """Split the plain format into the pool block and the worker blocks.

    Blocks are separated by lines of asterisks. The first ``key: value`` of a
    block wins, so a request URI that contains a newline cannot replace a
    worker's pid or state, which php-fpm prints before the URI.
    """
    blocks: list[dict[str, str]] = [{}]
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.strip("*"):
            blocks.append({})
            continue
        key, separator, value = line.partition(":")
        if separator:
            blocks[-1].setdefault(key.strip().lower(), value.strip())
    return blocks[0], (blocks[1:] if len(blocks) > 1 else None)


# Building the sample -------------------------------------------------------------


_FieldItems = tuple[tuple[str, str, Converter, type | None], ...]
_POOL_ITEMS: Final[_FieldItems] = tuple((key, *field) for key, field in POOL_FIELDS.items())
_WORKER_ITEMS: Final[_FieldItems] = tuple((key, *field) for key, field in WORKER_FIELDS.items())


def _convert(raw: Mapping[str, object], items: _FieldItems, anomalies: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    get = raw.get
    for key, name, convert, ready_type in items:
        value = get(key)
        if value is None:
            continue
        if type(value) is ready_type:
            values[name] = value
            continue
        try:
            values[name] = convert(value)
        except ValueError:
            owner = f"worker {get('pid')!r}: " if items is _WORKER_ITEMS else ""
            anomalies.append(f"{owner}{key!r} is {value!r}, which is not a valid value")
    return values


def _check_pool_values(values: Mapping[str, Any], anomalies: list[str]) -> None:
    for key, field in POOL_FIELDS.items():
        value = values.get(field.name)
        if type(value) is not int:
            continue
        if value < 0:
            anomalies.append(f"{key!r} is {value}, but a count cannot be negative")
        elif value >= _WRAPPED_MINIMUM:
            anomalies.append(f"{key!r} is {value}, a negative number printed as unsigned")
    active = values.get("active_processes")
    idle = values.get("idle_processes")
    total = values.get("total_processes")
    if total is not None:
        if active is not None and active > total:
            anomalies.append(f"'active processes' ({active}) is above 'total processes' ({total})")
        if idle is not None and idle > total:
            anomalies.append(f"'idle processes' ({idle}) is above 'total processes' ({total})")


def _build_workers(
    raw_workers: list[Any], anomalies: list[str]
) -> tuple[tuple[WorkerSample, ...], int, set[str]]:
    workers: list[WorkerSample] = []
    skipped = 0
    unknown_states: set[str] = set()
    for raw in raw_workers:
        if not isinstance(raw, dict):
            skipped += 1
            continue
        fast = _plain_json_worker(raw)
        if fast is not None:
            if fast.state not in KNOWN_STATES:
                unknown_states.add(fast.state)
            workers.append(fast)
            continue
        values = _convert(raw, _WORKER_ITEMS, anomalies)
        state = values.get("state")
        if not state:
            # Without a state the worker can be counted neither busy nor idle.
            skipped += 1
            continue
        if state not in KNOWN_STATES:
            unknown_states.add(state)
        for name in ("requests_total", "request_duration_seconds", "last_request_memory_bytes"):
            number = values.get(name)
            if number is not None and number < 0:
                anomalies.append(f"worker {values.get('pid')}: {name} is {number}, below 0")
        workers.append(WorkerSample(**values))
    return tuple(workers), skipped, unknown_states


def _plain_json_worker(raw: Mapping[str, Any]) -> WorkerSample | None:
    """Build a worker from a JSON block in php-fpm's usual form, or return None.

    The common case of a ``json&full`` page, taken without the generic key
    table because a 500-worker page has 4,500 worker values. Anything
    unusual (a missing key, another type, a negative or wrapped number, an
    empty state) returns None, and the caller takes the generic path, which
    converts, checks and records anomalies.
    """
    try:
        pid = raw["pid"]
        state = raw["state"]
        since = raw["start since"]
        requests = raw["requests"]
        duration = raw["request duration"]
        method = raw["request method"]
        uri = raw["request uri"]
        cpu = raw["last request cpu"]
        memory = raw["last request memory"]
    except KeyError:
        return None
    if not (
        type(pid) is int
        and type(since) is int
        and type(requests) is int
        and type(duration) is int
        and type(memory) is int
        and type(state) is str
        and type(method) is str
        and type(uri) is str
        and (type(cpu) is float or type(cpu) is int)
    ):
        return None
    if not state or min(pid, since, requests, duration, memory) < 0:
        return None
    if max(requests, duration, memory) >= _WRAPPED_MINIMUM:
        return None
    return WorkerSample(
        pid=pid,
        state=state,
        requests_total=requests,
        request_duration_seconds=duration / 1_000_000,
        request_method=None if method == "-" else method,
        request_uri=None if uri == "-" else uri,
        last_request_cpu_percent=float(cpu),
        last_request_memory_bytes=memory,
        start_since_seconds=since,
    )


def _count_status_requests(workers: tuple[WorkerSample, ...], status_path: str | None) -> int:
    """Count busy workers serving the status page (our own poll among them)."""
    if not status_path:
        return 0
    count = 0
    for worker in workers:
        uri = worker.request_uri
        if worker.busy and uri is not None and uri.partition("?")[0] == status_path:
            count += 1
    return count


def parse_status(
    body: bytes | str,
    *,
    content_type: str | None,
    status_path: str | None,
    queue_known: bool,
    poll_duration_seconds: float = 0.0,
    url: str | None = None,
) -> PoolSample:
    """Parse one status page body (JSON or plain text, with or without ``full``).

    ``status_path`` is the path the page was requested with; busy workers
    serving it are counted in ``status_request_workers``. ``queue_known`` is
    False where the listen queue cannot be seen (unix sockets). ``url``
    only names the source in error messages.

    Raises StatusAccessError for "Access denied." and "File not found.",
    StatusBusyError for "Server busy" and an empty body, and StatusParseError
    for anything else that is not a JSON or plain text status page.
    """
    where = url or "the status page"
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    text = text.lstrip("\ufeff").strip()
    _reject_non_status_body(text, content_type, status_path, url)

    raw_workers: list[Any] | None
    raw_pool: Mapping[str, Any]
    if text.startswith("{"):
        source_format = "json"
        raw_pool, raw_workers = _read_json(text, where, url)
    elif re.match(r"pool\s*:", text):
        source_format = "text"
        raw_pool, raw_workers = _read_text(text)
    else:
        raise StatusParseError(
            f"{where} did not reply with a php-fpm status page (content type "
            f"{content_type!r}); the reply starts with {_head(text)!r}",
            url=url,
        )

    anomalies: list[str] = []
    values: dict[str, Any] = dict.fromkeys(_POOL_FIELD_NAMES)
    values.update(_convert(raw_pool, _POOL_ITEMS, anomalies))
    if values["pool"] is None or all(raw_pool.get(key) is None for key in _POOL_NUMBER_KEYS):
        raise StatusParseError(
            f"{where} replied with {source_format} that has no 'pool' name or no pool-level "
            f"numbers, so it is not a php-fpm status page; it starts with {_head(text)!r}",
            url=url,
        )
    _check_pool_values(values, anomalies)

    workers: tuple[WorkerSample, ...] | None = None
    skipped = 0
    unknown_states: set[str] = set()
    if raw_workers is not None:
        workers, skipped, unknown_states = _build_workers(raw_workers, anomalies)

    # A unix socket reports 0 for all three queue fields (measured on PHP 8.2),
    # while a TCP listener has a backlog above 0. So a zero length means the
    # queue is invisible, even when the URI is TCP: a pool on a unix socket can
    # serve its status page through pm.status_listen on TCP.
    if values["listen_queue_length"] == 0:
        queue_known = False

    return PoolSample(
        **values,
        workers=workers,
        skipped_workers=skipped,
        status_request_workers=_count_status_requests(workers or (), status_path),
        source_format=source_format,
        queue_known=queue_known,
        poll_duration_seconds=poll_duration_seconds,
        unknown_states=tuple(sorted(unknown_states)),
        anomalies=tuple(anomalies),
    )

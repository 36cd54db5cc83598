"""Logging to stdout as one JSON object (or one text line) per event.

Code logs an event name as the message and its data under ``extra={"fields": {...}}``::

    log.info("decision", extra={"fields": {"pool": "www", "current": 4, "target": 6}})

Identical repeats (same logger, level, event and fields) within
``repeat_window_seconds`` are dropped and counted; the next line that gets
through carries ``repeated`` with the count.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from autoscaler.settings import LogFormat

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(_fields(record))
        repeated = getattr(record, "repeated", 0)
        if repeated:
            entry["repeated"] = repeated
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"{stamp}Z", record.levelname.lower(), record.getMessage()]
        fields = _fields(record)
        repeated = getattr(record, "repeated", 0)
        if repeated:
            fields["repeated"] = repeated
        parts += [f"{key}={value}" for key, value in fields.items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class RepeatFilter(logging.Filter):
    """Drop identical lines repeated within a window; count them on the next one let through."""

    def __init__(
        self, repeat_window_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window = repeat_window_seconds
        self.clock = clock
        self.seen: dict[tuple[Any, ...], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (
            record.name,
            record.levelno,
            record.getMessage(),
            json.dumps(_fields(record), sort_keys=True, default=str),
        )
        now = self.clock()
        last = self.seen.get(key)
        if last is not None and now - last[0] < self.window:
            self.seen[key] = (last[0], last[1] + 1)
            return False
        record.repeated = last[1] if last is not None else 0
        self.seen[key] = (now, 0)
        if len(self.seen) > 4096:
            self.seen.clear()
        return True


def configure_logging(log_format: LogFormat, level: int, *, stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if log_format is LogFormat.JSON else TextFormatter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request at INFO: one line per poll is noise here.
    logging.getLogger("httpx").setLevel(logging.WARNING)

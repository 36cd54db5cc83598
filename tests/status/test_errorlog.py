"""Saturation warnings read from php-fpm's error log, in every wording php-fpm uses."""

from __future__ import annotations

from pathlib import Path

from autoscaler.status.errorlog import parse_error_log, summarize

SAMPLE = Path(__file__).parents[1] / "fixtures" / "cases" / "error_log_saturation_warnings.log"


def test_both_max_children_wordings() -> None:
    counts = summarize(parse_error_log(SAMPLE.read_text().splitlines()))
    assert counts[("max_children", "www")] == 2  # dynamic: "pm.max_children setting"
    assert counts[("max_children", "shop.example.test")] == 2  # ondemand: "max_children setting"


def test_pool_name_with_space_and_limit() -> None:
    warnings = parse_error_log(SAMPLE.read_text().splitlines())
    busy = [w for w in warnings if w.kind == "seems_busy"]
    assert [w.pool for w in busy] == ["shop api"]
    limits = {w.pool: w.limit for w in warnings if w.kind == "max_children"}
    assert limits == {"www": 30, "shop.example.test": 8}


def test_process_max_counted_without_pool() -> None:
    counts = summarize(parse_error_log(SAMPLE.read_text().splitlines()))
    assert counts[("process_max", None)] == 2


def test_other_lines_ignored() -> None:
    lines = [
        "[13-Jan-2024 15:16:04] NOTICE: [pool www] child 14390 started",
        "[13-Jan-2024 15:20:00] NOTICE: Reloading in progress ...",
        "WARNING: [pool www] server reached pm.max_children setting (3)",  # no timestamp: not php-fpm's
    ]
    assert parse_error_log(lines) == []

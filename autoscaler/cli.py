"""Command line: ``phpfpm-autoscaler run | check | status | settings | simulate``.

Settings come from the environment only (twelve-factor); the commands take
no configuration flags beyond output format. Exit status: 0 on success,
1 when ``check`` or ``status`` finds a problem, 2 on invalid settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from autoscaler import __version__
from autoscaler.errors import AutoscalerError, ConfigError, StatusError
from autoscaler.settings import Settings, load_settings, settings_markdown_table
from autoscaler.status import PoolSample

log = logging.getLogger("autoscaler.cli")

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_CONFIG = 2

DESCRIPTION = """\
Keep PHP-FPM pools sized to their load and memory budget.

All settings come from PHPFPM_AUTOSCALER_* environment variables; run
`phpfpm-autoscaler settings` for the list with defaults.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phpfpm-autoscaler",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="poll, decide and apply in the foreground until SIGTERM")
    commands.add_parser(
        "check",
        help="validate settings, reach every status page and php-fpm's master, print findings",
    )
    status = commands.add_parser("status", help="print the parsed status of each pool once")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    settings = commands.add_parser("settings", help="list every environment variable with its default")
    settings.add_argument("--markdown", action="store_true", help="print the README's Markdown table")
    simulate = commands.add_parser(
        "simulate",
        help="run a request trace through a simulated pool: policy against fixed sizes",
        description="Run a request trace through a simulated php-fpm pool, driven by the agent's "
        "policy, next to fixed configurations. Policy knobs come from the options below, "
        "not from PHPFPM_AUTOSCALER_* variables.",
    )
    from autoscaler.simulate.cli import add_arguments

    add_arguments(simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    if args.command == "settings":
        return print_settings(markdown=args.markdown)
    if args.command == "simulate":
        from autoscaler.simulate.cli import run_simulate

        return run_simulate(args)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"phpfpm-autoscaler: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    from autoscaler.logs import configure_logging

    # check and status print their report on stdout; their log lines go to stderr.
    log_stream = sys.stdout if args.command == "run" else sys.stderr
    configure_logging(settings.log_format, settings.log_level_number, stream=log_stream)
    if args.command == "run":
        return run(settings)
    if args.command == "check":
        from autoscaler.check import run_check

        return asyncio.run(run_check(settings))
    if args.command == "status":
        return asyncio.run(print_status(settings, as_json=args.json))
    parser.error(f"unknown command {args.command!r}")
    return EXIT_CONFIG


def print_settings(*, markdown: bool) -> int:
    if markdown:
        sys.stdout.write(settings_markdown_table())
        return EXIT_OK
    from autoscaler.settings import env_name

    for name, info in Settings.model_fields.items():
        print(f"{env_name(name)} (default {info.default!r}): {info.description}")
    return EXIT_OK


def run(settings: Settings) -> int:
    from autoscaler.wiring import Agent

    async def main_loop() -> int:
        agent = await Agent.create(settings)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, agent.request_stop, signum)
        try:
            await agent.run()
        finally:
            await agent.close()
        return EXIT_OK

    try:
        return asyncio.run(main_loop())
    except ConfigError as exc:
        log.error("startup_failed", extra={"fields": {"error": str(exc)}})
        return EXIT_CONFIG
    except AutoscalerError as exc:
        log.error("startup_failed", extra={"fields": {"error": str(exc)}})
        return EXIT_PROBLEM


async def print_status(settings: Settings, *, as_json: bool) -> int:
    from autoscaler.wiring import make_readers

    readers, client = make_readers(settings)
    rows: list[dict[str, Any]] = []
    failed = False
    try:
        for reader in readers:
            try:
                sample = await reader.read()
            except StatusError as exc:
                failed = True
                rows.append({"url": str(reader.uri), "error": str(exc), "error_type": type(exc).__name__})
                continue
            rows.append(sample_row(str(reader.uri), sample))
    finally:
        if client is not None:
            await client.aclose()
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print_table(rows)
    return EXIT_PROBLEM if failed else EXIT_OK


def sample_row(url: str, sample: PoolSample) -> dict[str, Any]:
    row = {"url": url, **asdict(sample)}
    row.pop("workers", None)
    row["busy_workers"] = sample.busy_workers
    row["queue"] = sample.queue
    row["worker_count"] = len(sample.workers) if sample.workers is not None else None
    return row


TABLE_COLUMNS = (
    ("pool", "pool"),
    ("pm", "process_manager"),
    ("busy", "busy_workers"),
    ("idle", "idle_processes"),
    ("total", "total_processes"),
    ("queue", "queue"),
    ("max reached", "max_children_reached_total"),
    ("accepted", "accepted_connections_total"),
    ("poll ms", "poll_duration_seconds"),
)


def print_table(rows: list[dict[str, Any]]) -> None:
    header = [title for title, _ in TABLE_COLUMNS]
    lines = [header]
    errors = []
    for row in rows:
        if "error" in row:
            errors.append(f"{row['url']}: {row['error_type']}: {row['error']}")
            continue
        cells = []
        for _title, key in TABLE_COLUMNS:
            value = row.get(key)
            if key == "poll_duration_seconds" and value is not None:
                value = f"{value * 1000:.1f}"
            cells.append("?" if value is None else str(value))
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    for error in errors:
        print(f"error: {error}")
    if any(row.get("queue") is None and "error" not in row for row in rows):
        print("queue '?': unknown (unix socket: Linux reports the listen queue for TCP only)")

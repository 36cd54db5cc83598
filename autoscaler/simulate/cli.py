"""``phpfpm-autoscaler simulate``: run a trace through the policy and fixed pools side by side."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from autoscaler.fpmconfig.rules import PM_STYLES, normalize_pm
from autoscaler.policy import PolicySettings
from autoscaler.simulate.model import MIB, AgentModel, PoolModel, RunResult, simulate
from autoscaler.simulate.traces import GENERATORS, LoadShape, Trace, TraceError, generate, read_csv

EXIT_OK = 0
EXIT_CONFIG = 2

POLICY_HELP = {
    "min_children": "lowest max_children the policy sets",
    "max_children": "highest max_children the policy sets",
    "target_utilization": "share of workers busy at peak demand",
    "tolerance_ratio": "no change while desired/current is within 1 +- this",
    "decision_window_seconds": "demand is the peak of the samples in this window",
    "scale_down_stabilization_seconds": "scale down only to the window's highest recommendation",
    "scale_down_max_ratio": "largest share of workers removed by one scale-down",
    "saturation_step_ratio": "factor applied to max_children on saturation",
    "scale_up_max_ratio": "one scale-up adds at most current x this (or --scale-up-max-workers)",
    "scale_up_max_workers": "one scale-up may always add this many workers",
    "min_reload_interval_seconds": "minimum time between two reloads",
    "flap_penalty_factor": "a quick reversal multiplies the scale-down window by this",
    "flap_penalty_max": "largest multiplier of the scale-down window",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of the ``simulate`` subcommand to ``parser``."""
    load = parser.add_argument_group("load")
    source = load.add_mutually_exclusive_group()
    source.add_argument(
        "--trace",
        type=Path,
        metavar="FILE",
        help="CSV of 'timestamp_seconds,duration_seconds' lines (header optional)",
    )
    source.add_argument(
        "--generator",
        choices=sorted(GENERATORS),
        default="steady",
        help="built-in load shape (default: steady)",
    )
    shape = LoadShape()
    load.add_argument(
        "--duration-seconds",
        type=float,
        default=None,
        help=f"simulated time (default: {shape.duration_seconds:g} for a generator, "
        "the trace's span for a file)",
    )
    load.add_argument(
        "--rate",
        type=float,
        default=shape.rate_per_second,
        help="mean arrival rate in requests per second (default: %(default)s)",
    )
    load.add_argument(
        "--seed", type=int, default=shape.seed, help="generator seed (default: %(default)s)"
    )
    load.add_argument(
        "--service-mean-seconds",
        type=float,
        default=shape.mean_service_seconds,
        help="mean service time of a warm worker (default: %(default)s)",
    )
    load.add_argument(
        "--service-sigma",
        type=float,
        default=shape.service_sigma,
        help="sigma of the lognormal service time (default: %(default)s)",
    )
    load.add_argument(
        "--spike-factor",
        type=float,
        default=shape.spike_factor,
        help="rate multiplier during a spike (default: %(default)s)",
    )

    pool = parser.add_argument_group("php-fpm pool")
    defaults = PoolModel()
    pool.add_argument(
        "--pm",
        choices=PM_STYLES,
        default=defaults.pm,
        help="process manager of the policy-driven pool (default: %(default)s)",
    )
    pool.add_argument(
        "--initial-children",
        type=int,
        default=AgentModel().initial_max_children,
        help="max_children the policy-driven pool starts with (default: %(default)s)",
    )
    pool.add_argument(
        "--start-servers",
        type=int,
        default=None,
        help="pm.start_servers for dynamic pools (default: php-fpm's)",
    )
    pool.add_argument(
        "--min-spare-servers",
        type=int,
        default=defaults.min_spare_servers,
        help="pm.min_spare_servers (default: %(default)s)",
    )
    pool.add_argument(
        "--max-spare-servers",
        type=int,
        default=defaults.max_spare_servers,
        help="pm.max_spare_servers (default: %(default)s)",
    )
    pool.add_argument(
        "--max-spawn-rate",
        type=int,
        default=defaults.max_spawn_rate,
        help="pm.max_spawn_rate (default: %(default)s)",
    )
    pool.add_argument(
        "--process-idle-timeout-seconds",
        type=float,
        default=defaults.process_idle_timeout_seconds,
        help="pm.process_idle_timeout for ondemand pools (default: %(default)s)",
    )
    pool.add_argument(
        "--listen-backlog",
        type=int,
        default=defaults.listen_backlog,
        help="listen.backlog; requests beyond it are rejected (default: %(default)s)",
    )
    pool.add_argument(
        "--process-control-timeout-seconds",
        type=float,
        default=defaults.process_control_timeout_seconds,
        help="how long a reload lets in-flight requests finish (default: %(default)s)",
    )
    pool.add_argument(
        "--warmup-requests",
        type=int,
        default=defaults.warmup_requests,
        help="requests of each new worker that run slower (default: %(default)s)",
    )
    pool.add_argument(
        "--warmup-factor",
        type=float,
        default=defaults.warmup_factor,
        help="service-time multiplier of those requests (default: %(default)s)",
    )
    pool.add_argument(
        "--worker-memory-mb",
        type=float,
        default=defaults.worker_memory_bytes / MIB,
        help="memory of one worker in MiB (default: %(default)s)",
    )
    pool.add_argument(
        "--worker-memory-growth-kb-per-request",
        type=float,
        default=0.0,
        help="growth of a worker's memory per request served, in KiB (default: 0)",
    )

    agent = parser.add_argument_group("agent")
    agent.add_argument(
        "--memory-limit-mb",
        type=float,
        default=None,
        help="memory limit in MiB; sets the policy's memory ceiling (default: none)",
    )
    agent.add_argument(
        "--memory-reserve-mb",
        type=float,
        default=0.0,
        help="memory kept for the master, OPcache and the system, in MiB (default: 0)",
    )
    agent.add_argument(
        "--memory-margin-ratio",
        type=float,
        default=AgentModel().memory_margin_ratio,
        help="safety margin on the worker memory (default: %(default)s)",
    )
    agent.add_argument(
        "--unix-socket",
        action="store_true",
        help="the pool listens on a unix socket, so the listen queue is unknown",
    )
    agent.add_argument(
        "--status-through-pool",
        action="store_true",
        help="the status page is served by the pool's workers (no pm.status_listen)",
    )
    agent.add_argument(
        "--poll-timeout-seconds",
        type=float,
        default=AgentModel().poll_timeout_seconds,
        help="status poll deadline (default: %(default)s)",
    )
    policy = PolicySettings()
    for item in fields(PolicySettings):
        default = getattr(policy, item.name)
        agent.add_argument(
            "--" + item.name.replace("_", "-"),
            type=type(default),
            default=default,
            help=f"{POLICY_HELP.get(item.name, 'policy setting')} (default: %(default)s)",
        )

    output = parser.add_argument_group("output")
    output.add_argument(
        "--compare",
        default="",
        metavar="PM:N,...",
        help="fixed pools to run next to the policy, for example static:5,static:28,ondemand:28",
    )
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")


def parse_compare(text: str) -> list[tuple[str, int]]:
    """Parse ``static:5,ondemand:28`` into (pm, max_children) pairs; raise TraceError if invalid."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        pm_text, _, number = item.partition(":")
        pm = normalize_pm(pm_text)
        if pm is None or not number.strip().isdigit() or int(number) < 1:
            raise TraceError(
                f"--compare entry {item!r} is invalid; expected PM:N with PM one of "
                f"{', '.join(PM_STYLES)} and N a whole number of at least 1, e.g. static:5"
            )
        pairs.append((pm, int(number)))
    return pairs


def load_trace(args: argparse.Namespace) -> Trace:
    if args.trace is not None:
        return read_csv(args.trace, duration_seconds=args.duration_seconds)
    shape = LoadShape(
        rate_per_second=args.rate,
        duration_seconds=args.duration_seconds or LoadShape().duration_seconds,
        mean_service_seconds=args.service_mean_seconds,
        service_sigma=args.service_sigma,
        seed=args.seed,
        spike_factor=args.spike_factor,
    )
    return generate(args.generator, shape)


def build_models(args: argparse.Namespace) -> tuple[PoolModel, AgentModel]:
    policy = PolicySettings(
        **{item.name: getattr(args, item.name) for item in fields(PolicySettings)}
    )
    if policy.min_children > policy.max_children:
        raise TraceError(
            f"--min-children={policy.min_children} is greater than --max-children="
            f"{policy.max_children}; lower the first or raise the second"
        )
    if args.initial_children < 1:
        raise TraceError(f"--initial-children={args.initial_children} must be at least 1")
    pool = PoolModel(
        pm=args.pm,
        max_children=args.initial_children,
        start_servers=args.start_servers,
        min_spare_servers=args.min_spare_servers,
        max_spare_servers=args.max_spare_servers,
        max_spawn_rate=args.max_spawn_rate,
        process_idle_timeout_seconds=args.process_idle_timeout_seconds,
        listen_backlog=args.listen_backlog,
        process_control_timeout_seconds=args.process_control_timeout_seconds,
        warmup_requests=args.warmup_requests,
        warmup_factor=args.warmup_factor,
        worker_memory_bytes=round(args.worker_memory_mb * MIB),
        worker_memory_growth_bytes_per_request=round(
            args.worker_memory_growth_kb_per_request * 1024
        ),
    )
    agent = AgentModel(
        policy=policy,
        initial_max_children=args.initial_children,
        memory_limit_bytes=None
        if args.memory_limit_mb is None
        else round(args.memory_limit_mb * MIB),
        memory_reserve_bytes=round(args.memory_reserve_mb * MIB),
        memory_margin_ratio=args.memory_margin_ratio,
        poll_timeout_seconds=args.poll_timeout_seconds,
        unix_socket=args.unix_socket,
        status_through_pool=args.status_through_pool,
    )
    return pool, agent


def run_simulate(args: argparse.Namespace) -> int:
    """Run the ``simulate`` subcommand; return the exit status."""
    try:
        compare = parse_compare(args.compare)
        pool, agent = build_models(args)
        trace = load_trace(args)
    except TraceError as exc:
        print(f"phpfpm-autoscaler simulate: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    runs: list[tuple[RunResult, float]] = []
    started = time.perf_counter()
    runs.append((simulate(trace, pool, agent), time.perf_counter() - started))
    for pm, children in compare:
        fixed = PoolModel(**{**asdict(pool), "pm": pm, "max_children": children})
        started = time.perf_counter()
        runs.append((simulate(trace, fixed, None), time.perf_counter() - started))

    if args.json:
        print(
            json.dumps(
                {"trace": trace_summary(trace), "runs": [result_row(r, s) for r, s in runs]},
                indent=2,
            )
        )
    else:
        print_report(trace, [result for result, _ in runs])
    return EXIT_OK


def trace_summary(trace: Trace) -> dict[str, Any]:
    return {
        "name": trace.name,
        "requests_total": len(trace),
        "duration_seconds": trace.duration_seconds,
        "mean_service_seconds": trace.mean_service_seconds,
        # Workers kept busy on average by the offered load (Little's law).
        "offered_load_workers": len(trace) * trace.mean_service_seconds / trace.duration_seconds
        if trace.duration_seconds
        else None,
    }


def result_row(result: RunResult, elapsed_seconds: float) -> dict[str, Any]:
    row = asdict(result)
    row["reloads"] = [asdict(reload) for reload in result.reloads]
    row["elapsed_seconds"] = elapsed_seconds
    return row


COLUMNS = (
    "config",
    "lat p50 ms",
    "lat p95 ms",
    "lat p99 ms",
    "wait p99 ms",
    "rejected",
    "cut",
    "reloads",
    "worker-s",
    "peak workers",
    "peak MiB",
    "max_children",
)


def print_report(trace: Trace, results: list[RunResult]) -> None:
    summary = trace_summary(trace)
    print(
        f"trace {summary['name']}: {summary['requests_total']} requests over "
        f"{summary['duration_seconds']:g} s, "
        f"mean service {summary['mean_service_seconds'] * 1000:.0f} ms, "
        f"offered load {summary['offered_load_workers'] or 0:.1f} workers"
    )
    lines = [list(COLUMNS)]
    for result in results:
        children = str(result.min_max_children)
        if result.max_max_children != result.min_max_children:
            children = f"{result.min_max_children}-{result.max_max_children}"
        lines.append(
            [
                result.label,
                f"{result.latency_p50_seconds * 1000:.0f}",
                f"{result.latency_p95_seconds * 1000:.0f}",
                f"{result.latency_p99_seconds * 1000:.0f}",
                f"{result.wait_p99_seconds * 1000:.0f}",
                str(result.rejected_total),
                str(result.cut_total),
                str(result.reloads_total),
                f"{result.worker_seconds:.0f}",
                str(result.peak_workers),
                f"{result.peak_memory_bytes / MIB:.0f}",
                children,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    for line in lines:
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
        print("  ".join(cells))

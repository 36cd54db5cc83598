"""Time the simulator on a 24-hour trace of about one million requests.

Run from the repository root: ``python -m bench.simulate_bench``. It prints
the time to draw the trace, to simulate the policy-driven pool and to
simulate one fixed pool; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from autoscaler.simulate import AgentModel, LoadShape, PoolModel, generate, simulate

DAY_SECONDS = 86_400.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000, help="about this many requests")
    parser.add_argument("--generator", default="diurnal", help="load shape (default: diurnal)")
    parser.add_argument("--pm", default="static", help="process manager (default: static)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    shape = LoadShape(
        rate_per_second=args.requests / DAY_SECONDS, duration_seconds=DAY_SECONDS, seed=args.seed
    )
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")

    started = time.perf_counter()
    trace = generate(args.generator, shape)
    print(
        f"generate {args.generator}: {len(trace)} requests in {time.perf_counter() - started:.1f} s"
    )

    started = time.perf_counter()
    result = simulate(trace, PoolModel(pm=args.pm), AgentModel())
    elapsed = time.perf_counter() - started
    print(
        f"simulate policy ({args.pm}): {elapsed:.1f} s for "
        f"{result.simulated_seconds:.0f} simulated s, "
        f"{len(trace) / elapsed:,.0f} requests/s, {result.reloads_total} reloads, "
        f"p99 latency {result.latency_p99_seconds * 1000:.0f} ms"
    )

    started = time.perf_counter()
    fixed = simulate(trace, PoolModel(pm="static", max_children=28), None)
    elapsed = time.perf_counter() - started
    print(
        f"simulate static:28: {elapsed:.1f} s, "
        f"p99 latency {fixed.latency_p99_seconds * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()

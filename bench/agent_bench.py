"""Benchmark: the agent's CPU time and peak RSS over 60 s of polling a real php-fpm at 1 s.

Goal: under 1 % of one core and under 60 MB peak RSS. Run with
``python -m bench.agent_bench [--seconds N]``; it prints the numbers and
exits 0 whatever they are (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from tests.agent import AgentProcess, agent_env
from tests.fpm import FpmServer, PoolSpec

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of /proc/PID/stat (proc(5)).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM missing from /proc/PID/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured polling time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="phpfpm-autoscaler-bench-") as directory:
        fpm = FpmServer(Path(directory), [PoolSpec(max_children=4, max_spare_servers=2)])
        fpm.start()
        agent = AgentProcess(agent_env(fpm, poll_interval_seconds=1.0, log_level="WARNING"))
        try:
            agent.start()
            assert agent.process is not None
            time.sleep(3)  # imports and first ticks are start-up, not steady state
            pid = agent.process.pid
            cpu_before = cpu_seconds(pid)
            wall_before = time.monotonic()
            time.sleep(args.seconds)
            cpu = cpu_seconds(pid) - cpu_before
            wall = time.monotonic() - wall_before
            rss = peak_rss_bytes(pid)
        finally:
            agent.stop()
            fpm.stop()
    print(f"polling at 1 s for {wall:.1f} s against a real php-fpm (1 pool, json&full over TCP)")
    print(f"agent CPU time: {cpu:.3f} s = {100 * cpu / wall:.3f} % of one core (goal < 1 %)")
    print(f"agent peak RSS: {rss / 2**20:.1f} MiB (goal < 60 MB)")


if __name__ == "__main__":
    main()

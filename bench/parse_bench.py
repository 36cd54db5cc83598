"""Time ``parse_status`` on a ``json&full`` page of a 500-worker pool.

Run from the repository root: ``python -m bench.parse_bench [--workers N]
[--iterations N] [--stdlib-json]``. Prints the body size and the minimum,
mean and 99th percentile parse time. The goal is under 2 ms per page. The
body has the shape php-fpm 8.2 writes (keys, order, escaped slashes), with a
mix of worker states. Other processes on the machine inflate the mean and
the 99th percentile, so compare runs on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from autoscaler.status import parse
from autoscaler.status.parse import parse_status

STATES = ("Idle", "Running", "Reading headers", "Finishing")


def build_body(worker_count: int) -> bytes:
    pool = {
        "pool": "www",
        "process manager": "dynamic",
        "start time": 1796413362,
        "start since": 3600,
        "accepted conn": 123456,
        "listen queue": 0,
        "max listen queue": 3,
        "listen queue len": 4096,
        "idle processes": worker_count // 4,
        "active processes": worker_count - worker_count // 4,
        "total processes": worker_count,
        "max active processes": worker_count,
        "max children reached": 2,
        "slow requests": 0,
    }
    workers = [
        {
            "pid": 10000 + index,
            "state": STATES[index % len(STATES)],
            "start time": 1796413362,
            "start since": 3600,
            "requests": 500 + index,
            "request duration": 1000 + index * 37,
            "request method": "GET",
            "request uri": f"/index.php?page={index}&sort=name",
            "content length": 0,
            "user": "-",
            "script": "/srv/app/public/index.php",
            "last request cpu": 12.5,
            "last request memory": 2097152,
        }
        for index in range(worker_count)
    ]
    # php-fpm writes the pool fields, then ', "processes":[' and escapes "/" as "\/".
    head = json.dumps(pool, separators=(",", ":"))[:-1]
    entries = ",".join(json.dumps(worker, separators=(",", ":")) for worker in workers)
    return (head + ', "processes":[' + entries + "]}").replace("/", "\\/").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=500)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument(
        "--stdlib-json",
        action="store_true",
        help="decode with json.loads even if orjson is installed",
    )
    args = parser.parse_args()
    if args.stdlib_json:
        parse._loads = json.loads

    body = build_body(args.workers)
    sample = parse_status(
        body, content_type="application/json", status_path="/status", queue_known=True
    )
    assert sample.workers is not None and len(sample.workers) == args.workers

    durations = []
    for _ in range(args.iterations):
        started = time.perf_counter()
        parse_status(body, content_type="application/json", status_path="/status", queue_known=True)
        durations.append(time.perf_counter() - started)
    durations.sort()
    p99 = durations[min(len(durations) - 1, int(len(durations) * 0.99))]
    decoder = getattr(parse._loads, "__module__", None) or "orjson"
    print(
        f"workers={args.workers} body_bytes={len(body)} iterations={args.iterations} json={decoder}"
    )
    print(
        f"min_ms={durations[0] * 1e3:.3f} mean_ms={statistics.fmean(durations) * 1e3:.3f} "
        f"p99_ms={p99 * 1e3:.3f}"
    )


if __name__ == "__main__":
    main()

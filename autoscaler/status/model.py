"""Parsed php-fpm status, one frozen value per poll.

Every field that php-fpm may leave out (the field set differs by PHP
version) is ``None`` when absent: unknown, never zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

# php-fpm's only free worker state. Every other state (Running, Reading
# headers, Getting request information(s), Finishing, Ending, Creating) holds
# a worker, see php-src sapi/fpm/fpm/fpm_request.c.
IDLE_STATE = "Idle"

KNOWN_STATES = frozenset(
    {
        "Idle",
        "Running",
        "Reading headers",
        "Getting request information",
        "Getting request informations",
        "Finishing",
        "Ending",
        "Creating",
    }
)


class WorkerSample(NamedTuple):
    """One worker's block of a ``full`` status page.

    A NamedTuple rather than a frozen dataclass: a status page of 500
    workers builds 500 of these per poll, and building one took 1.3 µs
    instead of 3.8 µs for a frozen dataclass (timeit, Python 3.11, 2 cores).
    """

    pid: int | None
    state: str
    requests_total: int | None = None
    request_duration_seconds: float | None = None
    request_method: str | None = None
    request_uri: str | None = None
    last_request_cpu_percent: float | None = None
    # PHP's allocator peak (memory_get_peak_usage(true)) of the last request,
    # 0 while a request runs: not the worker's RSS.
    last_request_memory_bytes: int | None = None
    start_since_seconds: int | None = None

    @property
    def busy(self) -> bool:
        return self.state != IDLE_STATE


@dataclass(frozen=True, slots=True)
class PoolSample:
    """One successful read of a pool's status page."""

    pool: str
    process_manager: str | None
    # Unix time of the pool's (re)start; changes on every reload.
    start_time_seconds: float | None
    start_since_seconds: int | None
    accepted_connections_total: int | None
    listen_queue: int | None
    max_listen_queue: int | None
    listen_queue_length: int | None
    idle_processes: int | None
    active_processes: int | None
    total_processes: int | None
    max_active_processes: int | None
    max_children_reached_total: int | None
    slow_requests_total: int | None
    memory_peak_bytes: int | None = None
    # None when the page was read without ``full``.
    workers: tuple[WorkerSample, ...] | None = None
    # Worker blocks that could not be parsed and were skipped.
    skipped_workers: int = 0
    # Busy workers that were serving status requests (our own poll among
    # them) and are not application demand.
    status_request_workers: int = 0
    # "json" or "text": which format the numbers came from.
    source_format: str = "json"
    # False when the listen queue cannot be seen (unix sockets: Linux
    # reports the queue for TCP listeners only).
    queue_known: bool = True
    poll_duration_seconds: float = 0.0
    unknown_states: tuple[str, ...] = field(default_factory=tuple)
    # Values that cannot be right (a negative count, more active than total
    # processes), one readable sentence each. The sample is kept, but the
    # policy must not scale down on it.
    anomalies: tuple[str, ...] = field(default_factory=tuple)

    @property
    def plausible(self) -> bool:
        """Whether no value of the sample contradicts another or its range."""
        return not self.anomalies

    @property
    def busy_workers(self) -> int | None:
        """Workers serving application requests.

        Counted from the per-worker states when the full page was read (every
        state but Idle is busy), else from ``active processes``; status
        requests are subtracted in both cases.
        """
        if self.workers is not None and self.skipped_workers == 0:
            busy = sum(1 for worker in self.workers if worker.busy)
        elif self.active_processes is not None:
            busy = self.active_processes
        else:
            return None
        return max(0, busy - self.status_request_workers)

    @property
    def queue(self) -> int | None:
        """Requests waiting in the listen backlog, or None where it is invisible."""
        return self.listen_queue if self.queue_known else None

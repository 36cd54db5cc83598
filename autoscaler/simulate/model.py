"""Discrete-event model of one php-fpm pool, driven by the real scaling policy.

The clock is simulated. Events are request arrivals (from a ``Trace``),
request completions (a heap of ``(finish_seconds, worker_id)``) and a few
timers: php-fpm's once-a-second process maintenance, the agent's poll, the
end of a reload's drain, the restart after it and a status-poll deadline.
Nothing sleeps and nothing touches the operating system.

php-fpm behaviour modelled here, from php-src ``sapi/fpm/fpm/fpm_process_ctl.c``
(PHP 8.2) and measurements on php-fpm 8.2:

- ``static`` keeps max_children workers. ``ondemand`` forks a worker when a
  request finds no idle one (the fork is taken as instant: 4 workers were
  forked within 0.5 s in a measurement) and, once a second, stops the oldest
  idle worker when its last request ended more than process_idle_timeout ago.
  ``dynamic`` starts start_servers workers; once a second it stops one idle
  worker above max_spare_servers, or forks min(spawn rate, min_spare - idle,
  max_children - running) workers, the spawn rate doubling up to
  max_spawn_rate while more are needed and falling back to 1 otherwise.
- Idle workers wait in ``accept()``, which Linux wakes in FIFO order, so the
  worker idle the longest takes the next request.
- The ``max children reached`` counter rises once per saturation episode
  and never for ``static``; an episode ends when the pool forks again.
- A reload (max_children changed) stops idle workers at once, lets
  in-flight requests run for up to process_control_timeout (cutting the
  rest; with 0 they are cut after about 10 ms), holds new requests in the
  listen backlog, then restarts the pool with new workers.
- Requests that find the backlog full are rejected.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import Counter, deque
from dataclasses import dataclass, field, replace

from autoscaler.fpmconfig.rules import (
    DEFAULT_MAX_SPAWN_RATE,
    PM_DYNAMIC,
    PM_ONDEMAND,
    PM_STATIC,
    PmSettings,
    default_start_servers,
    fit_pm,
)
from autoscaler.policy import (
    Decision,
    Failure,
    MemoryBudget,
    Observation,
    PolicySettings,
    PoolState,
    decide,
)
from autoscaler.simulate.traces import Trace

INFINITY = math.inf
MIB = 2**20
POOL_NAME = "www"
# php-fpm's idle-server maintenance timer (FPM_IDLE_SERVER_MAINTENANCE_HEARTBEAT).
MAINTENANCE_INTERVAL_SECONDS = 1.0
# With process_control_timeout = 0, php-fpm 8.2 cut in-flight requests about
# 10 ms after SIGUSR2 (measured).
CUT_AFTER_SECONDS = 0.01


@dataclass(frozen=True, slots=True)
class PoolModel:
    """php-fpm's side of the model: process manager, backlog, reload and worker costs."""

    pm: str = PM_STATIC
    max_children: int = 5
    # None: php-fpm's default, min_spare + (max_spare - min_spare) // 2.
    start_servers: int | None = None
    # The values of the www.conf that php-fpm ships.
    min_spare_servers: int = 1
    max_spare_servers: int = 3
    max_spawn_rate: int = DEFAULT_MAX_SPAWN_RATE
    process_idle_timeout_seconds: float = 10.0
    # php-fpm's default listen.backlog on Linux is 511; the kernel caps it at
    # net.core.somaxconn.
    listen_backlog: int = 511
    process_control_timeout_seconds: float = 10.0
    # Time from the end of the drain until the new workers accept, while the
    # master re-executes itself and forks. This is an estimate: a failing
    # re-execution took about 30 ms in a measurement.
    restart_seconds: float = 0.05
    # A new worker serves its first requests slower: a reload empties
    # OPcache, and per-process caches (realpath cache, persistent
    # connections) start cold in every new process.
    warmup_requests: int = 10
    warmup_factor: float = 1.5
    worker_memory_bytes: int = 64 * MIB
    # Growth of a worker's memory with each request it serves (leaks,
    # fragmentation); 0 keeps every worker at worker_memory_bytes.
    worker_memory_growth_bytes_per_request: int = 0

    def pm_settings(self, max_children: int) -> PmSettings:
        """Return the pm values for ``max_children``, spare values clamped as the agent does."""
        current = PmSettings(
            pm=self.pm,
            max_children=self.max_children,
            start_servers=self.start_servers,
            min_spare_servers=self.min_spare_servers,
            max_spare_servers=self.max_spare_servers,
            max_spawn_rate=self.max_spawn_rate,
        )
        return fit_pm(current, max_children)


@dataclass(frozen=True, slots=True)
class AgentModel:
    """The agent's side: the real policy and what the agent can read from the pool."""

    policy: PolicySettings = field(default_factory=PolicySettings)
    initial_max_children: int = 5
    memory_limit_bytes: int | None = None
    memory_reserve_bytes: int = 0
    memory_margin_ratio: float = 0.1
    poll_interval_seconds: float = 1.0
    poll_timeout_seconds: float = 0.8
    slow_poll_seconds: float = 0.5
    # Linux reports the listen queue for TCP sockets only.
    unix_socket: bool = False
    # The status page is served by the pool's own workers (no
    # pm.status_listen), so a poll waits in the backlog behind a busy pool.
    status_through_pool: bool = False
    # Drop history the policy can no longer read before each tick; see
    # compact_state.
    compact_state: bool = True


@dataclass(frozen=True, slots=True)
class Reload:
    """One applied change of max_children."""

    at_seconds: float
    from_children: int
    to_children: int
    reason: str
    drain_seconds: float


@dataclass(frozen=True, slots=True)
class RunResult:
    """Outcome of one simulated run."""

    label: str
    pm: str
    requests_total: int
    served_total: int
    rejected_total: int
    # In-flight requests cut by a reload after process_control_timeout.
    cut_total: int
    # Percentiles of the time in the backlog (all requests a worker took)
    # and of wait plus service (completed requests), in seconds.
    wait_mean_seconds: float
    wait_p50_seconds: float
    wait_p95_seconds: float
    wait_p99_seconds: float
    latency_mean_seconds: float
    latency_p50_seconds: float
    latency_p95_seconds: float
    latency_p99_seconds: float
    reloads_total: int
    worker_seconds: float
    peak_workers: int
    peak_memory_bytes: int
    min_max_children: int
    max_max_children: int
    final_max_children: int
    simulated_seconds: float
    status_timeouts_total: int
    reloads: tuple[Reload, ...]
    decision_reasons: dict[str, int]


def percentile(sorted_values: array[float] | list[float], ratio: float) -> float:
    """Nearest-rank percentile of already sorted values; 0.0 for no values."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(ratio * len(sorted_values)))
    return sorted_values[rank - 1]


def mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def compact_state(state: PoolState, now_seconds: float, policy: PolicySettings) -> PoolState:
    """Drop history that ``decide`` can no longer read, so a tick costs O(decision window).

    ``PoolState`` keeps a whole scale-down window (300 s by default, longer
    under a flap penalty) of observations and of recommendations, and
    copies both tuples on every tick. Without this a simulated day took
    about three times as long. Two parts of that history never change a
    decision:

    - observations older than the decision window: ``decide`` reads only
      those inside it (peak demand, frozen scale-down) and the latest;
    - a recommendation followed by a later one at least as high: every
      window that contains it also contains the later one, so the window's
      maximum (all that ``decide`` takes from the list) stays the same.

    A test runs the same traces with and without this and compares the results.
    """
    horizon = now_seconds - policy.decision_window_seconds
    observations = state.observations
    if observations and observations[0].at_seconds < horizon:
        observations = tuple(o for o in observations if o.at_seconds >= horizon)
    recommendations = state.recommendations
    if len(recommendations) > 1 and recommendations[-2][1] <= recommendations[-1][1]:
        # The list is already non-increasing but for its newest entry.
        kept = list(recommendations)
        newest = kept.pop()
        while kept and kept[-1][1] <= newest[1]:
            kept.pop()
        kept.append(newest)
        recommendations = tuple(kept)
    if observations is state.observations and recommendations is state.recommendations:
        return state
    return replace(state, observations=observations, recommendations=recommendations)


class Simulation:
    """One run of one pool over one trace; ``agent=None`` keeps max_children fixed."""

    def __init__(
        self,
        trace: Trace,
        pool: PoolModel,
        agent: AgentModel | None,
        label: str,
        *,
        record_observations: bool = False,
    ) -> None:
        self.trace = trace
        self.pool = pool
        self.agent = agent
        self.label = label
        self.pm = pool.pm
        self.max_children = agent.initial_max_children if agent else pool.max_children
        self.spare = pool.pm_settings(self.max_children)

        # Workers: ids grow with every fork, so a lower id is an older process.
        self.idle: deque[int] = deque()
        self.busy = 0
        self.live = 0
        self.served: list[int] = []
        self.last_active: list[float] = []
        self.latency_of: list[float] = []
        self.memory_of: list[int] = []
        self.alive: set[int] = set()
        self.completions: list[tuple[float, int]] = []
        # Request indexes waiting for a worker; a negative entry is a status poll.
        self.backlog: deque[int] = deque()
        self.accepting = True
        self.draining = False

        self.spawn_rate = 1
        self.warned_max_children = False
        self.max_children_reached_total = 0

        self.waits = array("d")
        self.latencies = array("d")
        self.rejected = 0
        self.cut = 0
        self.worker_seconds = 0.0
        self.integrated_until = 0.0
        self.peak_workers = 0
        self.memory_total = 0
        self.peak_memory = 0
        self.children_seen = [self.max_children]

        # Timers (INFINITY when off).
        self.next_maintenance = INFINITY
        self.next_poll = INFINITY
        self.drain_deadline = INFINITY
        self.restart_at = INFINITY
        self.poll_deadline = INFINITY
        self.next_timer = INFINITY

        # The agent's view.
        self.state = PoolState()
        self.reached_seen: int | None = None
        self.pending_decision: Decision | None = None
        self.pending_target = self.max_children
        self.reload_started = 0.0
        self.poll_marker = 0
        self.poll_started = 0.0
        self.status_timeouts = 0
        self.reloads: list[Reload] = []
        self.reasons: Counter[str] = Counter()
        self.budget = self._budget(pool.worker_memory_bytes) if agent else None
        # Every Observation handed to the policy, for tests and debugging.
        self.observations: list[Observation] | None = [] if record_observations else None

    # --- run --------------------------------------------------------------

    def run(self) -> RunResult:
        arrivals = self.trace.arrivals_seconds
        durations = self.trace.durations_seconds
        count = len(arrivals)
        end = self.trace.duration_seconds
        completions = self.completions
        backlog = self.backlog
        idle = self.idle
        served = self.served
        latency_of = self.latency_of
        waits_append = self.waits.append
        latencies_append = self.latencies.append
        heappush = heapq.heappush
        heappop = heapq.heappop
        warmup_requests = self.pool.warmup_requests
        warmup_factor = self.pool.warmup_factor
        growth = self.pool.worker_memory_growth_bytes_per_request
        backlog_limit = self.pool.listen_backlog
        ondemand = self.pm == PM_ONDEMAND

        self._start_pool(0.0)
        if self.agent is not None:
            self.next_poll = 0.0
        self._update_next_timer()

        index = 0
        now = 0.0
        while True:
            arrival_at = arrivals[index] if index < count else INFINITY
            completion_at = completions[0][0] if completions else INFINITY
            timer_at = self.next_timer

            if completion_at <= arrival_at and completion_at <= timer_at:
                if completion_at == INFINITY:
                    break
                # A worker finished its request.
                now, worker = heappop(completions)
                self.busy -= 1
                served[worker] += 1
                latencies_append(latency_of[worker])
                if growth:
                    self.memory_of[worker] += growth
                    self.memory_total += growth
                    if self.memory_total > self.peak_memory:
                        self.peak_memory = self.memory_total
                if self.draining:
                    self._stop_worker(worker, now)
                    if self.busy == 0:
                        self._end_drain(now)
                    continue
                if not backlog:
                    idle.append(worker)
                    self.last_active[worker] = now
                    continue
                request = backlog[0]
                if request < 0:
                    # A status poll: the slow path, which may start a reload.
                    self._take_next(worker, now)
                    continue
                backlog.popleft()
                wait = now - arrivals[request]
                service = durations[request]
                if served[worker] < warmup_requests:
                    service *= warmup_factor
                waits_append(wait)
                latency_of[worker] = wait + service
                self.busy += 1
                heappush(completions, (now + service, worker))
                continue

            if timer_at <= arrival_at:
                if (
                    index >= count
                    and not completions
                    and not backlog
                    and self.accepting
                    and timer_at >= end
                ):
                    break
                now = timer_at
                self._fire_timers(now)
                continue

            # A request arrived.
            now = arrival_at
            request = index
            index += 1
            if self.accepting:
                worker = -1
                if idle:
                    worker = idle.popleft()
                elif ondemand:
                    if self.live < self.max_children:
                        worker = self._fork(now)
                    elif not self.warned_max_children:
                        # php-fpm counts the episode once, until it forks again.
                        # NOTE: php-fpm also counts when the accept event fires
                        # at max_children while a worker is idle; not modelled.
                        self.max_children_reached_total += 1
                        self.warned_max_children = True
                if worker >= 0:
                    service = durations[request]
                    if served[worker] < warmup_requests:
                        service *= warmup_factor
                    waits_append(0.0)
                    latency_of[worker] = service
                    self.busy += 1
                    heappush(completions, (now + service, worker))
                    continue
            if len(backlog) >= backlog_limit:
                self.rejected += 1
            else:
                backlog.append(request)

        return self._result(max(now, end))

    # --- workers ------------------------------------------------------------

    def _integrate(self, now: float) -> None:
        self.worker_seconds += self.live * (now - self.integrated_until)
        self.integrated_until = now

    def _fork(self, now: float) -> int:
        self._integrate(now)
        worker = len(self.served)
        self.served.append(0)
        self.last_active.append(now)
        self.latency_of.append(0.0)
        self.memory_of.append(self.pool.worker_memory_bytes)
        self.alive.add(worker)
        self.live += 1
        self.warned_max_children = False
        self.peak_workers = max(self.peak_workers, self.live)
        self.memory_total += self.pool.worker_memory_bytes
        self.peak_memory = max(self.peak_memory, self.memory_total)
        return worker

    def _stop_worker(self, worker: int, now: float) -> None:
        self._integrate(now)
        self.live -= 1
        self.alive.discard(worker)
        self.memory_total -= self.memory_of[worker]

    def _take_next(self, worker: int, now: float) -> None:
        """Give ``worker`` the oldest request of the backlog, or make it idle."""
        backlog = self.backlog
        while backlog:
            request = backlog.popleft()
            if request < 0:
                self._answer_poll(request, now)
                if not self.accepting:
                    # The poll's decision started a reload: this worker stops too.
                    self._stop_worker(worker, now)
                    return
                continue
            self._dispatch(request, worker, now)
            return
        self.idle.append(worker)
        self.last_active[worker] = now

    def _dispatch(self, request: int, worker: int, now: float) -> None:
        wait = now - self.trace.arrivals_seconds[request]
        service = self.trace.durations_seconds[request]
        if self.served[worker] < self.pool.warmup_requests:
            service *= self.pool.warmup_factor
        self.waits.append(wait)
        self.latency_of[worker] = wait + service
        self.busy += 1
        heapq.heappush(self.completions, (now + service, worker))

    def _start_pool(self, now: float) -> None:
        """Start a new generation of workers, as php-fpm does at start and after a reload."""
        self.accepting = True
        self.spawn_rate = 1
        self.warned_max_children = False
        self.max_children_reached_total = 0
        self.reached_seen = None
        if self.pm == PM_STATIC:
            initial = self.max_children
        elif self.pm == PM_DYNAMIC:
            spare = self.spare
            initial = spare.start_servers or default_start_servers(
                spare.min_spare_servers or 1, spare.max_spare_servers or 1
            )
        else:
            initial = 0
        for _ in range(min(initial, self.max_children)):
            self._take_next(self._fork(now), now)
        if self.pm == PM_ONDEMAND:
            # Every waiting connection makes the master fork, up to max_children.
            while self.backlog and self.live < self.max_children:
                self._take_next(self._fork(now), now)
        if self.pm != PM_STATIC:
            self.next_maintenance = now + MAINTENANCE_INTERVAL_SECONDS

    # --- timers -------------------------------------------------------------

    def _update_next_timer(self) -> None:
        self.next_timer = min(
            self.next_maintenance,
            self.next_poll,
            self.drain_deadline,
            self.restart_at,
            self.poll_deadline,
        )

    def _fire_timers(self, now: float) -> None:
        if self.drain_deadline <= now:
            self._cut_in_flight(now)
        if self.restart_at <= now:
            self._restart(now)
        if self.poll_deadline <= now:
            self._poll_timed_out(now)
        if self.next_maintenance <= now:
            self.next_maintenance = now + MAINTENANCE_INTERVAL_SECONDS
            if self.accepting:
                self._maintain(now)
        if self.next_poll <= now:
            assert self.agent is not None
            self.next_poll = now + self.agent.poll_interval_seconds
            # While a reload runs, the agent's tick is still waiting for it.
            if self.accepting and self.poll_deadline == INFINITY:
                self._poll(now)
        self._update_next_timer()

    def _maintain(self, now: float) -> None:
        """php-fpm's once-a-second idle-server maintenance for ondemand and dynamic pools."""
        idle = self.idle
        if self.pm == PM_ONDEMAND:
            if idle:
                oldest = min(idle)
                timeout = self.pool.process_idle_timeout_seconds
                if now - self.last_active[oldest] > timeout:
                    idle.remove(oldest)
                    self._stop_worker(oldest, now)
            return

        spare = self.spare
        min_spare = spare.min_spare_servers or 1
        max_spare = spare.max_spare_servers or 1
        idle_count = len(idle)
        if idle_count > max_spare:
            oldest = min(idle)
            idle.remove(oldest)
            self._stop_worker(oldest, now)
            self.spawn_rate = 1
            return
        if idle_count >= min_spare:
            self.spawn_rate = 1
            return
        if self.live >= self.max_children:
            if not self.warned_max_children:
                self.max_children_reached_total += 1
                self.warned_max_children = True
            self.spawn_rate = 1
            return
        forks = min(self.spawn_rate, min_spare - idle_count, self.max_children - self.live)
        for _ in range(forks):
            if not self.accepting:
                break
            self._take_next(self._fork(now), now)
        spawn_limit = spare.max_spawn_rate or DEFAULT_MAX_SPAWN_RATE
        if self.spawn_rate < spawn_limit:
            self.spawn_rate *= 2

    # --- reloads ------------------------------------------------------------

    def _start_reload(self, now: float, decision: Decision) -> None:
        self.pending_decision = decision
        self.pending_target = decision.target
        self.reload_started = now
        self.accepting = False
        self.draining = True
        self.next_maintenance = INFINITY
        while self.idle:
            self._stop_worker(self.idle.popleft(), now)
        if self.busy == 0:
            self._end_drain(now)
            return
        timeout = self.pool.process_control_timeout_seconds
        self.drain_deadline = now + (timeout if timeout > 0 else CUT_AFTER_SECONDS)

    def _end_drain(self, now: float) -> None:
        self.draining = False
        self.drain_deadline = INFINITY
        self.restart_at = now + self.pool.restart_seconds
        self._update_next_timer()

    def _cut_in_flight(self, now: float) -> None:
        self.cut += len(self.completions)
        for _, worker in self.completions:
            self._stop_worker(worker, now)
        self.completions.clear()
        self.busy = 0
        self._end_drain(now)

    def _restart(self, now: float) -> None:
        self.restart_at = INFINITY
        decision = self.pending_decision
        assert decision is not None and self.agent is not None
        self.pending_decision = None
        self.reloads.append(
            Reload(
                at_seconds=self.reload_started,
                from_children=self.max_children,
                to_children=self.pending_target,
                reason=decision.reason.value,
                drain_seconds=now - self.reload_started,
            )
        )
        self.max_children = self.pending_target
        self.children_seen.append(self.max_children)
        self.spare = self.pool.pm_settings(self.max_children)
        # The controller records the change once the reload has completed.
        self.state = self.state.applied(decision, now, self.agent.policy)
        self._start_pool(now)
        # The agent's tick overran during the reload, so the next one starts now.
        self.next_poll = now

    # --- the agent ------------------------------------------------------------

    def _budget(self, worker_bytes: int) -> MemoryBudget | None:
        agent = self.agent
        if agent is None or agent.memory_limit_bytes is None:
            return None
        return MemoryBudget(
            limit_bytes=agent.memory_limit_bytes,
            limit_source="simulation",
            reserve_bytes=agent.memory_reserve_bytes,
            worker_bytes=worker_bytes,
            worker_source="simulation",
            margin_ratio=agent.memory_margin_ratio,
        )

    def _poll(self, now: float) -> None:
        agent = self.agent
        assert agent is not None
        if not agent.status_through_pool or self.idle:
            self._observe(now, now, waited_seconds=0.0)
            return
        if self.pm == PM_ONDEMAND and self.live < self.max_children:
            # The status request makes the master fork a worker, which serves it at once.
            self.idle.append(self._fork(now))
            self._observe(now, now, waited_seconds=0.0)
            return
        # The status request waits in the backlog like any other request.
        self.poll_marker -= 1
        self.poll_started = now
        self.poll_deadline = now + agent.poll_timeout_seconds
        if len(self.backlog) < self.pool.listen_backlog:
            self.backlog.append(self.poll_marker)

    def _answer_poll(self, marker: int, now: float) -> None:
        if marker != self.poll_marker or self.poll_deadline == INFINITY:
            return  # The agent gave up on this poll; php-fpm finds a closed connection.
        self.poll_deadline = INFINITY
        self._observe(self.poll_started, now, waited_seconds=now - self.poll_started)
        self._update_next_timer()

    def _poll_timed_out(self, now: float) -> None:
        self.poll_deadline = INFINITY
        self.status_timeouts += 1
        observation = Observation(at_seconds=self.poll_started, failure=Failure.TIMEOUT)
        self._decide(observation, self.poll_started, now)

    def _observe(self, started: float, now: float, *, waited_seconds: float) -> None:
        """Build the Observation the controller would build from the status page read at ``now``."""
        agent = self.agent
        assert agent is not None
        increase: int | None = None
        if self.reached_seen is not None:
            increase = self.max_children_reached_total - self.reached_seen
        self.reached_seen = self.max_children_reached_total
        busy = self.busy
        idle = len(self.idle)
        observation = Observation(
            at_seconds=started,
            busy=busy,
            idle=idle,
            total=busy + idle,
            queue=None if agent.unix_socket else len(self.backlog),
            max_children_reached_increase=increase,
            slow=waited_seconds > agent.slow_poll_seconds,
        )
        self._decide(observation, started, now)

    def _decide(self, observation: Observation, tick_started: float, now: float) -> None:
        """Run one controller tick: observe, decide, remember, and reload on a change."""
        agent = self.agent
        assert agent is not None
        policy = agent.policy
        if self.pool.worker_memory_growth_bytes_per_request and self.budget is not None:
            largest = max(
                (self.memory_of[w] for w in self.alive), default=self.pool.worker_memory_bytes
            )
            self.budget = self._budget(largest)
        if self.observations is not None:
            self.observations.append(observation)
        if agent.compact_state:
            self.state = compact_state(self.state, observation.at_seconds, policy)
        self.state = self.state.observe(observation, policy)
        decision = decide(
            POOL_NAME, self.state, self.max_children, policy, tick_started, self.budget
        )
        self.state = self.state.remember(decision, tick_started, policy)
        self.reasons[decision.reason.value] += 1
        if decision.changes:
            self._start_reload(now, decision)
        self._update_next_timer()

    # --- result ---------------------------------------------------------------

    def _result(self, end: float) -> RunResult:
        self._integrate(end)
        waits = sorted(self.waits)
        latencies = sorted(self.latencies)
        return RunResult(
            label=self.label,
            pm=self.pm,
            requests_total=len(self.trace),
            served_total=len(latencies),
            rejected_total=self.rejected,
            cut_total=self.cut,
            wait_mean_seconds=mean(waits),
            wait_p50_seconds=percentile(waits, 0.50),
            wait_p95_seconds=percentile(waits, 0.95),
            wait_p99_seconds=percentile(waits, 0.99),
            latency_mean_seconds=mean(latencies),
            latency_p50_seconds=percentile(latencies, 0.50),
            latency_p95_seconds=percentile(latencies, 0.95),
            latency_p99_seconds=percentile(latencies, 0.99),
            reloads_total=len(self.reloads),
            worker_seconds=self.worker_seconds,
            peak_workers=self.peak_workers,
            peak_memory_bytes=self.peak_memory,
            min_max_children=min(self.children_seen),
            max_max_children=max(self.children_seen),
            final_max_children=self.max_children,
            simulated_seconds=end,
            status_timeouts_total=self.status_timeouts,
            reloads=tuple(self.reloads),
            decision_reasons=dict(self.reasons),
        )


def simulate(
    trace: Trace, pool: PoolModel, agent: AgentModel | None = None, *, label: str | None = None
) -> RunResult:
    """Run ``trace`` through a pool sized by ``agent``'s policy, or fixed when ``agent`` is None."""
    if label is None:
        label = f"policy ({pool.pm})" if agent else f"{pool.pm}:{pool.max_children}"
    return Simulation(trace, pool, agent, label).run()

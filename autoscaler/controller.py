"""The agent's loop: observe every pool, decide, apply, publish.

The controller only wires the parts: the status readers produce samples,
the pure policy turns them into decisions, the applier makes php-fpm run
them, and the metrics show all of it. The clock and the sleep are injected,
so tests drive ticks without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace

from autoscaler.actuator.apply import Applier
from autoscaler.errors import (
    StatusAccessError,
    StatusBusyError,
    StatusConnectError,
    StatusError,
    StatusTimeoutError,
)
from autoscaler.fpmconfig.rules import PmSettings, SpareTarget, fit_pm
from autoscaler.metrics import Metrics
from autoscaler.policy import (
    Decision,
    Failure,
    MemoryBudget,
    Observation,
    PolicySettings,
    PoolState,
    decide,
)
from autoscaler.policy.decide import upper_bound
from autoscaler.policy.pools import PoolRequest, fit_pools
from autoscaler.policy.spare import SpareSettings, spare_target
from autoscaler.settings import Mode, Settings
from autoscaler.status import CounterTracker, PoolSample, StatusReader

log = logging.getLogger("autoscaler.controller")

# A tick that has not completed for this many intervals makes /healthz fail.
HEALTH_TICKS = 3
# After a failed apply the next attempt waits max(MIN_BACKOFF, min reload
# interval) x 2^(failures - 1), capped at MAX_BACKOFF.
MIN_BACKOFF_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 600.0
# Reading every worker's smaps_rollup costs tens of milliseconds with 50
# workers (measured on 2 cores). Worker memory moves slowly, so the memory
# budget is refreshed at this interval rather than every tick.
MEMORY_REFRESH_SECONDS = 15.0


def policy_settings(settings: Settings) -> PolicySettings:
    return PolicySettings(
        min_children=settings.min_children,
        max_children=settings.max_children,
        target_utilization=settings.target_utilization,
        tolerance_ratio=settings.tolerance_ratio,
        decision_window_seconds=settings.decision_window_seconds,
        scale_down_stabilization_seconds=settings.scale_down_stabilization_seconds,
        scale_down_max_ratio=settings.scale_down_max_ratio,
        saturation_step_ratio=settings.saturation_step_ratio,
        min_reload_interval_seconds=settings.min_reload_interval_seconds,
        scale_up_interval_seconds=settings.scale_up_interval_seconds,
        scale_up_max_ratio=settings.scale_up_max_ratio,
        scale_up_max_workers=settings.scale_up_max_workers,
        flap_penalty_factor=settings.flap_penalty_factor,
        flap_penalty_max=settings.flap_penalty_max,
    )


def failure_of(error: StatusError) -> Failure:
    if isinstance(error, StatusTimeoutError):
        return Failure.TIMEOUT
    if isinstance(error, StatusBusyError):
        return Failure.BUSY
    if isinstance(error, StatusConnectError):
        return Failure.CONNECT
    if isinstance(error, StatusAccessError):
        return Failure.ACCESS
    return Failure.PARSE


@dataclass
class PoolTrack:
    """Everything the controller keeps about the pool behind one status URI."""

    reader: StatusReader
    name: str
    counters: CounterTracker = field(default_factory=CounterTracker)
    state: PoolState = field(default_factory=PoolState)
    pm: PmSettings | None = None
    # The pool's settings when the agent first read them: the operator's spare
    # values stay a floor for the burst-sized ones.
    base_pm: PmSettings | None = None
    budget: MemoryBudget | None = None
    budget_read_seconds: float | None = None
    last_sample: PoolSample | None = None
    last_decision: Decision | None = None
    logged_states: set[str] = field(default_factory=set)


class Controller:
    def __init__(
        self,
        settings: Settings,
        readers: list[StatusReader],
        metrics: Metrics,
        *,
        applier: Applier | None = None,
        current_pm: Callable[[], Mapping[str, PmSettings]] | None = None,
        budget: Callable[[str, PoolSample | None], MemoryBudget | None] | None = None,
        process_max: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.policy = policy_settings(settings)
        self.metrics = metrics
        self.applier = applier
        self.current_pm = current_pm
        self.budget = budget
        self.process_max = process_max
        self.clock = clock
        self.sleep = sleep
        self.wall_clock = wall_clock
        self.tracks = [PoolTrack(reader=reader, name=str(reader.uri)) for reader in readers]
        self.stopping = asyncio.Event()
        self.last_tick_seconds: float | None = None
        self.fpm_down = False
        self.apply_failures = 0
        self.apply_blocked_until = float("-inf")
        self.ticks = 0

    # lifecycle -----------------------------------------------------------

    def stop(self) -> None:
        self.stopping.set()

    async def run(self, max_ticks: int | None = None) -> None:
        """Tick every poll interval until ``stop()`` (or ``max_ticks`` ticks, for tests)."""
        self._refresh_pm()
        log.info(
            "controller_started",
            extra={
                "fields": {
                    "pools": [str(t.reader.uri) for t in self.tracks],
                    "mode": self.settings.mode.value,
                }
            },
        )
        interval = self.settings.poll_interval_seconds
        next_tick = self.clock()
        while not self.stopping.is_set():
            await self.tick()
            if max_ticks is not None and self.ticks >= max_ticks:
                break
            next_tick += interval
            delay = next_tick - self.clock()
            if delay < 0:
                # A tick overran (a slow reload): start the next one now and
                # keep the cadence from here instead of bursting to catch up.
                next_tick = self.clock()
                delay = 0
            if delay > 0:
                await self._sleep_unless_stopped(delay)
        log.info("controller_stopped", extra={"fields": {"ticks": self.ticks}})

    async def _sleep_unless_stopped(self, delay: float) -> None:
        sleeper = asyncio.ensure_future(self.sleep(delay))
        stopper = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                task.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)

    def health(self) -> tuple[bool, str]:
        if self.fpm_down:
            return False, "php-fpm is down after a failed reload; see the log"
        if self.last_tick_seconds is None:
            return True, "starting"
        age = self.clock() - self.last_tick_seconds
        # A tick that reloads waits for verification, twice when it rolls
        # back, and the applier may wait longer than the setting (php-fpm's
        # process_control_timeout plus a margin).
        verify = (
            self.applier.verify_timeout_seconds
            if self.applier is not None
            else self.settings.reload_verify_timeout_seconds
        )
        limit = HEALTH_TICKS * self.settings.poll_interval_seconds + 2 * verify
        if age > limit:
            return False, f"no tick completed for {age:.1f} s"
        return True, "ok"

    # one tick ------------------------------------------------------------

    async def tick(self) -> list[Decision]:
        now = self.clock()
        results = await asyncio.gather(*(self._poll(track) for track in self.tracks))
        if self.fpm_down and any(result.failure is None for result in results):
            # A status page replies again, so php-fpm was restarted.
            self.fpm_down = False
            log.info("php_fpm_back", extra={"fields": {"pools": [t.name for t in self.tracks]}})
        decisions: list[Decision] = []
        if self.settings.mode is not Mode.OBSERVE:
            for track, observation in zip(self.tracks, results, strict=True):
                decisions.append(self._decide(track, observation, now))
            decisions = self._fit_shared_limits(decisions)
            for decision in decisions:
                self._publish(decision)
            if self.settings.mode is Mode.AUTO:
                await self._apply([d for d in decisions if d.changes])
        self.ticks += 1
        self.last_tick_seconds = self.clock()
        self.metrics.last_tick.set(self.wall_clock())
        self.metrics.healthy.set(1 if self.health()[0] else 0)
        return decisions

    async def _poll(self, track: PoolTrack) -> Observation:
        at = self.clock()
        try:
            sample = await track.reader.read()
        except StatusError as exc:
            failure = failure_of(exc)
            self.metrics.record_down(track.name, "status")
            level = logging.ERROR if not exc.transient else logging.WARNING
            log.log(
                level,
                "poll_failed",
                extra={
                    "fields": {
                        "pool": track.name,
                        "url": str(track.reader.uri),
                        "failure": failure.value,
                        "error": str(exc),
                    }
                },
            )
            return Observation(at_seconds=at, failure=failure)
        if track.name != sample.pool:
            duplicate = next((t for t in self.tracks if t is not track and t.name == sample.pool), None)
            if duplicate is not None:
                # Two addresses for one pool would make conflicting decisions
                # and overwrite each other's series: only the first one counts.
                log.error(
                    "duplicate_pool",
                    extra={
                        "fields": {
                            "pool": sample.pool,
                            "url": str(track.reader.uri),
                            "other_url": str(duplicate.reader.uri),
                            "fix": "list each pool once in PHPFPM_AUTOSCALER_STATUS_URLS",
                        }
                    },
                )
                return Observation(at_seconds=at, failure=Failure.ACCESS)
            self.metrics.forget(track.name)
            track.name = sample.pool
            self._refresh_pm()
        track.last_sample = sample
        self.metrics.record_sample(track.name, sample)
        for state in sample.unknown_states:
            if state not in track.logged_states:
                track.logged_states.add(state)
                log.warning("unknown_worker_state", extra={"fields": {"pool": track.name, "state": state}})
        increases = track.counters.update(sample)
        current = track.pm.max_children if track.pm else None
        busy = sample.busy_workers
        implausible = not sample.plausible
        if current is not None and busy is not None and busy > current:
            implausible = True
        return Observation(
            at_seconds=at,
            busy=busy,
            idle=sample.idle_processes,
            total=sample.total_processes,
            queue=sample.queue,
            max_children_reached_increase=increases.max_children_reached if increases else None,
            slow=sample.poll_duration_seconds > self.settings.slow_poll_seconds,
            implausible=implausible,
        )

    def _decide(self, track: PoolTrack, observation: Observation, now: float) -> Decision:
        track.state = track.state.observe(observation, self.policy)
        current = track.pm.max_children if track.pm else None
        budget = self._budget(track, observation, now)
        decision = decide(track.name, track.state, current, self.policy, now, budget)
        track.state = track.state.remember(decision, now, self.policy)
        return decision

    def _budget(self, track: PoolTrack, observation: Observation, now: float) -> MemoryBudget | None:
        if self.budget is None:
            return None
        due = track.budget_read_seconds is None or now - track.budget_read_seconds >= MEMORY_REFRESH_SECONDS
        if due:
            sample = track.last_sample if observation.failure is None else None
            track.budget = self.budget(track.name, sample)
            track.budget_read_seconds = now
            self._publish_budget(track)
        return track.budget

    def _publish_budget(self, track: PoolTrack) -> None:
        budget = track.budget
        if budget is None:
            return
        if budget.worker_bytes is not None:
            self.metrics.worker_memory.labels(pool=track.name).set(budget.worker_bytes)
        if budget.limit_bytes is not None:
            self.metrics.memory_limit.labels(pool=track.name).set(budget.limit_bytes)
        self.metrics.memory_source.clear()
        for other in self.tracks:
            if other.budget is not None:
                self.metrics.memory_source.labels(
                    pool=other.name,
                    limit_source=other.budget.limit_source,
                    worker_source=other.budget.worker_source,
                ).set(1)

    def _fit_shared_limits(self, decisions: list[Decision]) -> list[Decision]:
        """Keep the pools of one master within process.max and their shared memory."""
        process_max = self.process_max() if self.process_max else 0
        budgets = {track.name: track.budget for track in self.tracks}
        shared = next((b for b in budgets.values() if b is not None and b.ceiling is not None), None)
        known = [d for d in decisions if d.current is not None]
        if len(known) < 2 and process_max == 0:
            return decisions
        requests = {}
        for d in known:
            budget = budgets.get(d.pool)
            requests[d.pool] = PoolRequest(
                target=d.target,
                minimum=min(self.policy.min_children, upper_bound(self.policy, budget)),
                demand=int(d.inputs.get("peak_demand") or 0),
                worker_bytes=budget.worker_bytes if budget is not None else None,
            )
        allocations = fit_pools(
            requests, process_max=process_max, shared_memory=shared if len(known) > 1 else None
        )
        fitted = []
        for decision in decisions:
            allocation = allocations.get(decision.pool)
            if allocation is None or allocation.reason is None or allocation.target == decision.target:
                fitted.append(decision)
                continue
            fitted.append(
                replace(
                    decision, target=allocation.target, reason=allocation.reason, message=allocation.message
                )
            )
        return fitted

    def _publish(self, decision: Decision) -> None:
        track = next(t for t in self.tracks if t.name == decision.pool)
        if track.name != str(track.reader.uri):
            # A pool still known only by its status URI (never read, or a
            # duplicate) gets no gauges that would outlive its naming.
            self.metrics.record_decision(decision)
        if decision.current is not None:
            self.metrics.max_children.labels(pool=track.name).set(decision.current)
        fields = {
            "pool": track.name,
            "current": decision.current,
            "target": decision.target,
            "direction": decision.direction.value,
            "reason": decision.reason.value,
            "message": decision.message,
            **decision.inputs,
        }
        changed = decision.changes or (
            track.last_decision is not None and track.last_decision.reason is not decision.reason
        )
        log.log(logging.INFO if changed else logging.DEBUG, "decision", extra={"fields": fields})
        track.last_decision = decision

    async def _apply(self, decisions: list[Decision]) -> None:
        """Apply every change of this tick in one reload; back off exponentially after failures.

        NOTE: the tick waits for the reload's verification, so no pool is
        polled meanwhile; through a saturated pool's own socket that can
        take until the drain ends (up to process_control_timeout).
        """
        if not decisions or self.applier is None:
            return
        now = self.clock()
        if now < self.apply_blocked_until:
            log.debug(
                "apply_deferred",
                extra={"fields": {"retry_in_seconds": round(self.apply_blocked_until - now, 1)}},
            )
            return
        wanted: dict[str, PmSettings] = {}
        for track in self.tracks:
            if track.pm is not None:
                wanted[track.name] = track.pm
        tracks = {track.name: track for track in self.tracks}
        for decision in decisions:
            current = wanted.get(decision.pool)
            if current is not None:
                wanted[decision.pool] = self._resize(tracks[decision.pool], current, decision.target)
        result = await self.applier.apply(wanted)
        self.fpm_down = result.fpm_down
        if result.result != "unchanged":
            self.metrics.reloads.labels(result=result.result).inc()
            self.metrics.reload_duration.observe(result.duration_seconds)
        if result.result not in ("success", "unchanged"):
            self._back_off(decisions, result.result)
            return
        if not self._took_effect(wanted):
            self._back_off(decisions, "override_not_effective")
            return
        self.apply_failures = 0
        now = self.clock()
        by_pool = {d.pool: d for d in decisions}
        for track in self.tracks:
            if track.name in wanted:
                track.pm = wanted[track.name]
                self.metrics.max_children.labels(pool=track.name).set(track.pm.max_children)
            applied = by_pool.get(track.name)
            if applied is None:
                continue
            if result.applied:
                track.state = track.state.applied(applied, now, self.policy)
            log.info(
                "scaled",
                extra={
                    "fields": {
                        "pool": track.name,
                        "from": applied.current,
                        "to": applied.target,
                        "reason": applied.reason.value,
                        "reloaded": result.applied,
                    }
                },
            )

    def _took_effect(self, wanted: Mapping[str, PmSettings]) -> bool:
        """Check in php-fpm's effective configuration that the written sizes are the ones in force.

        A reload succeeds even when another file that sorts after the
        override sets the same keys, or when php-fpm does not include the
        override at all. The change then never takes effect.
        """
        if self.current_pm is None:
            return True
        effective = self.current_pm()
        if not effective:
            return True  # configuration unreadable: nothing to compare with
        ok = True
        for track in self.tracks:
            written = wanted.get(track.name)
            found = effective.get(track.name)
            if written is None or found is None or found.max_children == written.max_children:
                continue
            ok = False
            track.pm = found
            log.error(
                "override_not_effective",
                extra={
                    "fields": {
                        "pool": track.name,
                        "written": written.max_children,
                        "effective": found.max_children,
                        "fix": "another pool file sorts after the override or php-fpm does not include "
                        "it; run phpfpm-autoscaler check",
                    }
                },
            )
        return ok

    def _resize(self, track: PoolTrack, current: PmSettings, target: int) -> PmSettings:
        """Settings for ``target`` workers; dynamic pools get spare values sized to their bursts.

        php-fpm forks dynamic workers one pass per second at a rate doubling
        from 1, so a burst larger than min_spare_servers waits for the ramp.
        The operator's configured spare values remain the floor.
        """
        if current.pm != "dynamic":
            return fit_pm(current, target)
        base = track.base_pm or current
        spare = spare_target(
            track.state.observations, target, SpareSettings(max_spawn_rate=current.max_spawn_rate or 32)
        )
        floor = SpareTarget(
            min_spare_servers=max(spare.min_spare_servers, base.min_spare_servers or 1),
            max_spare_servers=max(spare.max_spare_servers, base.max_spare_servers or 1),
        )
        return fit_pm(current, target, spare=floor)

    def _back_off(self, decisions: list[Decision], result: str) -> None:
        self.apply_failures += 1
        base = max(MIN_BACKOFF_SECONDS, self.settings.min_reload_interval_seconds)
        delay = min(MAX_BACKOFF_SECONDS, base * 2 ** (self.apply_failures - 1))
        self.apply_blocked_until = self.clock() + delay
        for decision in decisions:
            self.metrics.errors.labels(pool=decision.pool, stage="apply").inc()
        log.warning(
            "apply_backoff",
            extra={
                "fields": {
                    "result": result,
                    "failures": self.apply_failures,
                    "retry_in_seconds": delay,
                    "pools": [d.pool for d in decisions],
                }
            },
        )

    def _refresh_pm(self) -> None:
        if self.current_pm is None:
            return
        known = self.current_pm()
        for track in self.tracks:
            pm = known.get(track.name)
            if pm is None:
                lowered = {name.lower(): value for name, value in known.items()}
                pm = lowered.get(track.name.lower())
            if pm is not None:
                track.pm = pm
                if track.base_pm is None:
                    track.base_pm = pm

    async def start_times(self) -> dict[str, float | None]:
        """Read every pool's start time now; None for a pool whose poll fails."""

        async def one(track: PoolTrack) -> tuple[str, float | None]:
            try:
                sample = await track.reader.read()
            except StatusError:
                return track.name, None
            return track.name, sample.start_time_seconds

        return dict(await asyncio.gather(*(one(track) for track in self.tracks)))

"""Invariants of the pool model on small hand-built traces, and the policy on a spike."""

from __future__ import annotations

import math
import statistics
from array import array

import pytest

from autoscaler.policy import Failure, Observation, PolicySettings
from autoscaler.simulate import (
    AgentModel,
    LoadShape,
    PoolModel,
    RunResult,
    Trace,
    generate,
    simulate,
)
from autoscaler.simulate.model import Simulation

# No warm-up penalty, so service times are exactly those of the trace.
COLD_FREE = {"warmup_requests": 0}


def make_trace(arrivals: list[float], durations: list[float], end: float | None = None) -> Trace:
    return Trace(
        "test",
        array("d", arrivals),
        array("d", durations),
        end if end is not None else max(arrivals),
    )


def pinned_agent(children: int, **kwargs: object) -> AgentModel:
    """An agent whose policy can only hold ``children``: it observes without changing the pool."""
    policy = PolicySettings(min_children=children, max_children=children)
    return AgentModel(policy=policy, initial_max_children=children, **kwargs)  # type: ignore[arg-type]


def observe(
    trace: Trace, pool: PoolModel, agent: AgentModel
) -> tuple[RunResult, list[Observation]]:
    """Run and return the result with every Observation the policy received."""
    simulation = Simulation(trace, pool, agent, "test", record_observations=True)
    result = simulation.run()
    assert simulation.observations is not None
    return result, simulation.observations


def test_static_pool_below_capacity_has_no_wait() -> None:
    # Requests every 0.1 s lasting 0.25 s: at most 3 run at once on 4 workers.
    arrivals = [0.05 + 0.1 * i for i in range(200)]
    durations = [0.25] * 200
    result = simulate(make_trace(arrivals, durations), PoolModel(max_children=4, **COLD_FREE))
    assert result.served_total == 200
    assert result.wait_p99_seconds == 0.0
    assert result.latency_p50_seconds == pytest.approx(0.25)
    assert result.latency_p99_seconds == pytest.approx(0.25)
    assert result.rejected_total == 0


def test_warmup_slows_first_requests_of_each_worker() -> None:
    arrivals = [1.0 * i for i in range(20)]
    result = simulate(
        make_trace(arrivals, [0.1] * 20),
        PoolModel(max_children=1, warmup_requests=5, warmup_factor=2.0),
    )
    # One worker: its first 5 requests take 0.2 s, the other 15 take 0.1 s.
    assert result.latency_mean_seconds == pytest.approx((5 * 0.2 + 15 * 0.1) / 20)


def test_overloaded_pool_queues_at_capacity() -> None:
    # 8 requests/s of 0.5 s on 2 workers for 10 s: capacity is 4/s, half must wait.
    arrivals = [i / 8 for i in range(80)]
    result = simulate(make_trace(arrivals, [0.5] * 80), PoolModel(max_children=2, **COLD_FREE))
    assert result.served_total == 80
    assert result.rejected_total == 0
    # The workers alternate: the second one starts at 0.125 s and serves 40
    # requests back to back, so the last request starts at 19.625 s.
    assert result.simulated_seconds == pytest.approx(0.125 + 40 * 0.5)
    # p99 of 80 waits is the largest: the last request's.
    assert result.wait_p99_seconds == pytest.approx(19.625 - arrivals[-1])


def test_little_law_holds_under_queueing() -> None:
    # Poisson arrivals at 90 % of 4 workers make requests queue. The
    # time-average number in the system, sampled by the polls, must equal
    # rate x mean latency.
    shape = LoadShape(
        rate_per_second=24.0, mean_service_seconds=0.15, duration_seconds=4000, seed=3
    )
    trace = generate("steady", shape)
    result, samples = observe(trace, PoolModel(max_children=4, **COLD_FREE), pinned_agent(4))
    in_system = statistics.fmean(o.busy + o.queue for o in samples)  # type: ignore[operator]
    rate = len(trace) / trace.duration_seconds
    assert result.wait_mean_seconds > 0.05
    assert in_system == pytest.approx(rate * result.latency_mean_seconds, rel=0.1)


def test_full_backlog_rejects_requests() -> None:
    # One worker busy for 10 s, backlog of 3: of 10 requests 1 runs, 3 wait, 6 are rejected.
    arrivals = [0.1 * i for i in range(10)]
    pool = PoolModel(max_children=1, listen_backlog=3, **COLD_FREE)
    result = simulate(make_trace(arrivals, [10.0] * 10), pool)
    assert result.rejected_total == 6
    assert result.served_total == 4


def reload_trace() -> Trace:
    # Two 5 s requests fill both workers, so the poll at 1 s reports saturation
    # and the policy raises max_children; a third request arrives during the drain.
    return make_trace([0.1, 0.2, 2.0], [5.0, 5.0, 1.0], end=12.0)


def reload_agent() -> AgentModel:
    policy = PolicySettings(min_children=2, max_children=8, min_reload_interval_seconds=0)
    return AgentModel(policy=policy, initial_max_children=2)


def test_reload_drains_and_holds_requests() -> None:
    pool = PoolModel(max_children=2, restart_seconds=0.05, **COLD_FREE)
    result = simulate(reload_trace(), pool, reload_agent())
    assert result.reloads_total >= 1
    first = result.reloads[0]
    assert first.at_seconds == pytest.approx(1.0)
    assert first.to_children > first.from_children
    # The drain lasts until the longer in-flight request ends at 5.2 s.
    assert first.drain_seconds == pytest.approx(5.2 + 0.05 - 1.0)
    assert result.cut_total == 0
    assert result.served_total == 3
    # The held request starts when the new pool accepts, at 5.25 s.
    assert result.wait_p99_seconds == pytest.approx(5.25 - 2.0)
    assert result.latency_p99_seconds == pytest.approx(5.0)


def test_reload_cuts_requests_past_process_control_timeout() -> None:
    pool = PoolModel(
        max_children=2, restart_seconds=0.05, process_control_timeout_seconds=2.0, **COLD_FREE
    )
    result = simulate(reload_trace(), pool, reload_agent())
    assert result.cut_total == 2
    assert result.served_total == 1
    # Cut at 1 + 2 s; the held request starts 0.05 s later.
    assert result.wait_p99_seconds == pytest.approx(3.05 - 2.0)


def test_dynamic_pool_doubles_its_spawn_rate() -> None:
    # 20 idle workers (start_servers is clamped up to min_spare_servers) take
    # 20 of 40 long requests; php-fpm then forks 1, 2, 4, 8, 16 per second
    # while idle stays below min_spare_servers.
    trace = make_trace([0.5] * 40, [100.0] * 40, end=8.0)
    pool = PoolModel(
        pm="dynamic",
        max_children=64,
        start_servers=1,
        min_spare_servers=20,
        max_spare_servers=30,
        **COLD_FREE,
    )
    result, samples = observe(trace, pool, pinned_agent(64))
    totals = [o.total for o in samples[:7]]
    assert totals == [20, 21, 23, 27, 35, 51, 60]


def test_dynamic_default_spares_ramp_one_per_second() -> None:
    # www.conf's min_spare_servers = 1: only one fork per second under a burst.
    trace = make_trace([0.5] * 30, [100.0] * 30, end=6.0)
    pool = PoolModel(pm="dynamic", max_children=30, **COLD_FREE)
    result, samples = observe(trace, pool, pinned_agent(30))
    totals = [o.total for o in samples[:6]]
    assert totals == [2, 3, 4, 5, 6, 7]


def test_ondemand_forks_on_demand_and_idles_out() -> None:
    trace = make_trace([0.5, 0.5, 0.5], [1.0, 1.0, 1.0], end=20.0)
    pool = PoolModel(pm="ondemand", max_children=5, process_idle_timeout_seconds=10, **COLD_FREE)
    result, samples = observe(trace, pool, pinned_agent(5))
    assert result.wait_p99_seconds == 0.0
    assert samples[0].total == 0
    assert samples[1].total == 3
    # Last activity at 1.5 s: one worker stops per maintenance tick once
    # 10 s have passed, at 12, 13 and 14 s.
    totals = {int(o.at_seconds): o.total for o in samples}
    assert totals[11] == 3
    assert totals[12] == 2
    assert totals[14] == 0


def test_status_through_saturated_pool_times_out() -> None:
    trace = make_trace([0.1], [5.0], end=4.0)
    pool = PoolModel(max_children=1, **COLD_FREE)
    result, samples = observe(trace, pool, pinned_agent(1, status_through_pool=True))
    # Polls at 1 to 4 s wait behind the 5 s request past the 0.8 s deadline;
    # the poll at 5 s waits 0.1 s, until the request ends at 5.1 s.
    failures = [o.failure for o in samples]
    assert failures == [None] + [Failure.TIMEOUT] * 4 + [None]
    assert result.status_timeouts_total == 4
    assert samples[-1].slow is False
    assert samples[-1].busy == 0


def test_slow_status_poll_is_flagged() -> None:
    trace = make_trace([0.1], [1.5], end=2.0)
    result, samples = observe(
        trace, PoolModel(max_children=1, **COLD_FREE), pinned_agent(1, status_through_pool=True)
    )
    # The poll at 1 s waits 0.6 s for the request ending at 1.6 s: above the
    # 0.5 s slow threshold, within the 0.8 s deadline.
    assert samples[1].failure is None
    assert samples[1].slow is True


def test_unix_socket_hides_the_queue() -> None:
    trace = make_trace([0.1, 0.2, 0.3], [5.0, 5.0, 5.0], end=3.0)
    result, samples = observe(trace, PoolModel(max_children=1), pinned_agent(1, unix_socket=True))
    assert all(o.queue is None for o in samples)
    assert samples[1].busy == 1
    assert samples[1].idle == 0


def test_max_children_reached_rises_once_per_episode() -> None:
    trace = make_trace([0.1 * i for i in range(1, 30)], [3.0] * 29, end=6.0)
    pool = PoolModel(pm="ondemand", max_children=2, **COLD_FREE)
    result, samples = observe(trace, pool, pinned_agent(2))
    increases = [o.max_children_reached_increase for o in samples]
    # The first poll has no baseline; later ones see a single rise.
    assert increases[0] is None
    assert sum(i or 0 for i in increases) == 1


def test_static_pool_never_counts_max_children_reached() -> None:
    trace = make_trace([0.1 * i for i in range(1, 30)], [3.0] * 29, end=6.0)
    result, samples = observe(trace, PoolModel(max_children=2), pinned_agent(2))
    assert all(not o.max_children_reached_increase for o in samples)


def test_worker_seconds_integrate_live_workers() -> None:
    trace = make_trace([1.0], [1.0], end=100.0)
    result = simulate(trace, PoolModel(max_children=7))
    assert result.worker_seconds == pytest.approx(7 * 100.0)
    assert result.peak_memory_bytes == 7 * PoolModel().worker_memory_bytes


def test_memory_ceiling_caps_the_policy() -> None:
    shape = LoadShape(duration_seconds=1200, seed=5)
    trace = generate("spike", shape)
    limit = 2048 * 2**20
    reserve = 256 * 2**20
    agent = AgentModel(memory_limit_bytes=limit, memory_reserve_bytes=reserve)
    result = simulate(trace, PoolModel(), agent)
    # floor((2048 - 256) MiB / (64 MiB x 1.1)) = 25 workers.
    assert result.max_max_children == 25
    assert result.peak_memory_bytes <= limit - reserve


def test_growing_worker_memory_lowers_the_ceiling() -> None:
    shape = LoadShape(duration_seconds=1200, rate_per_second=30, seed=5)
    trace = generate("steady", shape)
    pool = PoolModel(worker_memory_growth_bytes_per_request=64 * 1024)
    agent = AgentModel(
        memory_limit_bytes=1024 * 2**20,
        memory_reserve_bytes=0,
        initial_max_children=12,
        policy=PolicySettings(min_children=2, max_children=40),
    )
    result = simulate(trace, pool, agent)
    memory_reasons = result.decision_reasons.get("memory_ceiling", 0)
    assert memory_reasons > 0
    assert any(
        r.reason == "memory_ceiling" and r.to_children < r.from_children for r in result.reloads
    )


def test_policy_beats_static_five_on_spike() -> None:
    trace = generate("spike", LoadShape(duration_seconds=1800, seed=2))
    policy = simulate(trace, PoolModel(), AgentModel())
    fixed = simulate(trace, PoolModel(max_children=5), None)
    assert policy.latency_p99_seconds < fixed.latency_p99_seconds
    assert policy.rejected_total <= fixed.rejected_total


def test_same_seed_same_result() -> None:
    shape = LoadShape(duration_seconds=900, seed=11)
    first = simulate(generate("flash-crowd", shape), PoolModel(pm="dynamic"), AgentModel())
    second = simulate(generate("flash-crowd", shape), PoolModel(pm="dynamic"), AgentModel())
    assert first == second


def test_percentile_nearest_rank() -> None:
    from autoscaler.simulate.model import percentile

    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.5) == 50.0
    assert percentile([], 0.5) == 0.0
    assert math.isclose(percentile([3.0], 0.99), 3.0)


@pytest.mark.parametrize("generator", ["spike", "diurnal", "flash-crowd"])
def test_compacted_state_gives_same_result(generator: str) -> None:
    # Short stabilization so the run sees scale-downs and flap penalties.
    policy = PolicySettings(scale_down_stabilization_seconds=60, min_reload_interval_seconds=10)
    trace = generate(generator, LoadShape(duration_seconds=2400, seed=4, spike_period_seconds=300))
    compact = simulate(trace, PoolModel(), AgentModel(policy=policy))
    full = simulate(trace, PoolModel(), AgentModel(policy=policy, compact_state=False))
    assert compact.reloads_total >= 4
    assert any(r.to_children < r.from_children for r in compact.reloads)
    assert compact == full

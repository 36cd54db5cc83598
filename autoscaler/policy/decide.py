"""The scaling decision for one pool: small pure rules chained in a fixed order.

``decide`` applies, in this order:

1. guards: no sample yet, unknown current size, a misconfigured status page;
2. desire: ceil(peak demand in the decision window / target utilization),
   or, on saturation evidence, a step above the current size (demand beyond
   the limit is invisible: busy workers cannot exceed max_children);
3. bounds: min_children, max_children and the memory ceiling, the ceiling
   winning over everything else;
4. for a scale-up: the per-step limit, then the tolerance band;
5. for a scale-down: frozen on missing or implausible data, then the highest
   recommendation of the stabilization window, the tolerance band and the
   per-step limit. A ceiling below the current size skips these: an
   out-of-memory kill costs more than a queue;
6. the minimum interval since the last reload: short for a scale-up, which
   relieves queued requests, longer for a scale-down.

Each rule returns a value and a reason; the last rule that changed the value
names the decision's reason. The policy imports no I/O and no clock: the
caller passes ``now_seconds``.
"""

from __future__ import annotations

import math

from autoscaler.policy.state import PoolState
from autoscaler.policy.types import (
    CONFIG_FAILURES,
    SATURATION_HINTS,
    Decision,
    MemoryBudget,
    Observation,
    PolicySettings,
    Reason,
)


def decide(
    pool: str,
    state: PoolState,
    current: int | None,
    settings: PolicySettings,
    now_seconds: float,
    budget: MemoryBudget | None = None,
) -> Decision:
    """Decide the target max_children of ``pool`` from its history; see the module docstring."""
    ceiling = upper_bound(settings, budget)
    inputs: dict[str, float | int | str | bool | None] = {"ceiling": ceiling}

    def hold(reason: Reason, message: str, **extra: object) -> Decision:
        return Decision(
            pool=pool,
            current=current,
            target=current if current is not None else settings.min_children,
            reason=reason,
            message=message,
            ceiling=ceiling,
            inputs=inputs,
            **extra,  # type: ignore[arg-type]
        )

    if not state.observations:
        return hold(Reason.NO_DATA, "no poll yet")
    latest = state.observations[-1]
    inputs.update(
        busy=latest.busy,
        idle=latest.idle,
        total=latest.total,
        queue=latest.queue,
        failure=latest.failure.value if latest.failure else None,
        max_children_reached_increase=latest.max_children_reached_increase,
    )
    if latest.failure in CONFIG_FAILURES:
        return hold(Reason.CONFIG_ERROR, "status page misconfigured; pool not scaled")
    if current is None:
        # Without the size in force nothing can be changed safely, but the
        # demand-based recommendation is still worth publishing.
        peak = peak_demand(state, settings, now_seconds)
        if peak is None:
            return hold(Reason.UNKNOWN_CURRENT, "current pm.max_children unknown; pool not scaled")
        wish = math.ceil(peak / settings.target_utilization)
        recommendation, _ = clamp(wish, settings, ceiling)
        return hold(
            Reason.UNKNOWN_CURRENT,
            f"current pm.max_children unknown; pool not scaled (recommendation {recommendation})",
            desired_unclamped=wish,
            recommendation=recommendation,
        )

    saturated, evidence = saturation(latest, current)
    peak = peak_demand(state, settings, now_seconds)
    inputs.update(peak_demand=peak, saturated=saturated, saturation_evidence=evidence)
    if peak is None and not saturated:
        return hold(Reason.NO_DATA, f"no usable sample in the last {settings.decision_window_seconds:g} s")

    desired, reason = desire(peak, current, saturated, latest, settings)
    recommendation, bound_reason = clamp(desired, settings, ceiling)
    if bound_reason is not None:
        reason = bound_reason
    common = {
        "desired_unclamped": desired,
        "recommendation": recommendation,
        "saturated": saturated,
    }

    def verdict(target: int, why_reason: Reason, message: str) -> Decision:
        return Decision(
            pool=pool,
            current=current,
            target=target,
            reason=why_reason,
            message=message,
            ceiling=ceiling,
            inputs=inputs,
            **common,  # type: ignore[arg-type]
        )

    if recommendation == current:
        return verdict(current, reason, f"recommendation {recommendation} equals current")

    above_bound = current > ceiling
    target = recommendation
    below_minimum = current < min(settings.min_children, ceiling)
    if above_bound:
        # Down to the upper bound at once; any further scale-down goes
        # through the usual stabilization on later ticks.
        target = ceiling
        reason = Reason.MAX_CHILDREN if ceiling == settings.max_children else Reason.MEMORY_CEILING
    elif target > current:
        target, step_reason = limit_scale_up(target, current, settings)
        reason = step_reason or reason
        # A pool below its floor goes up regardless of the tolerance band.
        if not saturated and not below_minimum and within_tolerance(target, current, settings):
            return verdict(current, Reason.WITHIN_TOLERANCE, f"{target} is within tolerance of {current}")
    else:
        frozen = scale_down_frozen(state, settings, now_seconds)
        if frozen is not None:
            return verdict(current, frozen, "scale-down frozen: missing or implausible samples")
        stabilized = stabilize(state, recommendation, settings, now_seconds)
        inputs["stabilized"] = stabilized
        if stabilized is None:
            return verdict(current, Reason.STABILIZING, "less history than one stabilization window")
        if stabilized >= current:
            return verdict(current, Reason.STABILIZING, f"stabilization window holds {current}")
        if stabilized > target:
            target, reason = stabilized, Reason.STABILIZING
        if within_tolerance(target, current, settings):
            return verdict(current, Reason.WITHIN_TOLERANCE, f"{target} is within tolerance of {current}")
        target, step_reason = limit_scale_down(target, current, settings)
        reason = step_reason or reason

    if not above_bound and in_cooldown(state, settings, now_seconds, scale_up=target > current):
        return verdict(current, Reason.COOLDOWN, f"would set {target}; last reload too recent")
    return verdict(target, reason, f"{current} -> {target}")


def upper_bound(settings: PolicySettings, budget: MemoryBudget | None) -> int:
    """Return the highest allowed size: max_children, lowered by the memory ceiling when known."""
    memory = budget.ceiling if budget is not None else None
    if memory is None:
        return settings.max_children
    return min(settings.max_children, memory)


def saturation(latest: Observation, current: int) -> tuple[bool, str | None]:
    """Return whether the pool is at its limit with more work than it shows, and the evidence."""
    if latest.failure in SATURATION_HINTS:
        return True, f"status {latest.failure}"
    if latest.slow:
        return True, "slow status poll"
    if latest.max_children_reached_increase:
        return True, "max children reached rose"
    busy = latest.busy
    if busy is None or busy < current:
        return False, None
    if latest.queue:
        return True, "queue at the limit"
    if latest.idle == 0:
        return True, "no idle worker at the limit"
    return False, None


def peak_demand(state: PoolState, settings: PolicySettings, now_seconds: float) -> int | None:
    horizon = now_seconds - settings.decision_window_seconds
    demands = [o.demand for o in state.observations if o.at_seconds >= horizon and o.demand is not None]
    return max(demands) if demands else None


def desire(
    peak: int | None,
    current: int,
    saturated: bool,
    latest: Observation,
    settings: PolicySettings,
) -> tuple[int, Reason]:
    """Workers wanted for the peak demand at the target utilization, or a step on saturation."""
    from_demand = math.ceil((peak or 0) / settings.target_utilization)
    if not saturated:
        return from_demand, Reason.DEMAND
    step = max(math.ceil(current * settings.saturation_step_ratio), current + 1)
    reason = Reason.SATURATION_HINT if latest.failure or latest.slow else Reason.SATURATED
    return max(from_demand, step), reason


def clamp(desired: int, settings: PolicySettings, ceiling: int) -> tuple[int, Reason | None]:
    """Apply min_children and the upper bound; the memory ceiling wins over min_children."""
    if desired > ceiling:
        reason = Reason.MAX_CHILDREN if ceiling == settings.max_children else Reason.MEMORY_CEILING
        return ceiling, reason
    if desired < settings.min_children:
        if ceiling < settings.min_children:
            return ceiling, Reason.MEMORY_CEILING
        return settings.min_children, Reason.MIN_CHILDREN
    return desired, None


def limit_scale_up(target: int, current: int, settings: PolicySettings) -> tuple[int, Reason | None]:
    allowed = max(
        math.ceil(current * (1 + settings.scale_up_max_ratio)),
        current + settings.scale_up_max_workers,
    )
    if target > allowed:
        return allowed, Reason.STEP_LIMIT
    return target, None


def limit_scale_down(target: int, current: int, settings: PolicySettings) -> tuple[int, Reason | None]:
    allowed = min(current - 1, math.floor(current * (1 - settings.scale_down_max_ratio)))
    if target < allowed:
        return allowed, Reason.STEP_LIMIT
    return target, None


def within_tolerance(target: int, current: int, settings: PolicySettings) -> bool:
    # The epsilon keeps 11/10 within a 10 % band despite binary rounding.
    return abs(target / current - 1.0) <= settings.tolerance_ratio + 1e-9


def scale_down_frozen(state: PoolState, settings: PolicySettings, now_seconds: float) -> Reason | None:
    """Return the reason that blocks a scale-down: a failed or implausible poll in the decision window."""
    horizon = now_seconds - settings.decision_window_seconds
    recent = [o for o in state.observations if o.at_seconds >= horizon]
    if any(o.failure is not None for o in recent):
        return Reason.NO_DATA
    if any(o.implausible for o in recent):
        return Reason.IMPLAUSIBLE
    return None


def stabilize(
    state: PoolState, recommendation: int, settings: PolicySettings, now_seconds: float
) -> int | None:
    """Return the highest recommendation within the (penalty-lengthened) stabilization window.

    None while the agent has seen the pool for less than one window: the
    window's high is unknown then, so a restarted agent holds rather than
    trusting its first few samples.
    """
    horizon = now_seconds - state.stabilization_seconds(settings)
    if state.first_seen_seconds is None or state.first_seen_seconds > horizon:
        return None
    window = [value for at, value in state.recommendations if at >= horizon]
    return max([recommendation, *window])


def in_cooldown(state: PoolState, settings: PolicySettings, now_seconds: float, *, scale_up: bool) -> bool:
    if state.last_reload_seconds is None:
        return False
    interval = settings.scale_up_interval_seconds if scale_up else settings.min_reload_interval_seconds
    return now_seconds - state.last_reload_seconds < interval

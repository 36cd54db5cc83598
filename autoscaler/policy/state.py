"""The policy's memory of one pool: recent observations, recommendations, reloads.

Immutable: every update returns a new ``PoolState``, so the policy stays a
pure function of (state, current, settings, budget, now).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from autoscaler.policy.types import Decision, Direction, Observation, PolicySettings


@dataclass(frozen=True, slots=True)
class PoolState:
    observations: tuple[Observation, ...] = ()
    # (at_seconds, recommendation) pairs inside the scale-down window.
    recommendations: tuple[tuple[float, int], ...] = ()
    last_reload_seconds: float | None = None
    last_scale_down_seconds: float | None = None
    # Multiplier of the scale-down stabilization window; grows on flapping.
    flap_penalty: float = 1.0
    penalty_changed_seconds: float | None = None
    # When the agent first saw the pool: a scale-down waits for one full
    # stabilization window of history, so a restarted agent never shrinks a
    # pool on its first few samples.
    first_seen_seconds: float | None = None

    def stabilization_seconds(self, settings: PolicySettings) -> float:
        return settings.scale_down_stabilization_seconds * self.flap_penalty

    def observe(self, observation: Observation, settings: PolicySettings) -> PoolState:
        """Add an observation and drop those older than the decision window.

        The stabilization window works on recommendations, not observations,
        so the decision window is the only one that reads them.
        """
        horizon = observation.at_seconds - settings.decision_window_seconds
        kept = tuple(o for o in self.observations if o.at_seconds >= horizon)
        first_seen = self.first_seen_seconds
        if first_seen is None:
            first_seen = observation.at_seconds
        return replace(self, observations=kept + (observation,), first_seen_seconds=first_seen)

    def remember(
        self, decision: Decision, now_seconds: float, settings: PolicySettings
    ) -> PoolState:
        """Store the decision's recommendation for the stabilization window, decay the penalty."""
        state = self._decayed(now_seconds, settings)
        horizon = now_seconds - state.stabilization_seconds(settings)
        kept = tuple(item for item in state.recommendations if item[0] >= horizon)
        if decision.recommendation is not None:
            kept += ((now_seconds, decision.recommendation),)
        return replace(state, recommendations=kept)

    def applied(
        self, decision: Decision, now_seconds: float, settings: PolicySettings
    ) -> PoolState:
        """Record a reload that applied ``decision``; a quick reversal raises the penalty."""
        state = replace(self, last_reload_seconds=now_seconds)
        if decision.direction is Direction.DOWN:
            return replace(state, last_scale_down_seconds=now_seconds)
        if decision.direction is Direction.UP and self.last_scale_down_seconds is not None:
            since_down = now_seconds - self.last_scale_down_seconds
            if since_down < self.stabilization_seconds(settings):
                penalty = min(
                    settings.flap_penalty_max, self.flap_penalty * settings.flap_penalty_factor
                )
                return replace(state, flap_penalty=penalty, penalty_changed_seconds=now_seconds)
        return state

    def _decayed(self, now_seconds: float, settings: PolicySettings) -> PoolState:
        if self.flap_penalty <= 1.0 or self.penalty_changed_seconds is None:
            return self
        quiet = now_seconds - self.penalty_changed_seconds
        if quiet < self.stabilization_seconds(settings):
            return self
        penalty = max(1.0, self.flap_penalty / settings.flap_penalty_factor)
        return replace(self, flap_penalty=penalty, penalty_changed_seconds=now_seconds)

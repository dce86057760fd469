"""What a served policy answers: one decision (with its safety bookkeeping and an optional
explanation), or a batch of them (ActBatch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agentserve.safety import Fired

VALUE_KINDS = {
    "epsilon_greedy": "q_value",
    "softmax": "logit",
    "greedy": "score",
    "thompson": "posterior_mean",
}
"""What the runtime's `values` output holds, per served distribution (ActResponse explanations)."""


@dataclass(frozen=True)
class ActionExplanation:
    action: int
    allowed: bool
    value_before_mask: float
    value_after_mask: float
    probability_before_mask: float
    probability_after_mask: float
    forbidden_by: tuple[str, ...]
    """"request" and/or the names of the safety rules that forbid the action."""


@dataclass(frozen=True)
class Explanation:
    actions: tuple[ActionExplanation, ...]
    fired: tuple[Fired, ...]
    value_kind: str
    unclamped_action: npt.NDArray[np.float32] | None = None


@dataclass(frozen=True)
class Decision:
    action: int | npt.NDArray[np.float32]
    """An action index (discrete policies) or a float32 vector inside the action box."""
    propensity: float
    """Probability (discrete) or probability density (continuous) of the action; 1.0 when
    deterministic or a fallback."""
    probabilities: npt.NDArray[np.float32]
    """Every action's probability (discrete), empty for continuous policies."""
    values: npt.NDArray[np.float32] | None
    fallback: bool = False
    """Nothing was allowed; the action is the policy's configured fallback."""
    clamp_sources: tuple[str, ...] = ()
    """Continuous: why the action differs from the policy's own ("space", "rule")."""
    masked_by_request: int = 0
    """Actions the request's mask forbade."""
    masked_by_rules: int = 0
    """Actions the safety rules forbade."""
    fired: tuple[Fired, ...] = ()
    """The safety rules whose condition held."""
    explanation: Explanation | None = None
    unclamped_action: npt.NDArray[np.float32] | None = None
    """Continuous: the policy's own action, before clamping."""

    @property
    def clamped(self) -> bool:
        return bool(self.clamp_sources)


@dataclass(frozen=True)
class BatchDecision:
    """ActBatch: one action per observation, in order."""

    actions: npt.NDArray[np.int64] | npt.NDArray[np.float32]
    """[N] action indices, or [N, D] continuous actions."""
    propensities: npt.NDArray[np.float32]
    """[N]"""
    fallbacks: int = 0
    clamp_sources: tuple[str, ...] = ()
    """Every clamp of the batch, by source (one entry per clamped action)."""
    masked_by_request: int = 0
    masked_by_rules: int = 0
    fired: tuple[Fired, ...] = ()

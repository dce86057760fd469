"""A served policy version: its manifest, its runtime, input validation, and the safety layer
around every decision (request mask AND safety rules, fallback, clamping, explanations)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from agentserve import continuous
from agentserve.manifest import VALUE_DISTRIBUTIONS, Artifact, Manifest
from agentserve.safety import Fired, SafetyPolicy, Verdict, parse_safety
from agentserve.spaces import BoxSpec, DiscreteSpec
from service import masking
from service.errors import FailedPrecondition, InvalidArgument
from service.runtime import Runtime, load_runtime

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

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

    @property
    def clamped(self) -> bool:
        return bool(self.clamp_sources)


NO_PROBABILITIES = np.zeros(0, dtype=np.float32)


class ServedPolicy:
    def __init__(
        self, artifact: Artifact, runtime: str | None = None, safety_config: object = None
    ) -> None:
        """`safety_config`: this policy's section of the service's safety config (JSON-like),
        applied on top of the manifest's own rules."""
        manifest = artifact.manifest
        self.manifest: Manifest = manifest
        self.discrete = isinstance(manifest.action_space, DiscreteSpec)
        if isinstance(manifest.action_space, DiscreteSpec):
            self.num_actions = manifest.action_space.n
        else:
            box: BoxSpec = manifest.action_space
            self.num_actions = 0
            self.low = np.asarray(box.low, dtype=np.float32).reshape(-1)
            self.high = np.asarray(box.high, dtype=np.float32).reshape(-1)
            self.action_shape = tuple(box.shape)
        where = f"safety config of policy {manifest.name!r}"
        extra = parse_safety(
            safety_config, manifest.observation_space, manifest.action_space, where
        )
        self.safety: SafetyPolicy = manifest.safety.combined(extra, where)
        self.observation_space = manifest.observation_space
        self.flat_size = manifest.observation_space.flat_size
        self.batch_shape = (
            (1, 1)
            if isinstance(manifest.observation_space, DiscreteSpec)
            else (1, *manifest.observation_space.shape)
        )
        self.runtime: Runtime = load_runtime(artifact, runtime)
        self.has_q_values = manifest.distribution in VALUE_DISTRIBUTIONS
        self.warm_up()

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    def warm_up(self) -> None:
        """One inference at load time, so the first client call pays no lazy initialisation."""
        zeros = np.zeros(self.batch_shape, dtype=np.float32)
        if self.discrete:
            self.runtime.infer(zeros, np.ones((1, self.num_actions), dtype=np.bool_))
        else:
            self.runtime.infer_continuous(zeros)

    def observation(self, values: Sequence[float]) -> npt.NDArray[np.float32]:
        """The request's observation, validated, shaped as a batch of one."""
        if len(values) != self.flat_size:
            raise InvalidArgument(
                f"observation has {len(values)} values but policy {self.name!r} expects "
                f"{self.flat_size}"
            )
        observation = np.asarray(values, dtype=np.float32)
        finite = np.isfinite(observation)
        if not finite.all():
            index = int(np.flatnonzero(~finite)[0])
            raise InvalidArgument(f"observation[{index}] is {observation[index]}: NaN or Inf")
        space = self.observation_space
        if isinstance(space, DiscreteSpec):
            state = observation[0]
            if state != int(state) or not 0 <= state < space.n:
                raise InvalidArgument(
                    f"observation must be a state index in [0, {space.n}), got {state:g}"
                )
        return observation.reshape(self.batch_shape)

    def decide(
        self,
        observation: Sequence[float],
        action_mask: Sequence[bool],
        deterministic: bool,
        rng: np.random.Generator,
        explain: bool = False,
    ) -> Decision:
        batch = self.observation(observation)
        if not self.discrete:
            return self._decide_continuous(batch, action_mask, deterministic, rng, explain)
        request = masking.request_mask(action_mask, self.num_actions)
        verdict = self.safety.verdict(batch.reshape(-1), self.num_actions)
        allowed = request & verdict.allowed
        if not allowed.any():
            decision = self._fallback(request, verdict)
        else:
            result = self.runtime.infer(batch, allowed[None])
            probabilities = result.probabilities[0]
            action, propensity = masking.choose(
                int(result.greedy_actions[0]), probabilities, allowed, deterministic, rng
            )
            values = result.values[0] if self.has_q_values else None
            decision = Decision(action, propensity, probabilities, values)
        decision = replace(
            decision,
            masked_by_request=int((~request).sum()),
            masked_by_rules=int((~verdict.allowed).sum()),
            fired=verdict.fired,
        )
        if explain:
            explanation = self._explain(batch, request, verdict, decision)
            decision = replace(decision, explanation=explanation)
        return decision

    def _fallback(self, request: BoolArray, verdict: Verdict) -> Decision:
        """Nothing is allowed: the configured fallback action, or FAILED_PRECONDITION."""
        fallback = self.safety.fallback_action
        if fallback is None:
            reasons = [
                f"rule {f.rule!r} forbids {list(f.forbidden_actions)}" for f in verdict.fired
            ]
            if not request.all():
                reasons.insert(0, f"the action_mask allows only {np.flatnonzero(request).tolist()}")
            raise FailedPrecondition(
                f"policy {self.name!r}: every action is forbidden in this state ("
                + "; ".join(reasons)
                + ") and the policy has no fallback_action"
            )
        assert isinstance(fallback, int)
        one_hot = np.zeros(self.num_actions, dtype=np.float32)
        one_hot[fallback] = 1.0
        return Decision(fallback, 1.0, one_hot, None, fallback=True)

    def _explain(
        self, batch: FloatArray, request: BoolArray, verdict: Verdict, decision: Decision
    ) -> Explanation:
        """Every action before and after masking: one more inference with nothing masked."""
        unmasked = self.runtime.infer(batch, np.ones((1, self.num_actions), dtype=np.bool_))
        values = unmasked.values[0]
        allowed = request & verdict.allowed
        reasons: list[list[str]] = [[] if request[a] else ["request"] for a in range(len(request))]
        for fired in verdict.fired:
            for action in fired.forbidden_actions:
                reasons[action].append(fired.rule)
        actions = tuple(
            ActionExplanation(
                action=a,
                allowed=bool(allowed[a]),
                value_before_mask=float(values[a]),
                value_after_mask=float(values[a]) if allowed[a] else -math.inf,
                probability_before_mask=float(unmasked.probabilities[0, a]),
                probability_after_mask=float(decision.probabilities[a]),
                forbidden_by=tuple(reasons[a]),
            )
            for a in range(self.num_actions)
        )
        kind = VALUE_KINDS.get(self.manifest.distribution, "score")
        return Explanation(actions, verdict.fired, kind)

    def _decide_continuous(
        self,
        batch: FloatArray,
        action_mask: Sequence[bool],
        deterministic: bool,
        rng: np.random.Generator,
        explain: bool,
    ) -> Decision:
        if len(action_mask) != 0:
            raise InvalidArgument(
                f"policy {self.name!r} has continuous actions: send no action_mask"
            )
        result = self.runtime.infer_continuous(batch)
        if deterministic:
            # The Gaussian's own greedy action is its mean (the graph's greedy_action is that
            # clipped to the box); the squashed Gaussian's lies inside the box by construction.
            gaussian = self.manifest.distribution == "gaussian"
            raw = (result.means if gaussian else result.greedy_actions)[0].reshape(-1)
            density = 1.0
        else:
            raw, density = continuous.sample(
                self.manifest.distribution,
                result.means[0].reshape(-1),
                result.log_stds[0].reshape(-1),
                self.low,
                self.high,
                rng,
            )
        bounds = self.safety.action_bounds(batch.reshape(-1), self.low, self.high)
        fallback = False
        if bounds.empty:
            if self.safety.fallback_action is None:
                names = ", ".join(repr(f.rule) for f in bounds.fired)
                raise FailedPrecondition(
                    f"policy {self.name!r}: the bounds of rules {names} leave no action in this "
                    "state and the policy has no fallback_action"
                )
            action = np.asarray(self.safety.fallback_action, dtype=np.float32)
            fallback, density = True, 1.0
            sources: tuple[str, ...] = ()
        else:
            in_space = np.clip(raw, self.low, self.high)
            action = np.clip(in_space, bounds.low, bounds.high).astype(np.float32)
            sources = tuple(
                source
                for source, changed in (
                    ("space", not np.array_equal(in_space, raw)),
                    ("rule", not np.array_equal(action, in_space)),
                )
                if changed
            )
        explanation = (
            Explanation((), bounds.fired, "", raw.astype(np.float32).copy()) if explain else None
        )
        return Decision(
            action.reshape(self.action_shape),
            density,
            NO_PROBABILITIES,
            None,
            fallback=fallback,
            clamp_sources=sources,
            fired=bounds.fired,
            explanation=explanation,
        )

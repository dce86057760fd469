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
from agentserve.safety import Bounds, Fired, SafetyPolicy, Verdict, parse_safety
from agentserve.spaces import BoxSpec, DiscreteSpec
from service import masking
from service.decision import (
    VALUE_KINDS,
    ActionExplanation,
    BatchDecision,
    Decision,
    Explanation,
)
from service.errors import FailedPrecondition, InvalidArgument
from service.runtime import ContinuousInference, Inference, Runtime, load_runtime

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
__all__ = ["BatchDecision", "Decision", "Explanation", "Prepared", "ServedPolicy"]

NO_PROBABILITIES = np.zeros(0, dtype=np.float32)
SMALL_OBSERVATION = 32
"""Observations of up to this many values are validated with the fewest numpy calls."""


@dataclass(frozen=True)
class Prepared:
    """One validated request, ready for a (possibly batched) inference."""

    observation: FloatArray
    """[*obs_shape] one row of the runtime's input."""
    allowed: BoolArray | None = None
    """Discrete: [A] the request's mask AND the safety rules."""
    request: BoolArray | None = None
    verdict: Verdict | None = None
    bounds: Bounds | None = None
    """Continuous: the action box narrowed by the rules that fired."""
    ready: Decision | None = None
    """Decided without inference (the fallback action)."""
    masked_by_request: int | None = None
    """Discrete: actions `request` forbids, counted in `prepare` (None: count in `finish`)."""
    masked_by_rules: int | None = None
    """Discrete: actions `verdict` forbids, counted in `prepare` (None: count in `finish`)."""


class ServedPolicy:
    def __init__(
        self,
        artifact: Artifact,
        runtime: str | None = None,
        safety_config: object = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        """`safety_config`: this policy's section of the service's safety config (JSON-like),
        applied on top of the manifest's own rules. `runtime`: force one (service.runtime
        RUNTIMES) instead of the manifest's preference; `device`: where the torch runtime runs
        ("cpu", "cuda", "cuda:N"); `threads`: CPU threads of one inference (`load_runtime`)."""
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
        self._row_shape = self.batch_shape[1:]
        self._flat_rows = self._row_shape == (self.flat_size,)
        """A validated observation (flat) already has the runtime's row shape."""
        self._states = (
            manifest.observation_space
            if isinstance(manifest.observation_space, DiscreteSpec)
            else None
        )
        # Per-request constants of the safety layer (discrete): every action allowed by an empty
        # action_mask, and the verdict of a policy without forbid rules (read-only: shared).
        self._all_actions = np.ones(self.num_actions, dtype=np.bool_)
        self._no_rules: Verdict | None = None
        if not self.safety.rules:
            allowed = np.ones(self.num_actions, dtype=np.bool_)
            allowed.setflags(write=False)
            self._no_rules = Verdict(allowed, ())
        self.runtime: Runtime = load_runtime(artifact, runtime, device, threads)
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
        return self._validated(values).reshape(self.batch_shape)

    def _validated(self, values: Sequence[float]) -> npt.NDArray[np.float32]:
        """The request's observation, validated, as a flat float32 array [flat_size]."""
        if len(values) != self.flat_size:
            raise InvalidArgument(
                f"observation has {len(values)} values but policy {self.name!r} expects "
                f"{self.flat_size}"
            )
        if self.flat_size <= SMALL_OBSERVATION:
            # Fewer numpy calls for a few values: fromiter reads a protobuf repeated field twice
            # as fast as asarray, and the float32 values summed as Python floats (which cannot
            # overflow) are finite iff every one of them is.
            observation = np.fromiter(values, dtype=np.float32, count=self.flat_size)
            all_finite = math.isfinite(sum(observation.tolist()))
        else:
            observation = np.asarray(values, dtype=np.float32).reshape(-1)
            all_finite = bool(np.isfinite(observation).all())
        if not all_finite:
            finite = np.isfinite(observation)
            index = int(np.flatnonzero(~finite)[0])
            raise InvalidArgument(f"observation[{index}] is {observation[index]}: NaN or Inf")
        space = self._states
        if space is not None:
            state = observation[0]
            if state != int(state) or not 0 <= state < space.n:
                raise InvalidArgument(
                    f"observation must be a state index in [0, {space.n}), got {state:g}"
                )
        return observation

    # --- One request: prepare (validate, mask, rules) -> infer (batched) -> finish ------------

    def prepare(self, observation: Sequence[float], action_mask: Sequence[bool]) -> Prepared:
        """Validates one request and applies the safety layer; raises InvalidArgument or
        FailedPrecondition. A request that needs no inference (a fallback) is `ready`."""
        flat = self._validated(observation)
        row = flat if self._flat_rows else flat.reshape(self._row_shape)
        if not self.discrete:
            if len(action_mask) != 0:
                raise InvalidArgument(
                    f"policy {self.name!r} has continuous actions: send no action_mask"
                )
            bounds = self.safety.action_bounds(flat, self.low, self.high)
            ready = self._continuous_fallback(bounds) if bounds.empty else None
            return Prepared(row, bounds=bounds, ready=ready)
        if len(action_mask) == 0:
            request, by_request = self._all_actions.copy(), 0
        else:
            request = masking.request_mask(action_mask, self.num_actions)
            by_request = self.num_actions - int(np.count_nonzero(request))
        verdict = self._no_rules
        if verdict is None:
            verdict = self.safety.verdict(flat, self.num_actions)
            by_rules = self.num_actions - int(np.count_nonzero(verdict.allowed))
            allowed = request & verdict.allowed
            ready = None if np.count_nonzero(allowed) else self._fallback(request, verdict)
        else:  # no rules: the request's mask, which allows at least one action
            by_rules, allowed, ready = 0, request.copy(), None
        return Prepared(
            row,
            allowed,
            request,
            verdict,
            ready=ready,
            masked_by_request=by_request,
            masked_by_rules=by_rules,
        )

    def infer(self, items: Sequence[Prepared]) -> Inference | ContinuousInference:
        """One runtime call for every item (stacked in order)."""
        if len(items) == 1:  # a batch of one: views, no copies
            observations = items[0].observation[None]
        else:
            observations = np.array([item.observation for item in items], dtype=np.float32)
        if not self.discrete:
            return self.runtime.infer_continuous(observations)
        if len(items) == 1:
            masks = items[0].allowed[None]  # type: ignore[index]
        else:
            masks = np.array([item.allowed for item in items], dtype=np.bool_)
        return self.runtime.infer(observations, masks)

    def finish(
        self,
        item: Prepared,
        result: Inference | ContinuousInference,
        row: int,
        deterministic: bool,
        rng: np.random.Generator,
    ) -> Decision:
        """The decision for `item` from row `row` of a batched inference."""
        if isinstance(result, ContinuousInference):
            return self._finish_continuous(item, result, row, deterministic, rng)
        assert item.allowed is not None and item.request is not None and item.verdict is not None
        probabilities = result.probabilities[row]
        action, propensity = masking.choose(
            int(result.greedy_actions[row]), probabilities, item.allowed, deterministic, rng
        )
        values = result.values[row] if self.has_q_values else None
        by_request, by_rules = item.masked_by_request, item.masked_by_rules
        return Decision(
            action,
            propensity,
            probabilities,
            values,
            masked_by_request=int((~item.request).sum()) if by_request is None else by_request,
            masked_by_rules=int((~item.verdict.allowed).sum()) if by_rules is None else by_rules,
            fired=item.verdict.fired,
        )

    def decide(
        self,
        observation: Sequence[float],
        action_mask: Sequence[bool],
        deterministic: bool,
        rng: np.random.Generator,
        explain: bool = False,
    ) -> Decision:
        """One request, unbatched (prepare, infer, finish; plus the explanation if asked)."""
        item = self.prepare(observation, action_mask)
        decision = item.ready or self.finish(item, self.infer([item]), 0, deterministic, rng)
        if explain:
            decision = replace(decision, explanation=self._explain(item, decision))
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
        return Decision(
            fallback,
            1.0,
            one_hot,
            None,
            fallback=True,
            masked_by_request=int((~request).sum()),
            masked_by_rules=int((~verdict.allowed).sum()),
            fired=verdict.fired,
        )

    def _continuous_fallback(self, bounds: Bounds) -> Decision:
        if self.safety.fallback_action is None:
            names = ", ".join(repr(f.rule) for f in bounds.fired)
            raise FailedPrecondition(
                f"policy {self.name!r}: the bounds of rules {names} leave no action in this "
                "state and the policy has no fallback_action"
            )
        action = np.asarray(self.safety.fallback_action, dtype=np.float32)
        return Decision(
            action.reshape(self.action_shape),
            1.0,
            NO_PROBABILITIES,
            None,
            fallback=True,
            fired=bounds.fired,
        )

    def _explain(self, item: Prepared, decision: Decision) -> Explanation:
        """Discrete: every action before and after masking (one more inference with nothing
        masked). Continuous: the rules fired and the policy's own action before clamping."""
        if not self.discrete:
            assert item.bounds is not None
            return Explanation((), item.bounds.fired, "", decision.unclamped_action)
        assert item.request is not None and item.verdict is not None
        request, verdict = item.request, item.verdict
        batch = item.observation[None]
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

    def _policy_actions(
        self,
        result: ContinuousInference,
        rows: slice | npt.NDArray[np.int64],
        deterministic: bool,
        rng: np.random.Generator,
    ) -> tuple[FloatArray, FloatArray]:
        """The policy's own actions [N, D] (before clamping) and their densities [N]."""
        count = len(result.means[rows])
        if deterministic:
            # The Gaussian's own greedy action is its mean (the graph's greedy_action is that
            # clipped to the box); the squashed Gaussian's lies inside the box by construction.
            gaussian = self.manifest.distribution == "gaussian"
            raw = (result.means if gaussian else result.greedy_actions)[rows]
            return raw.reshape(count, -1), np.ones(count, dtype=np.float32)
        return continuous.sample(
            self.manifest.distribution,
            result.means[rows].reshape(count, -1),
            result.log_stds[rows].reshape(count, -1),
            self.low,
            self.high,
            rng,
        )

    def _clamp(self, raw: FloatArray, bounds: Bounds | None) -> tuple[FloatArray, tuple[str, ...]]:
        """`raw` [D] clipped to the box, then to the rules' bounds; and what changed it."""
        in_space = np.clip(raw, self.low, self.high)
        action = in_space if bounds is None else np.clip(in_space, bounds.low, bounds.high)
        sources = tuple(
            source
            for source, changed in (
                ("space", not np.array_equal(in_space, raw)),
                ("rule", not np.array_equal(action, in_space)),
            )
            if changed
        )
        return action.astype(np.float32), sources

    def _finish_continuous(
        self,
        item: Prepared,
        result: ContinuousInference,
        row: int,
        deterministic: bool,
        rng: np.random.Generator,
    ) -> Decision:
        raws, densities = self._policy_actions(result, slice(row, row + 1), deterministic, rng)
        action, sources = self._clamp(raws[0], item.bounds)
        return Decision(
            action.reshape(self.action_shape),
            float(densities[0]),
            NO_PROBABILITIES,
            None,
            clamp_sources=sources,
            fired=() if item.bounds is None else item.bounds.fired,
            unclamped_action=raws[0].astype(np.float32).copy(),
        )

    # --- ActBatch: many observations in one message -------------------------------------------

    def decide_batch(
        self,
        observations: Sequence[float],
        action_masks: Sequence[bool],
        deterministic: bool,
        rng: np.random.Generator,
    ) -> BatchDecision:
        """Every row validated and passed through the safety layer, one runtime call, actions
        chosen for all rows at once. A row that fails fails the batch, naming the row."""
        count, remainder = divmod(len(observations), self.flat_size)
        if count == 0 or remainder:
            raise InvalidArgument(
                f"observations has {len(observations)} values: need a positive multiple of "
                f"{self.flat_size} (policy {self.name!r})"
            )
        batch = np.asarray(observations, dtype=np.float32).reshape(count, self.flat_size)
        # One reduction for the common case: the float64 sum of float32 values cannot overflow,
        # so it is finite iff every value is; otherwise find the first bad row.
        if not math.isfinite(np.add.reduce(batch, axis=None, dtype=np.float64)):
            bad = np.flatnonzero(~np.isfinite(batch).all(axis=1))
            raise InvalidArgument(f"observation row {int(bad[0])} has NaN or Inf")
        if isinstance(self.observation_space, DiscreteSpec):
            states = batch[:, 0]
            bad = np.flatnonzero((states != np.floor(states)) | (states < 0))
            bad = np.union1d(bad, np.flatnonzero(states >= self.observation_space.n))
            if len(bad):
                raise InvalidArgument(
                    f"observation row {int(bad[0])} is not a state index in "
                    f"[0, {self.observation_space.n})"
                )
        shaped = batch.reshape(count, *self.batch_shape[1:])
        if not self.discrete:
            return self._decide_batch_continuous(shaped, batch, action_masks, deterministic, rng)
        request = masking.request_masks(action_masks, count, self.num_actions)
        if not self.safety.rules:  # the request's masks alone: no fallback, nothing fired
            result = self.runtime.infer(shaped, request)
            actions, propensities = masking.choose_batch(
                result.greedy_actions, result.probabilities, request, deterministic, rng
            )
            by_request = 0 if len(action_masks) == 0 else request.size - np.count_nonzero(request)
            return BatchDecision(actions, propensities, masked_by_request=int(by_request))
        allowed, fallback_rows = request.copy(), np.zeros(count, dtype=np.bool_)
        fired: list[Fired] = []
        for i in range(count):
            verdict = self.safety.verdict(batch[i], self.num_actions)
            allowed[i] &= verdict.allowed
            fired.extend(verdict.fired)
            if not allowed[i].any():
                self._fallback(request[i], verdict)  # raises without a fallback
                fallback_rows[i] = True
                allowed[i] = True  # any row for the graph; replaced below
        result = self.runtime.infer(shaped, allowed)
        actions, propensities = masking.choose_batch(
            result.greedy_actions, result.probabilities, allowed, deterministic, rng
        )
        if fallback_rows.any():
            actions[fallback_rows] = int(self.safety.fallback_action)  # type: ignore[arg-type]
            propensities[fallback_rows] = 1.0
        return BatchDecision(
            actions,
            propensities,
            fallbacks=int(fallback_rows.sum()),
            masked_by_request=int((~request).sum()),
            masked_by_rules=int((~allowed & request).sum()),
            fired=tuple(fired),
        )

    def _decide_batch_continuous(
        self,
        shaped: FloatArray,
        flat: FloatArray,
        action_masks: Sequence[bool],
        deterministic: bool,
        rng: np.random.Generator,
    ) -> BatchDecision:
        if len(action_masks) != 0:
            raise InvalidArgument(
                f"policy {self.name!r} has continuous actions: send no action_masks"
            )
        result = self.runtime.infer_continuous(shaped)
        raws, densities = self._policy_actions(result, slice(None), deterministic, rng)
        if not self.safety.bounds:
            actions = np.clip(raws, self.low, self.high).astype(np.float32)
            clamped = int((~np.all(actions == raws, axis=1)).sum())
            return BatchDecision(actions, densities, clamp_sources=("space",) * clamped)
        actions = np.empty_like(raws)
        sources: list[str] = []
        fired: list[Fired] = []
        fallbacks = 0
        for i in range(len(raws)):
            bounds = self.safety.action_bounds(flat[i], self.low, self.high)
            fired.extend(bounds.fired)
            if bounds.empty:
                fallback = self._continuous_fallback(bounds)
                actions[i], densities[i] = np.asarray(fallback.action).reshape(-1), 1.0
                fallbacks += 1
                continue
            actions[i], row_sources = self._clamp(raws[i], bounds)
            sources.extend(row_sources)
        return BatchDecision(
            actions,
            densities,
            fallbacks=fallbacks,
            clamp_sources=tuple(sources),
            fired=tuple(fired),
        )

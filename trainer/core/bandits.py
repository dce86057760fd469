"""What the bandit learners share: per-state tables, random tie-breaking, batch bookkeeping.

The non-contextual bandits (`epsilon_greedy`, `ucb1`, `thompson`) keep one independent bandit
per discrete observation: a table of statistics indexed [state, arm]. The bundled bandit envs
observe `Discrete(1)`, so there is a single row; a batch of independent problems (the testbed's
2,000 runs in `trainer/testbed.py`) is the same learner over `Discrete(runs)`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from agentserve.errors import ConfigError
from agentserve.spaces import DiscreteSpec, SpaceSpec
from trainer.learner import BoolArray, FloatArray, IntArray, Learner

RNG_STREAM = 0xBA4D17
"""Mixed into the seed of the bandit learners' generators (see `learner_rng`)."""


def learner_rng(seed: int) -> np.random.Generator:
    """The learner's generator, on a stream of its own. `default_rng(seed)` would replay the very
    draws of a Gymnasium env reset with the same seed: Thompson's arm choice and the env's reward
    would then come from the same uniform number, one step after the other."""
    return np.random.default_rng([seed, RNG_STREAM])


def argmax_random_ties(
    rng: np.random.Generator, scores_BA: npt.NDArray[Any], mask_BA: BoolArray | None
) -> tuple[IntArray, FloatArray]:
    """The best allowed action of each row, ties broken uniformly at random (Sutton & Barto's
    argmax); returns (actions_B, propensities_B), a propensity being 1 / number of tied arms.

    +inf scores (untried arms) tie with each other; masked actions are never chosen."""
    allowed_BA = np.ones(scores_BA.shape, dtype=np.bool_) if mask_BA is None else mask_BA
    best_B = np.where(allowed_BA, scores_BA, -np.inf).max(axis=1, keepdims=True)
    ties_BA = allowed_BA & (scores_BA == best_B)
    ties_BA |= allowed_BA & ~ties_BA.any(axis=1, keepdims=True)  # NaN scores: any allowed arm
    counts_B = ties_BA.sum(axis=1)
    pick_B = np.minimum((rng.random(len(counts_B)) * counts_B).astype(np.int64), counts_B - 1)
    rank_BA = np.cumsum(ties_BA, axis=1) - 1
    actions_B = np.argmax(ties_BA & (rank_BA == pick_B[:, None]), axis=1).astype(np.int64)
    return actions_B, (1.0 / counts_B).astype(np.float32)


def unique_runs(keys_B: npt.NDArray[np.int64]) -> list[slice]:
    """Consecutive slices of a batch in which no key repeats, in order: updates that depend on
    the order of equal keys (constant step sizes) stay sequential, the rest is vectorised."""
    if len(np.unique(keys_B)) == len(keys_B):
        return [slice(0, len(keys_B))]
    runs: list[slice] = []
    start, seen = 0, set[int]()
    for i, key in enumerate(keys_B.tolist()):
        if key in seen:
            runs.append(slice(start, i))
            start, seen = i, set()
        seen.add(key)
    runs.append(slice(start, len(keys_B)))
    return runs


def load_array(tensors: dict[str, npt.NDArray[Any]], key: str, target: npt.NDArray[Any]) -> None:
    """Copies checkpoint array `key` into `target`, with a clear error when it does not fit."""
    if key not in tensors:
        raise ConfigError(f"checkpoint lacks the array {key!r}")
    array = tensors[key]
    if array.shape != target.shape:
        raise ConfigError(
            f"checkpoint array {key!r} has shape {array.shape}, expected {target.shape}"
        )
    target[...] = array


class TableBandit(Learner):
    """A non-contextual bandit learner: statistics per (discrete observation, arm)."""

    max_table_size: ClassVar[int] = 10_000_000
    """Largest states x arms table accepted."""

    def __init__(
        self, observation_space: SpaceSpec, action_space: SpaceSpec, config: Any, seed: int
    ) -> None:
        super().__init__(observation_space, action_space, config, seed)
        self.rng = learner_rng(seed)
        assert isinstance(observation_space, DiscreteSpec)
        assert isinstance(action_space, DiscreteSpec)
        self.num_states = observation_space.n
        self.num_actions = action_space.n
        self.counts = np.zeros((self.num_states, self.num_actions), dtype=np.int64)
        """[S, A] pulls of each arm in each state."""

    @classmethod
    def check_spaces(cls, observation_space: SpaceSpec, action_space: SpaceSpec) -> None:
        if not isinstance(observation_space, DiscreteSpec):
            raise ConfigError(
                f"{cls.algorithm} needs a Discrete observation space (one bandit per state, e.g. "
                "Discrete(1)); use linucb for vector contexts"
            )
        if not isinstance(action_space, DiscreteSpec):
            raise ConfigError(f"{cls.algorithm} needs a Discrete action space (the arms)")
        if observation_space.n * action_space.n > cls.max_table_size:
            raise ConfigError(
                f"{cls.algorithm}: {observation_space.n} states x {action_space.n} arms is too "
                f"large a table (at most {cls.max_table_size:,} entries)"
            )

    def states(self, observations: FloatArray) -> IntArray:
        """[B] state indices of a batch of discrete observations ([B, 1] floats)."""
        return np.asarray(observations, dtype=np.int64).reshape(len(observations), -1)[:, 0]

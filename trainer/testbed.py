"""Sutton & Barto's 10-armed testbed (section 2.3): many independent bandit problems at once.

Shared by the slow reference test (`tests/learning/test_bandits_reference.py`) and the benchmark
that reproduces figures 2.2 and 2.4 (`benchmarks/bandits.py`, `make bench-bandits`).

Run r's problem is the one `agentserve/KArmedTestbed-v0` draws at `reset(seed=seed * runs + r)`.
The runs share one learner over `Discrete(runs)` observations: the bandit learners keep one
independent bandit per observation, so acting and learning on the batch of all runs at once is
exactly `runs` separate learners with the same update rules, only vectorised. Rewards follow the
env's rule, N(q*(a), 1), drawn for all runs at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agentserve.spaces import DiscreteSpec
from trainer import registry
from trainer.core.config import resolve
from trainer.envs import TESTBED_ID
from trainer.envs.bandits import KArmedTestbedEnv
from trainer.learner import TransitionBatch

LATE_STEPS = (500, 1000)
"""Steps (1-based, inclusive) over which the reference bars average the reward."""


@dataclass(frozen=True)
class Method:
    label: str
    algorithm: str
    overrides: tuple[str, ...]
    bar: float | None = None
    """The mean reward over LATE_STEPS must reach this (None: no bar)."""


GREEDY = Method("ε-greedy ε=0 (greedy)", "epsilon_greedy", ("epsilon=0",))
EPSILON_001 = Method("ε-greedy ε=0.01", "epsilon_greedy", ("epsilon=0.01",))
EPSILON_01 = Method("ε-greedy ε=0.1", "epsilon_greedy", ("epsilon=0.1",), bar=1.25)
UCB = Method("UCB c=2", "ucb1", ("c=2",), bar=1.45)
FIGURE_2_2 = (GREEDY, EPSILON_001, EPSILON_01)
"""Epsilon-greedy with sample averages, epsilon in {0, 0.01, 0.1}."""
FIGURE_2_4 = (UCB, EPSILON_01)
"""UCB with c = 2 against epsilon-greedy with epsilon 0.1."""
METHODS = (GREEDY, EPSILON_001, EPSILON_01, UCB)


@dataclass(frozen=True)
class Curves:
    method: Method
    runs: int
    average_reward: npt.NDArray[np.float64]
    """[steps] reward at each step, averaged over the runs."""
    optimal_action: npt.NDArray[np.float64]
    """[steps] fraction of runs that pulled their optimal arm at each step."""

    @property
    def late_reward(self) -> float:
        first, last = LATE_STEPS
        return float(self.average_reward[first - 1 : last].mean())

    @property
    def passed(self) -> bool:
        return self.method.bar is None or self.late_reward >= self.method.bar


def run_testbed(
    method: Method, runs: int = 2000, steps: int = 1000, arms: int = 10, seed: int = 0
) -> Curves:
    """`runs` independent runs of `steps` pulls of `method` on fresh testbed problems."""
    cls = registry.get(method.algorithm)
    config = resolve(method.algorithm, cls.config_class, TESTBED_ID, list(method.overrides)).config
    learner = cls(DiscreteSpec(runs), DiscreteSpec(arms), config, seed)
    env = KArmedTestbedEnv(k=arms, steps=steps)
    q_star_RA = np.stack(
        [env.reset(seed=seed * runs + r)[1]["expected_rewards"] for r in range(runs)]
    )
    optimal_R = q_star_RA.argmax(axis=1)
    rng = np.random.default_rng([seed, runs, steps])
    observations_R1 = np.arange(runs, dtype=np.float32)[:, None]
    runs_R = np.arange(runs)
    never_R = np.zeros(runs, dtype=np.bool_)
    average_reward_T, optimal_action_T = np.empty(steps), np.empty(steps)
    for t in range(steps):
        actions_R = learner.act(observations_R1, None, deterministic=False).actions
        rewards_R = q_star_RA[runs_R, actions_R] + rng.normal(size=runs)
        learner.observe(
            TransitionBatch(
                observations=observations_R1,
                actions=actions_R,
                rewards=rewards_R.astype(np.float32),
                next_observations=observations_R1,
                terminated=never_R,
                truncated=never_R if t + 1 < steps else ~never_R,
            )
        )
        average_reward_T[t] = rewards_R.mean()
        optimal_action_T[t] = np.mean(actions_R == optimal_R)
    return Curves(method, runs, average_reward_T, optimal_action_T)

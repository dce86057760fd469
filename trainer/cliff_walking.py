"""Sutton & Barto, Example 6.6 (Figure 6.4): SARSA against Q-learning on the cliff walk.

Shared by the slow test (`tests/learning/test_cliff_walking.py`) and the benchmark that writes
`docs/cliff-walking.md` (`benchmarks/cliff_walking.py`, `make bench-cliff`).

CliffWalking-v1 is the book's 4 x 12 grid: start at the bottom left, goal at the bottom right,
the cliff between them (a step into it gives -100 and puts the agent back at the start), -1 for
every other step, no discounting and no time limit. Both learners act epsilon-greedily with a
fixed epsilon = 0.1, alpha = 0.5 and Q = 0 at the start, for 500 episodes; a run is one learner,
seeded, driven by `run_one`'s episode loop as `trainer.loop` drives any learner (the action at s'
is chosen before `observe`, which gets it as `next_actions`). SARSA learns the values of the
exploring policy it follows, so its greedy path keeps away from the cliff and its online return
(the sum of rewards of each training episode) is higher; Q-learning learns the optimal path
right along the cliff and, still exploring, falls off now and then.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agentserve.envtools import flat_observation
from agentserve.spaces import space_from_gym
from trainer import registry
from trainer.algos.qlearning import QLearning
from trainer.core.config import build_config
from trainer.envs import make_env
from trainer.learner import TransitionBatch

ENV_ID = "CliffWalking-v1"
ROWS, COLUMNS = 4, 12
START, GOAL = (ROWS - 1) * COLUMNS, ROWS * COLUMNS - 1
OPTIMAL_LENGTH = 13
"""Steps of the optimal path: up, eleven steps right along the cliff, down."""
SETTINGS: dict[str, Any] = {
    "learning_rate": 0.5,
    "gamma": 1.0,
    "exploration_initial_eps": 0.1,
    "exploration_final_eps": 0.1,
    "exploration_fraction": 0.0,
    "initial_q": 0.0,
}
"""The book's settings as `QLearningConfig` fields (exploration_fraction 0: a fixed epsilon)."""
METHODS = {"sarsa": "SARSA", "qlearning": "Q-learning"}
EPISODES = 500
LATE_EPISODES = 100
"""The online returns are compared over this many final episodes."""
SAFETY_LIMIT = 10_000
"""Steps after which an episode is cut off (truncated). Never reached with epsilon = 0.1; it only
keeps a broken learner from looping forever."""
PATH_LIMIT = 100
"""Greedy steps after which a greedy path that has not reached the goal is abandoned."""


def cli_overrides() -> tuple[str, ...]:
    """`SETTINGS` as `agentserve train -p` overrides."""
    return tuple(f"{key}={value}" for key, value in SETTINGS.items())


@dataclass(frozen=True)
class GreedyPath:
    """The states the greedy policy visits from the start (the start included)."""

    states: tuple[int, ...]
    reaches_goal: bool

    @property
    def length(self) -> int:
        return len(self.states) - 1

    @property
    def cliff_distance(self) -> int:
        """Rows between the path and the cliff over the cliff's columns: 1 = the row next to the
        cliff, 3 = the top row. (A step into the cliff puts the agent back at the start, so a
        path never holds a cliff cell.)"""
        rows = [s // COLUMNS for s in self.states if 0 < s % COLUMNS < COLUMNS - 1]
        return ROWS - 1 - max(rows, default=0)

    @property
    def touches_cliff_row(self) -> bool:
        """Enters the row next to the cliff somewhere over the cliff's columns."""
        return self.cliff_distance <= 1

    @property
    def optimal(self) -> bool:
        """The 13-step path right along the cliff."""
        return self.reaches_goal and self.length == OPTIMAL_LENGTH

    @property
    def safe(self) -> bool:
        """Reaches the goal without entering the row next to the cliff."""
        return self.reaches_goal and not self.touches_cliff_row

    def describe(self) -> str:
        if not self.reaches_goal:
            return f"no goal within {PATH_LIMIT} steps (loops)"
        return f"{self.length} steps"

    def grid(self) -> str:
        """The path drawn on the grid: S start, G goal, C cliff, * path, . elsewhere."""
        cells = [["." for _ in range(COLUMNS)] for _ in range(ROWS)]
        for column in range(1, COLUMNS - 1):
            cells[ROWS - 1][column] = "C"
        for state in self.states:
            cells[state // COLUMNS][state % COLUMNS] = "*"
        cells[ROWS - 1][0], cells[ROWS - 1][COLUMNS - 1] = "S", "G"
        return "\n".join("".join(row) for row in cells)


@dataclass(frozen=True)
class Run:
    returns: npt.NDArray[np.float64]
    """[episodes] online return of every training episode."""
    path: GreedyPath
    """The greedy policy's path after the last episode."""
    q_table: npt.NDArray[np.float32]
    steps: int
    truncated: int
    """Episodes cut off at SAFETY_LIMIT (expected: 0)."""


@dataclass(frozen=True)
class Result:
    algorithm: str
    runs: tuple[Run, ...]

    @property
    def label(self) -> str:
        return METHODS.get(self.algorithm, self.algorithm)

    @property
    def mean_returns(self) -> npt.NDArray[np.float64]:
        """[episodes] online return averaged over the runs."""
        return np.asarray(np.mean([run.returns for run in self.runs], axis=0), dtype=np.float64)

    def smoothed(self, window: int = 10) -> npt.NDArray[np.float64]:
        """Run-averaged online returns, averaged over the last `window` episodes (fewer at the
        start)."""
        sums = np.cumsum(np.concatenate([[0.0], self.mean_returns]))
        ends = np.arange(1, len(sums))
        starts = np.maximum(0, ends - window)
        return np.asarray((sums[ends] - sums[starts]) / (ends - starts), dtype=np.float64)

    @property
    def late_return(self) -> float:
        """Mean online return over the last LATE_EPISODES episodes and every run."""
        return float(self.mean_returns[-LATE_EPISODES:].mean())

    def fraction(self, attribute: str) -> float:
        """Fraction of runs whose greedy path has the boolean `attribute` ("optimal", "safe",
        "reaches_goal", "touches_cliff_row")."""
        return float(np.mean([getattr(run.path, attribute) for run in self.runs]))

    def path_counts(self) -> list[tuple[str, int]]:
        """How many runs end with each kind of greedy path ("17 steps", "loops"), most first."""
        return Counter(run.path.describe() for run in self.runs).most_common()

    def average_path(self) -> GreedyPath:
        """The greedy path of the Q-table averaged over the runs (the runs' common tendency)."""
        learner = make_learner(self.algorithm, 0)
        learner.q_table[...] = np.mean([run.q_table for run in self.runs], axis=0)
        return greedy_path(learner)


def make_learner(algorithm: str, seed: int) -> QLearning:
    cls = registry.get(algorithm)
    env = make_env(ENV_ID)
    try:
        learner = cls(
            space_from_gym(env.observation_space),
            space_from_gym(env.action_space),
            build_config(cls.config_class, dict(SETTINGS)),
            seed,
        )
    finally:
        env.close()
    assert isinstance(learner, QLearning)
    return learner


def greedy_path(learner: QLearning) -> GreedyPath:
    env = make_env(ENV_ID)
    try:
        observation, _ = env.reset(seed=0)
        states = [int(observation)]
        while len(states) <= PATH_LIMIT:
            action = learner.act(flat_observation(observation)[None], None, True).actions[0]
            observation, _, terminated, _, _ = env.step(int(action))
            states.append(int(observation))
            if terminated:
                return GreedyPath(tuple(states), reaches_goal=True)
        return GreedyPath(tuple(states), reaches_goal=False)
    finally:
        env.close()


def run_one(algorithm: str, seed: int, episodes: int = EPISODES) -> Run:
    """One learner trained for `episodes` episodes; its online returns and final greedy path."""
    learner = make_learner(algorithm, seed)
    env = make_env(ENV_ID, max_episode_steps=SAFETY_LIMIT)

    def act(observation: npt.NDArray[np.float32]) -> int:
        return int(learner.act(observation[None], None, False).actions[0])

    returns = np.zeros(episodes)
    truncations = 0
    try:
        for episode in range(episodes):
            raw, _ = env.reset(seed=seed if episode == 0 else None)
            observation = flat_observation(raw)
            action = act(observation)
            done = False
            while not done:
                raw, reward, terminated, truncated, _ = env.step(action)
                next_observation = flat_observation(raw)
                done = terminated or truncated
                # The action at s' is chosen before learning, so SARSA learns from the one taken.
                next_action = -1 if done else act(next_observation)
                learner.observe(
                    TransitionBatch(
                        observations=observation[None],
                        actions=np.array([action], dtype=np.int64),
                        rewards=np.array([reward], dtype=np.float32),
                        next_observations=next_observation[None],
                        terminated=np.array([terminated]),
                        truncated=np.array([truncated]),
                        next_actions=np.array([next_action], dtype=np.int64),
                    )
                )
                returns[episode] += float(reward)
                observation, action = next_observation, next_action
                truncations += int(truncated and not terminated)
    finally:
        env.close()
    return Run(
        returns, greedy_path(learner), learner.q_table.copy(), learner.num_steps, truncations
    )


def run_method(algorithm: str, runs: int, episodes: int = EPISODES, seed: int = 0) -> Result:
    """`runs` independent runs; run r is seeded with `seed * runs + r` for every method."""
    return Result(
        algorithm, tuple(run_one(algorithm, seed * runs + r, episodes) for r in range(runs))
    )


@dataclass(frozen=True)
class Claim:
    text: str
    holds: bool
    detail: str


RETURN_MARGIN = 5.0
"""SARSA's late online return must beat Q-learning's by this much (the book: about -25 / -50)."""
SARSA_OFF_CLIFF_ROW = 0.7
"""At least this fraction of SARSA's runs end with a greedy path off the row next to the cliff."""
QLEARNING_OPTIMAL = 0.9
"""At least this fraction of Q-learning's runs end with the optimal greedy path."""


def claims(sarsa: Result, qlearning: Result) -> list[Claim]:
    """Example 6.6's claims, each with the numbers behind it."""
    late = slice(-LATE_EPISODES, None)
    above = float(np.mean(sarsa.smoothed()[late] > qlearning.smoothed()[late]))
    off_row = 1.0 - sarsa.fraction("touches_cliff_row")
    sarsa_average, qlearning_average = sarsa.average_path(), qlearning.average_path()
    return [
        Claim(
            f"SARSA's online return is above Q-learning's over the last {LATE_EPISODES} episodes",
            sarsa.late_return > qlearning.late_return + RETURN_MARGIN,
            f"mean {sarsa.late_return:.1f} against {qlearning.late_return:.1f} (asked: a margin "
            f"of {RETURN_MARGIN:g}); the smoothed SARSA curve is above in {above:.0%} of them",
        ),
        Claim(
            "SARSA's greedy path keeps off the row next to the cliff",
            off_row >= SARSA_OFF_CLIFF_ROW,
            f"{off_row:.0%} of runs (asked: {SARSA_OFF_CLIFF_ROW:.0%}); "
            f"{sarsa.fraction('safe'):.0%} reach the goal that way, "
            f"{sarsa.fraction('optimal'):.0%} take the optimal path",
        ),
        Claim(
            "Q-learning's greedy path is the optimal one, along the cliff (13 steps)",
            qlearning.fraction("optimal") >= QLEARNING_OPTIMAL,
            f"{qlearning.fraction('optimal'):.0%} of runs (asked: {QLEARNING_OPTIMAL:.0%})",
        ),
        Claim(
            "With the Q-tables averaged over the runs, SARSA's greedy path is safe and "
            "Q-learning's optimal",
            sarsa_average.safe and qlearning_average.optimal,
            f"SARSA: {sarsa_average.describe()}, {sarsa_average.cliff_distance} row(s) from the "
            f"cliff; Q-learning: {qlearning_average.describe()}, "
            f"{qlearning_average.cliff_distance} row(s) from the cliff",
        ),
    ]

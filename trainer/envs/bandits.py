"""Bandit environments: an episode is `steps` pulls of one of `k` arms, ended by truncation.

- `agentserve/KArmedTestbed-v0`: Sutton & Barto's k-armed testbed (section 2.3): arm means
  q*(a) ~ N(0, 1), reward ~ N(q*(a), 1).
- `agentserve/BernoulliBandit-v0`: arm success rates p(a) ~ U(0, 1), reward 1 with probability
  p(a), else 0.
- `agentserve/ContextualBandit-v0`: linear contextual rewards. Each step shows a context
  x ~ N(0, I_d) clipped to [-5, 5] (the observation); reward = theta_a . x + N(0, noise_std^2),
  with the rows theta_a ~ N(0, I_d / d), so each arm's expected reward has about unit variance
  over contexts.

The non-contextual bandits observe `Discrete(1)` (always 0), so table learners apply unchanged.

The problem (means, rates or theta) is drawn at every `reset` from the env's seeded generator,
as in the testbed's 2,000 independent runs. A served policy needs one fixed problem instead:
`problem_seed=N` draws the same problem at every reset (rewards and contexts still follow the
reset seed); the presets of the bandit algorithms set it.

`info` (from `reset` and `step`) holds `expected_rewards` (each arm's expected reward for the
observation returned with it) and `optimal_action` (their argmax); `step`'s info also holds
`regret`: the expected reward of the best arm minus that of the arm just pulled.
"""

from __future__ import annotations

import abc
from typing import Any, Generic, TypeVar

import gymnasium as gym
import numpy as np
import numpy.typing as npt

ObsT = TypeVar("ObsT")
FloatArray = npt.NDArray[np.float64]
CONTEXT_BOUND = 5.0
"""Contexts are clipped to [-CONTEXT_BOUND, CONTEXT_BOUND] (a bounded Box; clipping is rare)."""


class BanditEnv(gym.Env[ObsT, np.int64], Generic[ObsT], metaclass=abc.ABCMeta):
    """The shared episode logic; subclasses draw a problem, observe, and pay rewards."""

    metadata = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012  (Gymnasium declares it an instance field)

    def __init__(
        self, k: int, steps: int, problem_seed: int | None, render_mode: str | None
    ) -> None:
        if k < 1 or steps < 1:
            raise ValueError(f"a bandit needs k >= 1 arms and steps >= 1, got k={k}, steps={steps}")
        self.k, self.steps, self.problem_seed = k, steps, problem_seed
        self.action_space = gym.spaces.Discrete(k)
        self.render_mode = render_mode
        self.t = 0
        self.last: tuple[int, float] | None = None

    @abc.abstractmethod
    def _draw_problem(self, rng: np.random.Generator) -> None: ...

    @abc.abstractmethod
    def _next_observation(self) -> ObsT: ...

    @abc.abstractmethod
    def _expected_rewards(self) -> FloatArray:
        """[k] each arm's expected reward for the current observation."""
        ...

    @abc.abstractmethod
    def _reward(self, action: int) -> float: ...

    def _info(self) -> dict[str, Any]:
        expected = self._expected_rewards()
        return {"expected_rewards": expected.copy(), "optimal_action": int(expected.argmax())}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsT, dict[str, Any]]:
        super().reset(seed=seed)
        fixed = self.problem_seed is not None
        self._draw_problem(np.random.default_rng(self.problem_seed) if fixed else self.np_random)
        self.t, self.last = 0, None
        return self._next_observation(), self._info()

    def step(self, action: np.int64) -> tuple[ObsT, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"invalid arm {action!r}: expected an integer in [0, {self.k})")
        expected = self._expected_rewards()
        reward = self._reward(int(action))
        self.t += 1
        self.last = (int(action), reward)
        observation = self._next_observation()
        info = {**self._info(), "regret": float(expected.max() - expected[int(action)])}
        return observation, reward, False, self.t >= self.steps, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self.last is None:
            return f"pull 0/{self.steps}\n"
        return f"pull {self.t}/{self.steps}: arm {self.last[0]} paid {self.last[1]:.3f}\n"


class KArmedTestbedEnv(BanditEnv[np.int64]):
    """Gaussian arms: q*(a) ~ N(0, 1) per problem, reward ~ N(q*(a), 1)."""

    def __init__(
        self,
        k: int = 10,
        steps: int = 1000,
        problem_seed: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(k, steps, problem_seed, render_mode)
        self.observation_space = gym.spaces.Discrete(1)
        self.q_star = np.zeros(k)

    def _draw_problem(self, rng: np.random.Generator) -> None:
        self.q_star = rng.normal(0.0, 1.0, size=self.k)

    def _next_observation(self) -> np.int64:
        return np.int64(0)

    def _expected_rewards(self) -> FloatArray:
        return self.q_star

    def _reward(self, action: int) -> float:
        return float(self.np_random.normal(self.q_star[action], 1.0))


class BernoulliBanditEnv(BanditEnv[np.int64]):
    """Bernoulli arms: p(a) ~ U(0, 1) per problem, reward 1 with probability p(a), else 0."""

    def __init__(
        self,
        k: int = 10,
        steps: int = 1000,
        problem_seed: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(k, steps, problem_seed, render_mode)
        self.observation_space = gym.spaces.Discrete(1)
        self.probs = np.full(k, 0.5)

    def _draw_problem(self, rng: np.random.Generator) -> None:
        self.probs = rng.uniform(0.0, 1.0, size=self.k)

    def _next_observation(self) -> np.int64:
        return np.int64(0)

    def _expected_rewards(self) -> FloatArray:
        return self.probs

    def _reward(self, action: int) -> float:
        return float(self.np_random.random() < self.probs[action])


class ContextualBanditEnv(BanditEnv[npt.NDArray[np.float32]]):
    """Linear arms: context x ~ N(0, I_d) (clipped), reward = theta_a . x + N(0, noise_std^2)."""

    def __init__(
        self,
        k: int = 5,
        d: int = 5,
        steps: int = 1000,
        noise_std: float = 0.5,
        problem_seed: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(k, steps, problem_seed, render_mode)
        if d < 1 or noise_std < 0:
            raise ValueError(f"need d >= 1 and noise_std >= 0, got d={d}, noise_std={noise_std}")
        self.d, self.noise_std = d, noise_std
        self.observation_space = gym.spaces.Box(
            -CONTEXT_BOUND, CONTEXT_BOUND, shape=(d,), dtype=np.float32
        )
        self.theta = np.zeros((k, d))
        self.context = np.zeros(d, dtype=np.float32)

    def _draw_problem(self, rng: np.random.Generator) -> None:
        self.theta = rng.normal(0.0, 1.0 / np.sqrt(self.d), size=(self.k, self.d))

    def _next_observation(self) -> npt.NDArray[np.float32]:
        context = self.np_random.normal(size=self.d).clip(-CONTEXT_BOUND, CONTEXT_BOUND)
        self.context = context.astype(np.float32)
        return self.context.copy()

    def _expected_rewards(self) -> FloatArray:
        return np.asarray(self.theta @ self.context.astype(np.float64))

    def _reward(self, action: int) -> float:
        noise = self.np_random.normal(0.0, self.noise_std) if self.noise_std > 0 else 0.0
        return float(self._expected_rewards()[action] + noise)

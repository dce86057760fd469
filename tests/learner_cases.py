"""One table entry per registered algorithm: a small env and fast hyperparameters (shared by the
unit and integration tests).

A new algorithm only needs a new `CASES` entry; every parametrized learner and export test then
covers it (`test_learners.test_every_algorithm_has_a_case` fails until it has one). An algorithm
that supports a second kind of action space adds a `VARIANTS` entry ("ppo/continuous"), and the
generic tests run over every *setup*: each case and each variant.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

import trainer.envs  # noqa: F401  (registers agentserve/GridWorld-v0)
from agentserve.envtools import flat_observation, mask_from_info
from agentserve.spaces import BoxSpec, DiscreteSpec, space_from_gym
from trainer import registry
from trainer.core.config import resolve
from trainer.envs import make_env
from trainer.export import random_masks, random_observations
from trainer.learner import Learner, TransitionBatch


@dataclass(frozen=True)
class Case:
    env_id: str
    overrides: tuple[str, ...] = ()
    """`key=value` overrides that keep the learner small and make it learn within ~300 steps."""
    algorithm: str = ""
    """The registered algorithm (filled in from the key for `CASES`)."""


CASES: dict[str, Case] = {
    "dqn": Case(
        "CartPole-v1",
        (
            "net_arch=[32, 32]",
            "learning_starts=64",
            "batch_size=16",
            "buffer_size=200",
            "train_freq=4",
            "gradient_steps=2",
            "target_update_interval=50",
            "total_timesteps=1000",
            "exploration_initial_eps=0.5",
        ),
    ),
    "qlearning": Case(
        "agentserve/GridWorld-v0",
        ("total_timesteps=1000", "exploration_initial_eps=0.5"),
    ),
    "sarsa": Case(
        "agentserve/GridWorld-v0",
        ("total_timesteps=1000", "exploration_initial_eps=0.5"),
    ),
    "expected_sarsa": Case(
        "agentserve/GridWorld-v0",
        ("total_timesteps=1000", "exploration_initial_eps=0.5"),
    ),
    "epsilon_greedy": Case("agentserve/KArmedTestbed-v0", ("epsilon=0.5",)),
    "ucb1": Case("agentserve/KArmedTestbed-v0"),
    "thompson": Case("agentserve/KArmedTestbed-v0"),
    "linucb": Case("agentserve/ContextualBandit-v0"),
    "reinforce": Case("CartPole-v1", ("net_arch=[32, 32]", "batch_episodes=2")),
    "a2c": Case("CartPole-v1", ("net_arch=[32, 32]", "n_steps=8")),
    "ppo": Case(
        "CartPole-v1",
        ("net_arch=[32, 32]", "n_steps=32", "batch_size=16", "n_epochs=2"),
    ),
    "sac": Case(
        "Pendulum-v1",
        (
            "net_arch=[32, 32]",
            "learning_starts=64",
            "batch_size=16",
            "buffer_size=500",
            "total_timesteps=1000",
        ),
    ),
    "sac_discrete": Case(
        "CartPole-v1",
        (
            "net_arch=[32, 32]",
            "learning_starts=64",
            "batch_size=16",
            "buffer_size=500",
            "total_timesteps=1000",
        ),
    ),
}

ALGORITHMS = registry.names()

VARIANTS: dict[str, Case] = {
    f"{name}/continuous": Case("Pendulum-v1", ("net_arch=[32, 32]", *small), algorithm=name)
    for name, small in (
        ("reinforce", ("batch_episodes=1",)),
        ("a2c", ("n_steps=8",)),
        ("ppo", ("n_steps=32", "batch_size=16", "n_epochs=2", "normalize_observations=true")),
    )
}
"""Second action-space kinds of algorithms that support both (Box actions on Pendulum)."""

SETUPS: dict[str, Case] = {
    **{name: replace(case, algorithm=name) for name, case in CASES.items()},
    **VARIANTS,
}
"""Every case and variant, by setup id: the algorithm's name, or "<name>/<variant>"."""


def is_discrete(setup: str) -> bool:
    env = make_env(SETUPS[setup].env_id)
    try:
        return hasattr(env.action_space, "n")
    finally:
        env.close()


DISCRETE_SETUPS = [s for s in SETUPS if is_discrete(s)]
CONTINUOUS_SETUPS = [s for s in SETUPS if not is_discrete(s)]


def make_learner(setup: str, seed: int = 0, extra: tuple[str, ...] = ()) -> Learner:
    """A fresh learner of a setup (an algorithm name, or "<name>/<variant>") on its case's env,
    configured through the presets."""
    case = SETUPS[setup]
    cls = registry.get(case.algorithm)
    spec = resolve(case.algorithm, cls.config_class, case.env_id, [*case.overrides, *extra])
    env = make_env(case.env_id, **spec.env_kwargs)
    try:
        observation_space = space_from_gym(env.observation_space)
        action_space = space_from_gym(env.action_space)
    finally:
        env.close()
    learner = cls(observation_space, action_space, spec.config, seed)
    _ENV_IDS[id(learner)] = case.env_id
    return learner


_ENV_IDS: dict[int, str] = {}


def env_id_of(learner: Learner) -> str:
    """The env of the setup `learner` was made for."""
    return _ENV_IDS.get(id(learner), CASES[learner.algorithm].env_id)


def num_actions(learner: Learner) -> int:
    assert isinstance(learner.action_space, DiscreteSpec)
    return learner.action_space.n


def is_continuous(learner: Learner) -> bool:
    return isinstance(learner.action_space, BoxSpec)


def random_actions(learner: Learner, count: int, rng: np.random.Generator) -> np.ndarray:
    """Actions spread over the learner's action space: [count] indices or [count, D] floats."""
    space = learner.action_space
    if isinstance(space, DiscreteSpec):
        return rng.integers(space.n, size=count).astype(np.int64)
    low = np.maximum(np.asarray(space.low, dtype=np.float64), -10.0)
    high = np.minimum(np.asarray(space.high, dtype=np.float64), 10.0)
    return rng.uniform(low, high, size=(count, len(low))).astype(np.float32)


def run_steps(learner: Learner, steps: int, seed: int = 0) -> None:
    """Drives `learner` for `steps` env steps, exploring, like `trainer.loop.train` does: the
    action at s' is chosen before `observe`, which gets it as `next_actions` (-1 where s' ended
    the episode)."""

    def act(observation: Any, info: dict[str, Any]) -> Any:
        mask = mask_from_info(info)
        masks = None if mask is None else mask[None]
        obs = flat_observation(observation)[None]
        action = learner.act(obs, masks, deterministic=False).actions[0]
        return action if np.ndim(action) else int(action)

    env = make_env(env_id_of(learner))
    continuous = not hasattr(env.action_space, "n")
    try:
        observation, info = env.reset(seed=seed)
        action = act(observation, info)
        for _ in range(steps):
            obs = flat_observation(observation)
            mask = mask_from_info(info)
            env_action = (
                np.clip(action, env.action_space.low, env.action_space.high)
                if continuous
                else action
            )
            observation, reward, terminated, truncated, info = env.step(env_action)
            next_obs = flat_observation(observation)
            next_mask = mask_from_info(info)
            done = terminated or truncated
            if done:
                observation, info = env.reset()
            next_action = act(observation, info)
            learner.observe(
                TransitionBatch(
                    observations=obs[None],
                    actions=np.array([action], dtype=np.float32 if continuous else np.int64),
                    rewards=np.array([reward], dtype=np.float32),
                    next_observations=next_obs[None],
                    terminated=np.array([terminated]),
                    truncated=np.array([truncated]),
                    action_masks=None if mask is None else mask[None],
                    next_action_masks=None if next_mask is None else next_mask[None],
                    next_actions=(
                        None
                        if continuous
                        else np.array([-1 if done else next_action], dtype=np.int64)
                    ),
                )
            )
            action = next_action
    finally:
        env.close()


def observations_and_masks(
    learner: Learner, count: int, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Random observations, and random non-empty masks (None for continuous actions)."""
    rng = np.random.default_rng(seed)
    observations = random_observations(learner.observation_space, count, rng)
    if is_continuous(learner):
        return observations, None
    return observations, random_masks(num_actions(learner), count, rng)


def random_transitions(learner: Learner, count: int, seed: int) -> list[TransitionBatch]:
    """`count` single-transition batches spread over the learner's spaces."""
    rng = np.random.default_rng(seed)
    observations = random_observations(learner.observation_space, count, rng)
    next_observations = random_observations(learner.observation_space, count, rng)
    actions = random_actions(learner, count, rng)
    rewards = rng.normal(size=count).astype(np.float32)
    terminated = rng.random(count) < 0.1
    masks_at_s = masks = next_actions = None
    if not is_continuous(learner):
        n = num_actions(learner)
        masks = random_masks(n, count, rng)
        # The action taken at s was allowed there: masks at s allow it.
        masks_at_s = random_masks(n, count, rng)
        masks_at_s[np.arange(count), actions] = True
        # An allowed action at s' (what an acting policy could have chosen), -1 where s' ended it.
        next_actions = np.array([rng.choice(np.flatnonzero(m)) for m in masks], dtype=np.int64)
        next_actions[terminated] = -1

    def row(values: np.ndarray | None, i: int) -> np.ndarray | None:
        return None if values is None else values[i : i + 1]

    return [
        TransitionBatch(
            observations=observations[i : i + 1],
            actions=actions[i : i + 1],
            rewards=rewards[i : i + 1],
            next_observations=next_observations[i : i + 1],
            terminated=terminated[i : i + 1],
            truncated=np.zeros(1, dtype=np.bool_),
            action_masks=row(masks_at_s, i),
            next_action_masks=row(masks, i),
            next_actions=row(next_actions, i),
        )
        for i in range(count)
    ]


def module_outputs(
    module: torch.nn.Module, observations: np.ndarray, masks: np.ndarray | None
) -> list[np.ndarray[Any, Any]]:
    """The outputs of a policy module as numpy arrays: (greedy_action, probabilities, values)
    of a discrete policy, (greedy_action, action_mean, action_log_std) of a continuous one
    (`masks` None)."""
    with torch.no_grad():
        inputs = [torch.from_numpy(observations)]
        if masks is not None:
            inputs.append(torch.from_numpy(masks))
        outputs = module.eval()(*inputs)
    return [t.numpy() for t in outputs]

"""One table entry per registered algorithm: a small env and fast hyperparameters.

A new algorithm only needs a new `CASES` entry; every parametrized learner and export test then
covers it (`test_learners.test_every_algorithm_has_a_case` fails until it has one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import trainer.envs  # noqa: F401  (registers agentserve/GridWorld-v0)
from agentserve.envtools import flat_observation, mask_from_info
from agentserve.spaces import DiscreteSpec, space_from_gym
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
}

ALGORITHMS = registry.names()


def make_learner(algorithm: str, seed: int = 0, extra: tuple[str, ...] = ()) -> Learner:
    """A fresh learner of `algorithm` on its case's env, configured through the presets."""
    case = CASES[algorithm]
    cls = registry.get(algorithm)
    spec = resolve(algorithm, cls.config_class, case.env_id, [*case.overrides, *extra])
    env = make_env(case.env_id, **spec.env_kwargs)
    try:
        observation_space = space_from_gym(env.observation_space)
        action_space = space_from_gym(env.action_space)
    finally:
        env.close()
    return cls(observation_space, action_space, spec.config, seed)


def num_actions(learner: Learner) -> int:
    assert isinstance(learner.action_space, DiscreteSpec)
    return learner.action_space.n


def run_steps(learner: Learner, steps: int, seed: int = 0) -> None:
    """Drives `learner` for `steps` env steps, exploring, like `trainer.loop.train` does: the
    action at s' is chosen before `observe`, which gets it as `next_actions` (-1 where s' ended
    the episode)."""

    def act(observation: Any, info: dict[str, Any]) -> int:
        mask = mask_from_info(info)
        masks = None if mask is None else mask[None]
        obs = flat_observation(observation)[None]
        return int(learner.act(obs, masks, deterministic=False).actions[0])

    env = make_env(CASES[learner.algorithm].env_id)
    try:
        observation, info = env.reset(seed=seed)
        action = act(observation, info)
        for _ in range(steps):
            obs = flat_observation(observation)
            observation, reward, terminated, truncated, info = env.step(action)
            next_obs = flat_observation(observation)
            next_mask = mask_from_info(info)
            done = terminated or truncated
            if done:
                observation, info = env.reset()
            next_action = act(observation, info)
            learner.observe(
                TransitionBatch(
                    observations=obs[None],
                    actions=np.array([action], dtype=np.int64),
                    rewards=np.array([reward], dtype=np.float32),
                    next_observations=next_obs[None],
                    terminated=np.array([terminated]),
                    truncated=np.array([truncated]),
                    next_action_masks=None if next_mask is None else next_mask[None],
                    next_actions=np.array([-1 if done else next_action], dtype=np.int64),
                )
            )
            action = next_action
    finally:
        env.close()


def random_transitions(learner: Learner, count: int, seed: int) -> list[TransitionBatch]:
    """`count` single-transition batches spread over the learner's spaces."""
    rng = np.random.default_rng(seed)
    n = num_actions(learner)
    observations = random_observations(learner.observation_space, count, rng)
    next_observations = random_observations(learner.observation_space, count, rng)
    actions = rng.integers(n, size=count).astype(np.int64)
    rewards = rng.normal(size=count).astype(np.float32)
    terminated = rng.random(count) < 0.1
    masks = random_masks(n, count, rng)
    # An allowed action at s' (what an acting policy could have chosen), -1 where s' ended it.
    next_actions = np.array([rng.choice(np.flatnonzero(m)) for m in masks], dtype=np.int64)
    next_actions[terminated] = -1
    return [
        TransitionBatch(
            observations=observations[i : i + 1],
            actions=actions[i : i + 1],
            rewards=rewards[i : i + 1],
            next_observations=next_observations[i : i + 1],
            terminated=terminated[i : i + 1],
            truncated=np.zeros(1, dtype=np.bool_),
            next_action_masks=masks[i : i + 1],
            next_actions=next_actions[i : i + 1],
        )
        for i in range(count)
    ]


def module_outputs(
    module: torch.nn.Module, observations: np.ndarray, masks: np.ndarray
) -> list[np.ndarray[Any, Any]]:
    """(greedy_action, probabilities, values) of a policy module, as numpy arrays."""
    with torch.no_grad():
        outputs = module.eval()(torch.from_numpy(observations), torch.from_numpy(masks))
    return [t.numpy() for t in outputs]

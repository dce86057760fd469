"""Our DQN and PPO updates against Stable-Baselines3's: from the same weights, on the same data
(and, for DQN, the same minibatch indices), one training phase of the CartPole preset leaves the
same networks. The speed comparison (trainer.speed) rests on both running the same algorithm."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from agentserve.spaces import space_from_gym
from trainer import registry
from trainer.core.config import resolve
from trainer.learner import TransitionBatch
from trainer.speed import CASES, sb3_setup

PHASE_STEPS = 1_024
"""Transitions in the buffer before the phase (the preset's first phase comes at 1,024)."""


def _transitions(count: int, seed: int) -> list[tuple[Any, int, float, Any, bool, bool]]:
    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(seed)
    observation, _ = env.reset(seed=seed)
    out = []
    for _ in range(count):
        action = int(rng.integers(2))
        following, reward, terminated, truncated, _ = env.step(action)
        out.append((observation, action, float(reward), following, terminated, truncated))
        observation = env.reset()[0] if terminated or truncated else following
    env.close()
    return out


def _both(algorithm: str) -> tuple[Any, Any, Any, Any]:
    """(SB3 model, our learner, our resolved preset, the speed case) of `algorithm`'s speed case,
    built alike: the preset mapped onto SB3's arguments, the case's envs, seed 0."""
    sb3 = pytest.importorskip("stable_baselines3")  # a benchmark-only extra
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import DummyVecEnv

    torch.manual_seed(0)
    case = next(c for c in CASES if c.algorithm == algorithm)
    setup = sb3_setup(case)
    vec = make_vec_env(case.env_id, n_envs=setup.n_envs, seed=0, vec_env_cls=DummyVecEnv)
    model = getattr(sb3, case.sb3_class)(
        "MlpPolicy", vec, seed=0, verbose=0, device="cpu", **setup.kwargs
    )
    model.set_logger(configure(None, []))
    spec = resolve(algorithm, registry.get(algorithm).config_class, case.env_id, [])
    spec.config.total_timesteps = case.budget
    ours = registry.get(algorithm)(
        space_from_gym(vec.observation_space), space_from_gym(vec.action_space), spec.config, 0
    )
    return model, ours, spec, case


def _copy_weights(mine: list[torch.nn.Linear], theirs: list[torch.nn.Linear]) -> None:
    assert [m.weight.shape for m in mine] == [m.weight.shape for m in theirs]
    with torch.no_grad():
        for a, b in zip(mine, theirs, strict=True):
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)


def test_a_dqn_training_phase_equals_stable_baselines3s() -> None:
    model, ours, spec, _ = _both("dqn")
    theirs = [m for m in model.q_net.q_net if isinstance(m, torch.nn.Linear)]
    mine = [m for m in ours.q_net if isinstance(m, torch.nn.Linear)]
    _copy_weights(mine, theirs)
    with torch.no_grad():
        torch._foreach_copy_(list(ours.target_net.parameters()), list(ours.q_net.parameters()))
    model.q_net_target.load_state_dict(model.q_net.state_dict())

    for obs, action, reward, following, terminated, truncated in _transitions(PHASE_STEPS, 0):
        batch = TransitionBatch(
            obs[None].astype(np.float32),
            np.array([action]),
            np.array([reward], dtype=np.float32),
            following[None].astype(np.float32),
            np.array([terminated]),
            np.array([truncated]),
        )
        ready = ours.n_step.push(batch)
        assert ready is not None
        ours.replay.add(*ready)
        timeout = {"TimeLimit.truncated": truncated and not terminated}
        done = np.array([terminated or truncated])
        model.replay_buffer.add(
            obs[None], following[None], np.array([action]), np.array([reward]), done, [timeout]
        )
    ours.num_steps = PHASE_STEPS

    drawn: list[np.ndarray] = []
    sample = ours.replay.sample

    def recording(count: int, rng: np.random.Generator, progress: float = 0.0) -> Any:
        found = sample(count, rng, progress)
        drawn.append(np.asarray(found.indices))
        return found

    ours.replay.sample = recording  # type: ignore[method-assign]
    gradient_steps, batch_size = spec.config.gradient_steps, spec.config.batch_size
    ours._train_phase(gradient_steps)
    rows = iter(np.concatenate(drawn).reshape(gradient_steps, batch_size))
    model.replay_buffer.sample = lambda _size, env=None: model.replay_buffer._get_samples(  # type: ignore[method-assign]
        next(rows), env=env
    )
    model.train(gradient_steps=gradient_steps, batch_size=batch_size)

    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a.weight, b.weight, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.bias, b.bias, rtol=1e-5, atol=1e-6)
    assert not torch.equal(mine[0].weight, ours.target_net[0].weight)  # the phase changed it


def test_a_ppo_update_equals_stable_baselines3s() -> None:
    """One rollout of the CartPole preset (8 envs x 32 steps, episodes ending inside it), then one
    update (20 epochs, clipped surrogate, GAE, the linear learning-rate and clip schedules) from
    the same weights: the same networks."""
    model, ours, spec, case = _both("ppo")
    n_envs = spec.n_envs
    policy = model.policy
    extractor = policy.mlp_extractor
    theirs = [m for m in extractor.policy_net if isinstance(m, torch.nn.Linear)]
    theirs += [policy.action_net]
    theirs += [m for m in extractor.value_net if isinstance(m, torch.nn.Linear)]
    theirs += [policy.value_net]
    mine = [m for m in ours.net.actor if isinstance(m, torch.nn.Linear)]
    mine += [m for m in ours.net.critic if isinstance(m, torch.nn.Linear)]
    _copy_weights(mine, theirs)

    initial = [m.weight.detach().clone() for m in mine]
    envs = [gym.make(case.env_id) for _ in range(n_envs)]
    obs = np.stack([env.reset(seed=i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    rng = np.random.default_rng(0)
    buffer = model.rollout_buffer
    buffer.reset()
    starts = np.ones(n_envs, dtype=np.float32)
    ended = 0
    for _ in range(spec.config.n_steps):
        actions = rng.integers(2, size=n_envs)
        steps = [env.step(int(a)) for env, a in zip(envs, actions, strict=True)]
        true_next = np.stack([s[0] for s in steps]).astype(np.float32)
        rewards = np.array([s[1] for s in steps], dtype=np.float32)
        terminated = np.array([s[2] for s in steps])
        truncated = np.array([s[3] for s in steps])
        assert not truncated.any()  # (truncation bootstraps differently in each library's code)
        following = true_next.copy()
        for i in np.flatnonzero(terminated):
            following[i] = envs[i].reset()[0]
        with torch.no_grad():
            values, log_probs, _ = policy.evaluate_actions(
                torch.as_tensor(obs), torch.as_tensor(actions)
            )
        buffer.add(obs, actions.reshape(-1, 1), rewards, starts, values, log_probs)
        ours.observe(TransitionBatch(obs, actions, rewards, true_next, terminated, truncated))
        starts = terminated.astype(np.float32)
        ended += int(terminated.sum())
        obs = following
    assert ended > 0 and ours.num_updates > 0
    with torch.no_grad():
        last_values = policy.predict_values(torch.as_tensor(obs))
    buffer.compute_returns_and_advantage(last_values=last_values, dones=starts)
    model.num_timesteps = spec.config.n_steps * n_envs
    model._current_progress_remaining = 1 - model.num_timesteps / case.budget
    model.train()

    for a, b, before in zip(mine, theirs, initial, strict=True):
        assert not torch.equal(a.weight, before)  # the update changed every layer
        torch.testing.assert_close(a.weight, b.weight, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.bias, b.bias, rtol=1e-5, atol=1e-6)

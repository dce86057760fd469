"""The reference external simulator: steps a local Gymnasium env with actions served remotely."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentserve.client import Client
from agentserve.envtools import flat_observation, mask_from_info
from agentserve.errors import ConfigError


def make_env(env_id: str) -> Any:
    """Gymnasium's env, with agentserve's bundled envs registered when the trainer is installed."""
    try:
        import gymnasium as gym
    except ImportError:
        raise ConfigError("simulate needs Gymnasium: pip install 'agentserve[sim]'") from None
    if env_id.startswith("agentserve/"):
        try:
            import trainer.envs  # noqa: F401  (registers the agentserve/ namespace)
        except ImportError:
            raise ConfigError(f"{env_id} is bundled with agentserve[train]") from None
    try:
        return gym.make(env_id)
    except gym.error.Error as error:
        raise ConfigError(f"cannot make environment {env_id!r}: {error}") from None


def run_episodes(
    client: Client,
    env_id: str,
    policy: str,
    episodes: int,
    *,
    seed: int = 0,
    deterministic: bool = True,
    on_episode: Callable[[int, float, int], None] | None = None,
) -> list[float]:
    """Plays `episodes` episodes (episode i reset with seed `seed + i`); returns their returns.
    The env's own action mask (`info["action_mask"]`), if any, is sent with every request."""
    env = make_env(env_id)
    returns = []
    try:
        for episode in range(episodes):
            observation, info = env.reset(seed=seed + episode)
            total, length, done = 0.0, 0, False
            while not done:
                mask = mask_from_info(info)
                result = client.act(
                    flat_observation(observation),
                    action_mask=mask,
                    deterministic=deterministic,
                    policy=policy,
                    episode_id=f"{env_id}:{seed}:{episode}",
                )
                action = result.action
                if not isinstance(action, int):  # a continuous action: the env's shape
                    action = action.reshape(env.action_space.shape)
                observation, reward, terminated, truncated, info = env.step(action)
                total += float(reward)
                length += 1
                done = terminated or truncated
            returns.append(total)
            if on_episode is not None:
                on_episode(episode, total, length)
    finally:
        env.close()
    return returns

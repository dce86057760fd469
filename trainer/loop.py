"""The offline driver: a learner, a Gymnasium env, periodic evaluation, checkpoints, export.

A run directory holds `config.json` (the resolved run), `monitor.csv`, `tensorboard/`,
`checkpoints/best.safetensors` (best by evaluation) and `checkpoints/last.safetensors`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agentserve.errors import ConfigError
from agentserve.safety import load_safety_file, parse_safety
from agentserve.spaces import space_from_gym
from trainer import registry
from trainer.collector import Collector
from trainer.core.checkpoint import load_checkpoint, save_checkpoint
from trainer.core.config import config_to_json, resolve
from trainer.core.numerics import flushing_denormals
from trainer.evaluation import EvalResult, evaluate
from trainer.export import default_policy_name, export_artifact
from trainer.learner import BoolArray, FloatArray, Learner
from trainer.logger import RunLogger


@dataclass(frozen=True)
class RunOptions:
    algorithm: str
    env_id: str
    seed: int = 0
    timesteps: int | None = None
    """Environment steps; None = the preset's budget."""
    overrides: tuple[str, ...] = ()
    """`key=value` hyperparameter overrides."""
    run_dir: Path | None = None
    """Where logs and checkpoints go; None = runs/<name>-s<seed>-<time>."""
    out_repo: Path | None = None
    """Model repository to export the trained policy into; None = no export."""
    name: str | None = None
    """Policy name in the repository; None = derived from env and algorithm."""
    eval_freq: int = 10_000
    """Steps between evaluations (0 = only at the end)."""
    eval_episodes: int = 10
    progress: bool = True
    target_return: float | None = None
    """Stop as soon as an evaluation's mean return reaches this (time-to-threshold runs)."""
    threads: int = 1
    """torch intra-op threads. Small policy networks train fastest on one thread, and several
    runs side by side do not fight over cores."""
    resume: Path | None = None
    """A checkpoint to continue from (the step count carries on)."""
    safety: Path | None = None
    """YAML/JSON safety section (docs/safety.md) to carry in the exported manifest; validated
    against the env's spaces before training starts."""
    ignore_env_mask: bool = False
    """Train and evaluate as if the env reported no action masks: the learner is never told which
    actions are allowed (the masked-against-unmasked comparison, docs/masked-training.md)."""


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    artifact: Path | None
    timesteps: int
    wall_seconds: float
    final_eval: EvalResult | None
    best_eval: EvalResult | None
    evaluations: tuple[tuple[int, float, float], ...] = ()
    """(step, mean evaluation return, training seconds so far) of every evaluation, in order;
    training seconds exclude the time spent evaluating and writing checkpoints."""
    reached_target: bool = False
    train_seconds: float = 0.0
    """Wall-clock of the training itself: evaluations and checkpoints excluded."""
    invalid_actions: int = 0
    """Training actions that the env's action mask did not allow (0 unless `ignore_env_mask`)."""


def _greedy(learner: Learner) -> Any:
    def act(observation: FloatArray, mask: BoolArray | None) -> Any:
        masks = None if mask is None else mask[None]
        action = learner.act(observation[None], masks, deterministic=True).actions[0]
        return action if np.ndim(action) else int(action)

    return act


def train(options: RunOptions) -> RunResult:
    learner_class = registry.get(options.algorithm)
    spec = resolve(
        options.algorithm, learner_class.config_class, options.env_id, list(options.overrides)
    )
    timesteps = options.timesteps if options.timesteps is not None else spec.timesteps
    if timesteps is None:
        raise ConfigError(
            f"no --timesteps given and no preset budget for {options.algorithm} on {options.env_id}"
        )
    if timesteps < 0:
        raise ConfigError("--timesteps must be >= 0")
    if hasattr(spec.config, "total_timesteps"):
        # Schedules (exploration, learning rate) are laid over the run; an untrained export
        # (--timesteps 0, to be learned online) keeps the preset's budget as their horizon.
        spec.config.total_timesteps = max(timesteps or spec.timesteps or 1, 1)
    collector = Collector(
        options.env_id,
        spec.n_envs,
        spec.env_kwargs,
        options.seed,
        use_masks=not options.ignore_env_mask,
    )
    learner = learner_class(
        space_from_gym(collector.envs.single_observation_space),
        space_from_gym(collector.envs.single_action_space),
        spec.config,
        options.seed,
    )
    safety = None if options.safety is None else load_safety_file(options.safety)
    parse_safety(
        safety, learner.observation_space, learner.action_space, f"{options.safety}: safety"
    )
    if options.resume is not None:
        learner.load_state_dict(load_checkpoint(options.resume))
    name = options.name or default_policy_name(options.env_id, options.algorithm)
    run_dir = (
        options.run_dir or Path("runs") / f"{name}-s{options.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = {
        "algorithm": options.algorithm,
        "env_id": options.env_id,
        "env_kwargs": spec.env_kwargs,
        "n_envs": spec.n_envs,
        "seed": options.seed,
        "timesteps": timesteps,
        "ignore_env_mask": options.ignore_env_mask,
        "hyperparameters": config_to_json(spec.config),
    }
    (run_dir / "config.json").write_text(json.dumps(resolved, indent=2) + "\n", encoding="utf-8")

    def run_eval(seed_offset: int) -> EvalResult:
        return evaluate(
            _greedy(learner),
            options.env_id,
            options.eval_episodes,
            seed=10_000 + options.seed * 1_000 + seed_offset,
            env_kwargs=spec.env_kwargs,
            use_masks=not options.ignore_env_mask,
        )

    logger = RunLogger(run_dir, timesteps, options.progress)
    logger.advance(learner.num_steps)
    checkpoints = run_dir / "checkpoints"
    best: EvalResult | None = None
    history: list[tuple[int, float, float]] = []
    started = time.monotonic()
    overhead = 0.0
    reached = False
    torch.manual_seed(options.seed)
    torch.set_num_threads(max(1, options.threads))
    observations, masks = collector.reset()
    actions = learner.act(observations, masks, False).actions
    with flushing_denormals():  # see trainer/core/numerics.py: denormals slow updates 5x
        try:
            while learner.num_steps < timesteps and not reached:
                before = learner.num_steps
                step = collector.step(actions)
                # The next actions are chosen before learning from this step, so on-policy learners
                # (SARSA) receive the action actually taken at s'.
                actions = learner.act(step.next_observations, step.next_masks, False).actions
                scalars = learner.observe(step.transitions(actions))
                now = learner.num_steps
                for episode_return, episode_length in step.finished:
                    logger.episode(now, episode_return, episode_length)
                if step.masks is not None:  # actions the env's mask forbade, per env step
                    scalars["safety/env_masked_actions"] = float((~step.masks).sum()) / len(
                        step.masks
                    )
                logger.scalars(now, {**scalars, **learner.extra_scalars()})
                if before // 1000 != now // 1000 or now >= timesteps:
                    logger.advance(now)
                if (
                    options.eval_freq > 0
                    and before // options.eval_freq != now // options.eval_freq
                ):
                    paused = time.monotonic()
                    result = run_eval(now)
                    history.append((now, result.mean, paused - started - overhead))
                    logger.evaluation(now, result)
                    if best is None or result.mean > best.mean:
                        best = result
                        save_checkpoint(learner.state_dict(), checkpoints / "best.safetensors")
                    reached = (
                        options.target_return is not None and result.mean >= options.target_return
                    )
                    overhead += time.monotonic() - paused
            train_seconds = time.monotonic() - started - overhead
            final = run_eval(timesteps) if options.eval_episodes > 0 and not reached else None
            if final is not None:
                history.append((learner.num_steps, final.mean, train_seconds))
                logger.evaluation(learner.num_steps, final)
        finally:
            logger.close(learner.num_steps)
            collector.close()
    save_checkpoint(learner.state_dict(), checkpoints / "last.safetensors")
    steps_done = learner.num_steps
    exported_eval = final
    if final is not None and (best is None or final.mean >= best.mean):
        best = final
        save_checkpoint(learner.state_dict(), checkpoints / "best.safetensors")
    elif best is not None:
        learner.load_state_dict(load_checkpoint(checkpoints / "best.safetensors"))
        exported_eval = best
    wall = time.monotonic() - started
    artifact = None
    if options.out_repo is not None:
        training = {
            **resolved,
            "wall_seconds": round(wall, 3),
            "evaluation": None if exported_eval is None else exported_eval.to_json(),
        }
        artifact = export_artifact(
            learner, options.out_repo, name, options.env_id, training, safety=safety
        )
    return RunResult(
        run_dir,
        artifact,
        steps_done,
        wall,
        final,
        best,
        tuple(history),
        reached,
        train_seconds,
        collector.invalid_actions,
    )

"""Side by side with Stable-Baselines3: the same algorithm, hyperparameters, seeds and evaluation,
run interleaved on one torch thread each (`agentserve benchmark`).

For each run: env steps and training seconds until a deterministic evaluation (10 episodes, the
same seeds and the same evaluation code for both) first reaches the threshold, and env steps per
second. Evaluation time is excluded from both clocks. Writes docs/speed-vs-sb3.md.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agentserve.errors import ConfigError
from trainer import registry
from trainer.core.config import resolve
from trainer.evaluation import evaluate
from trainer.loop import RunOptions, train


@dataclass(frozen=True)
class SpeedCase:
    algorithm: str
    env_id: str
    threshold: float
    budget: int
    eval_freq: int
    sb3_class: str


CASES = (SpeedCase("dqn", "CartPole-v1", 475.0, 100_000, 2_500, "DQN"),)


@dataclass(frozen=True)
class Outcome:
    steps_to_threshold: int | None
    seconds_to_threshold: float | None
    steps: int
    train_seconds: float

    @property
    def steps_per_second(self) -> float:
        return self.steps / max(self.train_seconds, 1e-9)


def eval_seed(seed: int, step: int) -> int:
    return 10_000 + seed * 1_000 + step


def sb3_kwargs(case: SpeedCase) -> dict[str, Any]:
    """Our preset for the case, in Stable-Baselines3's argument names."""
    learner = registry.get(case.algorithm)
    config = resolve(case.algorithm, learner.config_class, case.env_id, []).config
    if case.algorithm != "dqn":
        raise ConfigError(f"no Stable-Baselines3 mapping for {case.algorithm}")
    return {
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "buffer_size": config.buffer_size,
        "learning_starts": config.learning_starts,
        "gamma": config.gamma,
        "train_freq": config.train_freq,
        "gradient_steps": config.gradient_steps,
        "target_update_interval": config.target_update_interval,
        "exploration_fraction": config.exploration_fraction,
        "exploration_initial_eps": config.exploration_initial_eps,
        "exploration_final_eps": config.exploration_final_eps,
        "max_grad_norm": config.max_grad_norm,
        "policy_kwargs": {"net_arch": list(config.net_arch)},
    }


def run_ours(case: SpeedCase, seed: int) -> Outcome:
    with tempfile.TemporaryDirectory() as tmp:
        result = train(
            RunOptions(
                algorithm=case.algorithm,
                env_id=case.env_id,
                seed=seed,
                timesteps=case.budget,
                run_dir=Path(tmp),
                eval_freq=case.eval_freq,
                eval_episodes=10,
                progress=False,
                target_return=case.threshold,
                threads=1,
            )
        )
    hit = next((e for e in result.evaluations if e[1] >= case.threshold), None)
    return Outcome(
        None if hit is None else hit[0],
        None if hit is None else hit[2],
        result.timesteps,
        result.train_seconds,
    )


def run_sb3(case: SpeedCase, seed: int) -> Outcome:
    import gymnasium as gym
    import stable_baselines3
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(1)
    model_class = getattr(stable_baselines3, case.sb3_class)
    model = model_class(
        "MlpPolicy", gym.make(case.env_id), seed=seed, verbose=0, **sb3_kwargs(case)
    )

    class TimeToThreshold(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.started = time.monotonic()
            self.overhead = 0.0
            self.hit: tuple[int, float] | None = None

        def _on_step(self) -> bool:
            if self.num_timesteps % case.eval_freq != 0:
                return True
            paused = time.monotonic()
            result = evaluate(
                lambda obs, mask: int(model.predict(obs, deterministic=True)[0]),
                case.env_id,
                10,
                seed=eval_seed(seed, self.num_timesteps),
            )
            if result.mean >= case.threshold and self.hit is None:
                self.hit = (self.num_timesteps, paused - self.started - self.overhead)
            self.overhead += time.monotonic() - paused
            return self.hit is None

    callback = TimeToThreshold()
    model.learn(total_timesteps=case.budget, callback=callback)
    train_seconds = time.monotonic() - callback.started - callback.overhead
    return Outcome(
        None if callback.hit is None else callback.hit[0],
        None if callback.hit is None else callback.hit[1],
        int(model.num_timesteps),
        train_seconds,
    )


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if len(known) == len(values) and known else None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "not reached" if value is None else f"{value:.{digits}g}"


def run(seeds: int, out: Path, cases: tuple[SpeedCase, ...] = CASES) -> str:
    """Runs every case over `seeds` seeds, alternating which library goes first; writes the
    report and returns it."""
    rows = []
    for case in cases:
        ours: list[Outcome] = []
        theirs: list[Outcome] = []
        for seed in range(seeds):
            order = (run_ours, run_sb3) if seed % 2 == 0 else (run_sb3, run_ours)
            for runner in order:
                outcome = runner(case, seed)
                (ours if runner is run_ours else theirs).append(outcome)
                name = "agentserve" if runner is run_ours else "SB3"
                print(
                    f"{case.algorithm} {case.env_id} seed {seed} {name}: steps "
                    f"{outcome.steps_to_threshold}, {_fmt(outcome.seconds_to_threshold)} s, "
                    f"{outcome.steps_per_second:.0f} steps/s",
                    flush=True,
                )
        rows.append((case, ours, theirs))
    text = _report(rows, seeds)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed-vs-sb3.md").write_text(text, encoding="utf-8")
    return text


def _report(rows: list[tuple[SpeedCase, list[Outcome], list[Outcome]]], seeds: int) -> str:
    import platform

    import stable_baselines3

    lines = [
        "# Training speed: agentserve vs Stable-Baselines3",
        "",
        "Written by `agentserve benchmark` (`make bench-sb3`); do not edit by hand.",
        f"Run on {time.strftime('%Y-%m-%d')}, {platform.machine()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}, stable-baselines3 "
        f"{stable_baselines3.__version__}, one torch thread each, {seeds} seeds, medians.",
        "",
        "Same preset hyperparameters, same seeds, same deterministic evaluation (10 episodes) "
        "every `eval_freq` steps; evaluation time is excluded; a run stops at the first "
        "evaluation that reaches the threshold.",
        "",
        "| algorithm | env | threshold | steps to threshold (ours / SB3) "
        "| seconds to threshold (ours / SB3) | time ratio | env steps/s (ours / SB3) |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, ours, theirs in rows:
        steps_o = _median([o.steps_to_threshold for o in ours])
        steps_t = _median([o.steps_to_threshold for o in theirs])
        secs_o = _median([o.seconds_to_threshold for o in ours])
        secs_t = _median([o.seconds_to_threshold for o in theirs])
        ratio = None if secs_o is None or secs_t is None else secs_o / secs_t
        rate_o = statistics.median([o.steps_per_second for o in ours])
        rate_t = statistics.median([o.steps_per_second for o in theirs])
        lines.append(
            f"| {case.algorithm} | {case.env_id} | {case.threshold:g} "
            f"| {_fmt(steps_o, 6)} / {_fmt(steps_t, 6)} | {_fmt(secs_o)} / {_fmt(secs_t)} "
            f"| {_fmt(ratio, 2)} | {rate_o:.0f} / {rate_t:.0f} |"
        )
    lines += ["", "Per seed:", "", "| case | seed | library | steps | seconds | steps/s |"]
    lines.append("|---|---|---|---|---|---|")
    for case, ours, theirs in rows:
        for seed, (o, t) in enumerate(zip(ours, theirs, strict=True)):
            for name, outcome in (("agentserve", o), ("SB3", t)):
                lines.append(
                    f"| {case.algorithm} {case.env_id} | {seed} | {name} "
                    f"| {outcome.steps_to_threshold or 'not reached'} "
                    f"| {_fmt(outcome.seconds_to_threshold)} | {outcome.steps_per_second:.0f} |"
                )
    return "\n".join(lines) + "\n"


__all__ = ["CASES", "Outcome", "SpeedCase", "run"]

"""Reference learning checks: which algorithm must reach what, on which env, within what budget.

Shared by the slow tests (`tests/learning`, `make learning`) and the reference benchmark
(`agentserve benchmark reference`, `make bench-learning`), which stores one entry per row and seed
in `docs/results/reference.json` and re-renders `docs/benchmarks.md`.

The figure of merit is the best deterministic evaluation reached within the budget (the checkpoint
that gets exported), as rl-baselines3-zoo reports it. Rows with `stop_at_bar` (the long Box2D
ones, to save compute) end their run at the first evaluation that reaches the bar: their best
evaluation is that one, they have no final evaluation, and the step where the bar was reached is
recorded (as it is for every mean-return row).

Rows follow the order of issue 3's table. Nothing here looks an algorithm up in the registry at
import time, so rows may name algorithms that are still being written.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentserve.errors import AgentserveError, ConfigError
from trainer import results
from trainer.loop import RunOptions, RunResult, train


@dataclass(frozen=True)
class ReferenceCheck:
    algorithm: str
    env_id: str
    timesteps: int
    bar: float
    """The best evaluation (mean return, or success rate) must reach this."""
    metric: str = "mean_return"
    """"mean_return" or "success_rate" (sparse-reward tasks)."""
    eval_freq: int = 5_000
    eval_episodes: int = 10
    overrides: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    source: str = ""
    stop_at_bar: bool = False
    """End the run at the first evaluation that reaches the bar (mean-return rows only)."""
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        options = "".join(f" {o}" for o in self.overrides)
        return f"{self.algorithm}{options} on {self.env_id}"


def _gridworld_optimum() -> float:
    from trainer.envs.gridworld import GridWorldEnv, optimal_return

    return optimal_return(GridWorldEnv(), 100)


CHECKS = (
    ReferenceCheck(
        "qlearning",
        "agentserve/GridWorld-v0",
        20_000,
        _gridworld_optimum(),
        eval_freq=2_000,
        eval_episodes=1,
        source="optimal return by dynamic programming",
    ),
    ReferenceCheck(
        "sarsa",
        "agentserve/GridWorld-v0",
        20_000,
        _gridworld_optimum(),
        eval_freq=2_000,
        source="optimal return by dynamic programming",
    ),
    *(
        ReferenceCheck(
            algorithm,
            "CliffWalking-v1",
            50_000,
            -13.0,
            eval_freq=5_000,
            source="SARSA issue: the optimal path along the cliff (13 steps), decaying epsilon",
        )
        for algorithm in ("qlearning", "sarsa", "expected_sarsa")
    ),
    ReferenceCheck(
        "qlearning",
        "FrozenLake-v1",
        200_000,
        0.70,
        metric="success_rate",
        eval_freq=20_000,
        eval_episodes=1_000,
        source="issue 2 (optimal policy: ~0.74-0.82 success)",
    ),
    ReferenceCheck(
        "qlearning",
        "Taxi-v4",
        200_000,
        7.5,
        eval_freq=10_000,
        source="SARSA issue (Taxi's optimum is about 8 per episode; gymnasium 1.4 ships v4)",
    ),
    ReferenceCheck(
        "dqn",
        "CartPole-v1",
        100_000,
        475.0,
        eval_freq=5_000,
        source="issue 2; rl-baselines3-zoo DQN CartPole-v1 reaches 500 in 5e4 steps",
    ),
    *(
        ReferenceCheck(
            "dqn",
            "CartPole-v1",
            100_000,
            475.0,
            eval_freq=5_000,
            overrides=(option,),
            source="issue 3: each DQN option alone on the CartPole preset",
        )
        for option in ("double_q=true", "dueling=true", "prioritized_replay=true")
    ),
    ReferenceCheck(
        "dqn",
        "Acrobot-v1",
        100_000,
        -100.0,
        eval_freq=10_000,
        source="rl-baselines3-zoo DQN Acrobot-v1: -76.6",
    ),
    ReferenceCheck(
        "dqn",
        "MountainCar-v0",
        120_000,
        -110.0,
        eval_freq=10_000,
        source="rl-baselines3-zoo DQN MountainCar-v0: -100.8",
    ),
    ReferenceCheck(
        "reinforce",
        "CartPole-v1",
        500_000,
        450.0,
        eval_freq=10_000,
        source="policy-gradient issue: REINFORCE with a learned baseline (the preset's)",
    ),
    ReferenceCheck(
        "a2c",
        "CartPole-v1",
        500_000,
        475.0,
        eval_freq=10_000,
        source="rl-baselines3-zoo A2C CartPole-v1: 500",
    ),
    ReferenceCheck(
        "ppo",
        "CartPole-v1",
        100_000,
        475.0,
        eval_freq=5_000,
        source="rl-baselines3-zoo PPO CartPole-v1: 500",
    ),
    ReferenceCheck(
        "ppo",
        "CartPole-v1",
        100_000,
        475.0,
        eval_freq=5_000,
        overrides=("kl_penalty=true",),
        source="PPO with adaptive KL penalty (Schulman et al., 2017) on the PPO preset",
    ),
    ReferenceCheck(
        "ppo",
        "LunarLander-v3",
        1_000_000,
        200.0,
        eval_freq=20_000,
        stop_at_bar=True,
        source="issue 3 (200 is Gymnasium's solved threshold)",
    ),
    ReferenceCheck(
        "sac",
        "Pendulum-v1",
        20_000,
        -200.0,
        eval_freq=1_000,
        source="issue 3",
    ),
    ReferenceCheck(
        "ppo",
        "Pendulum-v1",
        200_000,
        -250.0,
        eval_freq=10_000,
        source="issue 3: PPO with a Gaussian policy for continuous actions",
    ),
    ReferenceCheck(
        "sac",
        "LunarLanderContinuous-v3",
        500_000,
        200.0,
        eval_freq=10_000,
        stop_at_bar=True,
        source="issue 3 (200 is Gymnasium's solved threshold)",
    ),
)


def select(
    only: Sequence[str] = (), checks: Sequence[ReferenceCheck] = CHECKS
) -> list[ReferenceCheck]:
    """The rows whose label contains any of `only` (case-insensitive); all rows if empty. Each
    substring must match at least one row."""
    if not only:
        return list(checks)
    for needle in only:
        if not any(needle.lower() in c.label.lower() for c in checks):
            labels = "\n  ".join(c.label for c in checks)
            raise ConfigError(f"--only {needle!r} matches no reference row; rows:\n  {labels}")
    return [c for c in checks if any(n.lower() in c.label.lower() for n in only)]


@dataclass(frozen=True)
class ReferenceResult:
    check: ReferenceCheck
    seed: int
    score: float
    """Best evaluation reached (by the check's metric)."""
    run: RunResult
    stop_at_bar: bool = False
    """Whether the run was asked to end at the bar."""
    setup: dict[str, Any] = field(default_factory=dict)
    """The resolved hyperparameters, `n_envs` and `env_kwargs` the run trained with."""

    @property
    def passed(self) -> bool:
        return self.score >= self.check.bar

    @property
    def final(self) -> float | None:
        final = self.run.final_eval
        if final is None:
            return None
        return final.success_rate if self.check.metric == "success_rate" else final.mean

    @property
    def bar_step(self) -> int | None:
        """Env steps at the first evaluation whose mean return reaches the bar (None for
        success-rate rows, whose curve holds mean returns)."""
        if self.check.metric != "mean_return":
            return None
        return next(
            (step for step, mean, _ in self.run.evaluations if mean >= self.check.bar), None
        )

    def to_entry(self, command: str = "") -> results.Entry:
        """What `docs/results/reference.json` keeps for this row and seed."""
        check = self.check
        return {
            "algorithm": check.algorithm,
            "env_id": check.env_id,
            "overrides": list(check.overrides),
            "metric": check.metric,
            "bar": check.bar,
            "budget": check.timesteps,
            "eval_freq": check.eval_freq,
            "eval_episodes": check.eval_episodes,
            "stop_at_bar": self.stop_at_bar,
            "stopped_at_bar": self.run.reached_target,
            "best": self.score,
            "final": self.final,
            "bar_step": self.bar_step,
            "passed": self.passed,
            "env_steps": self.run.timesteps,
            "wall_seconds": round(self.run.wall_seconds, 3),
            "train_seconds": round(self.run.train_seconds, 3),
            "curve": [
                [step, mean, round(seconds, 3)] for step, mean, seconds in self.run.evaluations
            ],
            "recorded": results.now(),
            "machine": results.machine_info(),
            "command": command,
            "setup": self.setup,
        }


def resolved_setup(check: ReferenceCheck) -> dict[str, Any]:
    """What a run of `check` trains with now: the preset resolved with the row's overrides, as
    the run folder's config.json records it (JSON types). Stored with every result, so a later
    preset change shows which stored results no longer describe the row."""
    from trainer import registry
    from trainer.core.config import config_to_json, resolve

    spec = resolve(
        check.algorithm,
        registry.get(check.algorithm).config_class,
        check.env_id,
        list(check.overrides),
    )
    if hasattr(spec.config, "total_timesteps"):
        spec.config.total_timesteps = max(check.timesteps, 1)
    setup = {
        "hyperparameters": config_to_json(spec.config),
        "n_envs": spec.n_envs,
        "env_kwargs": spec.env_kwargs,
    }
    loaded: dict[str, Any] = json.loads(json.dumps(setup))
    return loaded


def run_check(
    check: ReferenceCheck, seed: int, progress: bool = False, stop_at_bar: bool | None = None
) -> ReferenceResult:
    """Trains one row for one seed in a temporary run folder. `stop_at_bar` None = the row's
    default; it only applies to mean-return rows."""
    stop = check.stop_at_bar if stop_at_bar is None else stop_at_bar
    stop = stop and check.metric == "mean_return"
    with tempfile.TemporaryDirectory(prefix="agentserve-ref-") as tmp:
        run = train(
            RunOptions(
                algorithm=check.algorithm,
                env_id=check.env_id,
                seed=seed,
                timesteps=check.timesteps,
                overrides=check.overrides,
                run_dir=Path(tmp),
                eval_freq=check.eval_freq,
                eval_episodes=check.eval_episodes,
                progress=progress,
                target_return=check.bar if stop else None,
            )
        )
        recorded = json.loads((Path(tmp) / "config.json").read_text(encoding="utf-8"))
    setup = {key: recorded[key] for key in ("hyperparameters", "n_envs", "env_kwargs")}
    assert run.best_eval is not None
    score = run.best_eval.success_rate if check.metric == "success_rate" else run.best_eval.mean
    return ReferenceResult(check, seed, score, run, stop, setup)


def unavailable(check: ReferenceCheck) -> str | None:
    """Why the row cannot run here (unknown algorithm, env not installed, preset or override
    that does not resolve), or None if it can."""
    from trainer import registry
    from trainer.core.config import resolve
    from trainer.envs import make_env

    try:
        learner = registry.get(check.algorithm)
        resolve(check.algorithm, learner.config_class, check.env_id, list(check.overrides))
        make_env(check.env_id).close()
    except AgentserveError as error:
        return str(error)
    return None


def _entry(
    check: ReferenceCheck, seed: int, stop_at_bar: bool | None, command: str
) -> results.Entry:
    """One (row, seed) run as a stored entry; runs in a worker process with `--jobs`."""
    return run_check(check, seed, stop_at_bar=stop_at_bar).to_entry(command)


def _summary(label: str, seed: int, entry: results.Entry) -> str:
    status = "ok" if entry["passed"] else "MISSED"
    reached = "" if entry["bar_step"] is None else f", bar reached at step {entry['bar_step']:,}"
    return (
        f"{label} seed {seed}: best {entry['best']:.4g} (bar {entry['bar']:g}) {status}"
        f"{reached}, {entry['env_steps']:,} steps in {entry['wall_seconds']:.0f} s"
    )


def run_benchmark(
    checks: Sequence[ReferenceCheck],
    docs: Path,
    seeds: Sequence[int] | None = None,
    jobs: int = 1,
    stop_at_bar: bool | None = None,
    command: str = "",
) -> bool:
    """Runs every (row, seed), `jobs` runs at a time in separate processes, and merges each
    result into `<docs>/results/reference.json` as soon as it finishes. `seeds` None = each row's
    own seeds. True if every run reached its bar."""
    path = results.part_path(docs, results.REFERENCE)
    all_passed = True
    runnable = []
    for check in checks:
        reason = unavailable(check)
        if reason is None:
            runnable.append(check)
        else:
            print(f"skipping {check.label}: {reason}", flush=True)
            all_passed = False
    runs = [(c, s) for c in runnable for s in (c.seeds if seeds is None else seeds)]
    print(f"{len(runs)} reference run(s), {jobs} at a time; results go to {path}", flush=True)

    def store(index: int, check: ReferenceCheck, seed: int, entry: results.Entry) -> None:
        nonlocal all_passed
        results.merge_entry(path, results.REFERENCE, check.label, seed, entry)
        all_passed = all_passed and bool(entry["passed"])
        print(f"[{index}/{len(runs)}] {_summary(check.label, seed, entry)}", flush=True)

    if jobs <= 1:
        for index, (check, seed) in enumerate(runs, 1):
            print(f"[{index}/{len(runs)}] {check.label} seed {seed}: training ...", flush=True)
            try:
                entry = _entry(check, seed, stop_at_bar, command)
            except Exception as error:  # one failed row must not stop the others
                print(f"[{index}/{len(runs)}] {check.label} seed {seed}: FAILED: {error}")
                all_passed = False
                continue
            store(index, check, seed, entry)
        return all_passed
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = {
            pool.submit(_entry, check, seed, stop_at_bar, command): (check, seed)
            for check, seed in runs
        }
        started = time.monotonic()
        try:
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                check, seed = futures[future]
                try:
                    entry = future.result()
                except Exception as error:  # one failed row must not lose the others
                    print(f"[{done}/{len(runs)}] {check.label} seed {seed}: FAILED: {error}")
                    all_passed = False
                    continue
                store(done, check, seed, entry)
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        print(f"all runs done in {time.monotonic() - started:.0f} s", flush=True)
    return all_passed


__all__ = [
    "CHECKS",
    "ReferenceCheck",
    "ReferenceResult",
    "run_benchmark",
    "run_check",
    "select",
    "unavailable",
]

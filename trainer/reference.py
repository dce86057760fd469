"""Reference learning checks: which algorithm must reach what, on which env, within what budget.

Shared by the slow tests (`tests/learning`, `make learning`) and the benchmark that writes
`docs/learning-results.md` (`make bench-learning`). The figure of merit is the best deterministic
evaluation reached within the budget (the checkpoint that gets exported), as rl-baselines3-zoo
reports it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

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
        "qlearning",
        "agentserve/GridWorld-v0",
        20_000,
        _gridworld_optimum(),
        eval_freq=2_000,
        eval_episodes=1,
        source="optimal return by dynamic programming",
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
        "Taxi-v4",
        200_000,
        7.5,
        eval_freq=10_000,
        source="SARSA issue (Taxi's optimum is about 8 per episode; gymnasium 1.4 ships v4)",
    ),
    ReferenceCheck(
        "reinforce",
        "CartPole-v1",
        500_000,
        450.0,
        eval_freq=10_000,
        source="policy-gradient issue: REINFORCE with a learned baseline",
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
)


@dataclass(frozen=True)
class ReferenceResult:
    check: ReferenceCheck
    seed: int
    score: float
    """Best evaluation reached (by the check's metric)."""
    run: RunResult

    @property
    def passed(self) -> bool:
        return self.score >= self.check.bar


def run_check(check: ReferenceCheck, seed: int, progress: bool = False) -> ReferenceResult:
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
            )
        )
    assert run.best_eval is not None
    score = run.best_eval.success_rate if check.metric == "success_rate" else run.best_eval.mean
    return ReferenceResult(check, seed, score, run)

"""Rebuilds the bundled default model repository (service/default_models) from scratch.

    python scripts/build_default_models.py

Trains DQN on CartPole-v1 and Q-learning on agentserve/GridWorld-v0 with their presets, exports
both, and refuses to finish unless each artifact passes its bar on 100 deterministic episodes
served through the same runtime the server uses.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from agentserve.manifest import load_manifest
from service.policy import ServedPolicy
from service.server import default_model_repo
from trainer.envs.gridworld import GridWorldEnv, optimal_return
from trainer.evaluation import evaluate
from trainer.loop import RunOptions, train

BUNDLE = (
    # (algorithm, env id, seed, eval_freq, bar on the mean return of 100 episodes)
    ("dqn", "CartPole-v1", 0, 2_500, 475.0),
    ("qlearning", "agentserve/GridWorld-v0", 0, 5_000, optimal_return(GridWorldEnv(), 100)),
)


def check(artifact: Path, bar: float) -> float:
    policy = ServedPolicy(load_manifest(artifact))
    rng = np.random.default_rng(0)
    result = evaluate(
        lambda obs, mask: (
            policy.decide(obs.tolist(), [] if mask is None else mask.tolist(), True, rng).action
        ),
        policy.manifest.env_id,
        episodes=100,
        seed=1_000_000,
    )
    print(
        f"{artifact.parent.name}: {result.mean:.2f} +- {result.std:.2f} "
        f"over 100 episodes (bar {bar})"
    )
    if result.mean < bar:
        sys.exit(f"{artifact} misses its bar: {result.mean} < {bar}")
    return result.mean


def main() -> int:
    target = default_model_repo()
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp) / "models"
        for algorithm, env_id, seed, eval_freq, bar in BUNDLE:
            result = train(
                RunOptions(
                    algorithm=algorithm,
                    env_id=env_id,
                    seed=seed,
                    out_repo=staging,
                    run_dir=Path(tmp) / "runs" / algorithm,
                    eval_freq=eval_freq,
                    eval_episodes=20,
                )
            )
            assert result.artifact is not None
            check(result.artifact, bar)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(staging, target)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

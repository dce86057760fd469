"""Rebuilds the bundled default model repository (service/default_models) from scratch.

    python scripts/build_default_models.py

    python scripts/build_default_models.py --safe-variant-only

Trains DQN on CartPole-v1 and Q-learning on agentserve/GridWorld-v0 with their presets, exports
both, derives `cartpole-dqn-safe` (the same network with a demonstration safety rule set, see
docs/safety.md), and refuses to finish unless each artifact passes its bar on 100 deterministic
episodes served through the same runtime the server uses. `--safe-variant-only` re-derives the
safe variant from the bundled `cartpole-dqn` without training.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from agentserve.manifest import MANIFEST_FILE, load_manifest
from agentserve.safety import parse_safety
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


SAFE_VARIANT = "cartpole-dqn-safe"
DEMO_SAFETY = {
    "feature_names": ["cart_position", "cart_velocity", "pole_angle", "pole_angular_velocity"],
    "rules": [
        {
            "name": "left-edge",
            "when": {
                "all": [
                    {"feature": "cart_position", "op": "<", "value": -1.8},
                    {"feature": "cart_velocity", "op": "<", "value": 0.0},
                ]
            },
            "forbid": [0],
        },
        {
            "name": "right-edge",
            "when": {
                "all": [
                    {"feature": "cart_position", "op": ">", "value": 1.8},
                    {"feature": "cart_velocity", "op": ">", "value": 0.0},
                ]
            },
            "forbid": [1],
        },
    ],
}
"""Near either end of the track, moving outwards, the cart may not be pushed further out."""


def derive_safe_variant(source: Path, repo: Path) -> Path:
    """`source` (a cartpole-dqn version folder) copied as SAFE_VARIANT/1 with DEMO_SAFETY."""
    manifest = load_manifest(source).manifest
    safety = parse_safety(DEMO_SAFETY, manifest.observation_space, manifest.action_space)
    target = repo / SAFE_VARIANT / "1"
    shutil.rmtree(target.parent, ignore_errors=True)
    shutil.copytree(source, target)
    derived = dataclasses.replace(manifest, name=SAFE_VARIANT, version=1, safety=safety)
    text = json.dumps(derived.to_json(), indent=2) + "\n"
    (target / MANIFEST_FILE).write_text(text, encoding="utf-8")
    return target


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
    if sys.argv[1:] == ["--safe-variant-only"]:
        check(derive_safe_variant(target / "cartpole-dqn" / "1", target), 475.0)
        return 0
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
            if algorithm == "dqn":
                check(derive_safe_variant(result.artifact, staging), bar)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(staging, target)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

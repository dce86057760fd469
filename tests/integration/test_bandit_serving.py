"""Tiny bandits of every kind, trained and exported into a fresh repository, served by the real
server: Act returns allowed arms, with the probabilities and propensities their manifests
promise."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from agentserve import Client, cli
from agentserve.errors import ManifestError
from agentserve.local_server import LocalServer
from agentserve.manifest import load_manifest
from service.runtime.onnx import OnnxRuntime
from service.runtime.table import TableRuntime
from trainer.envs.bandits import KArmedTestbedEnv
from trainer.loop import RunOptions, train


@dataclass(frozen=True)
class Bandit:
    algorithm: str
    env_id: str
    runtime: str
    arms: int
    observation: tuple[float, ...]

    @property
    def policy(self) -> str:
        return f"{self.algorithm.replace('_', '-')}-bandit"


BANDITS = (
    Bandit("epsilon_greedy", "agentserve/KArmedTestbed-v0", "table", 10, (0.0,)),
    Bandit("ucb1", "agentserve/KArmedTestbed-v0", "table", 10, (0.0,)),
    Bandit("thompson", "agentserve/BernoulliBandit-v0", "onnx", 10, (0.0,)),
    Bandit("linucb", "agentserve/ContextualBandit-v0", "onnx", 5, (0.5, -1.0, 0.2, 1.5, -0.3)),
)
MASK_SEED = 7


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bandits")
    for bandit in BANDITS:
        train(
            RunOptions(
                algorithm=bandit.algorithm,
                env_id=bandit.env_id,
                seed=0,
                timesteps=300,
                overrides=("env_kwargs={problem_seed: 0, steps: 100}",),
                run_dir=root / "runs" / bandit.algorithm,
                out_repo=root / "repo",
                name=bandit.policy,
                eval_freq=0,
                eval_episodes=1,
                progress=False,
            )
        )
    return root / "repo"


@pytest.fixture(scope="module")
def client(repo: Path) -> Iterator[Client]:
    with LocalServer(repo) as server, Client(server.target) as connected:
        connected.wait_ready()
        yield connected


def test_every_bandit_is_listed_with_its_runtime(client: Client) -> None:
    listed = {p.name: p for p in client.list_policies()}
    assert set(listed) == {b.policy for b in BANDITS}
    for bandit in BANDITS:
        description = listed[bandit.policy]
        assert (description.algorithm, description.runtime) == (bandit.algorithm, bandit.runtime)
        assert description.action_space == {"type": "discrete", "n": bandit.arms}
        assert description.observation_shape == (len(bandit.observation),)


def random_masks(arms: int, count: int) -> list[list[bool]]:
    rng = np.random.default_rng(MASK_SEED)
    masks = rng.random((count, arms)) < 0.5
    masks[np.arange(count), rng.integers(arms, size=count)] = True
    listed: list[list[bool]] = masks.tolist()
    return listed


@pytest.mark.parametrize("bandit", BANDITS, ids=[b.algorithm for b in BANDITS])
def test_act_returns_allowed_arms_with_sane_probabilities(
    client: Client, repo: Path, bandit: Bandit
) -> None:
    artifact = load_manifest(repo / bandit.policy / "1")
    local = OnnxRuntime(artifact)
    for mask in random_masks(bandit.arms, 15):
        allowed = np.array(mask)
        expected = local.infer(np.array([bandit.observation], np.float32), allowed[None])
        greedy = client.act(bandit.observation, mask, deterministic=True, policy=bandit.policy)
        assert greedy.action == int(expected.greedy_actions[0])
        assert mask[greedy.action] and greedy.propensity == 1.0
        assert len(greedy.values) == bandit.arms  # every bandit serves its value estimates
        np.testing.assert_allclose(greedy.values, expected.values[0], rtol=1e-5, atol=1e-6)
        for _ in range(4):
            sampled = client.act(
                bandit.observation, mask, deterministic=False, policy=bandit.policy
            )
            probabilities = sampled.probabilities
            assert mask[sampled.action]
            assert (probabilities[~allowed] == 0).all()
            assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
            assert sampled.propensity == pytest.approx(float(probabilities[sampled.action]))
            assert sampled.propensity > 0
            np.testing.assert_allclose(probabilities, expected.probabilities[0], atol=1e-6)
            if bandit.algorithm in ("ucb1", "linucb"):  # deterministic policies
                assert sampled.action == greedy.action and sampled.propensity == 1.0
            if bandit.algorithm == "epsilon_greedy":
                epsilon = artifact.manifest.epsilon
                uniform = epsilon / allowed.sum()
                assert probabilities[greedy.action] == pytest.approx(1 - epsilon + uniform)


def test_manifests_name_their_distributions(repo: Path) -> None:
    distributions = {
        b.algorithm: load_manifest(repo / b.policy / "1").manifest.distribution for b in BANDITS
    }
    assert distributions == {
        "epsilon_greedy": "epsilon_greedy",
        "ucb1": "greedy",
        "thompson": "thompson",
        "linucb": "greedy",
    }
    with pytest.raises(ManifestError, match="not 'thompson'"):
        TableRuntime(load_manifest(repo / "thompson-bandit" / "1"))


def test_evaluate_uses_the_env_arguments_it_was_trained_with(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Trained on one fixed problem (problem_seed 0) with 100-pull episodes: evaluating on fresh
    # problems of 1,000 pulls would say nothing about the policy.
    assert cli.main(["evaluate", str(repo / "ucb1-bandit"), "--episodes", "3"]) == 0
    out = capsys.readouterr().out
    returns = [float(r) for r in out.split("returns ")[1].splitlines()[0].split(", ")]
    best_arm = KArmedTestbedEnv(problem_seed=0)
    best_arm.reset(seed=0)
    assert len(returns) == 3
    assert np.mean(returns) > 100 * best_arm.q_star.mean() + 50  # well above random arms
    assert max(returns) < 100 * best_arm.q_star.max() + 60  # 100 pulls, not 1,000

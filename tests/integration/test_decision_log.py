"""The decision log through the service, and off-policy evaluation from it: a near-uniform
online policy (an untrained PPO, served with --online and --decision-log) logs contextual-bandit
decisions through gRPC; a LinUCB policy trained offline on the same problem is then evaluated
from that log alone, and its estimate is checked against its true value, measured by running it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agentserve import Client
from agentserve.cli import main
from agentserve.local_server import LocalServer
from agentserve.manifest import load_manifest
from agentserve.ope import evaluate, read_decision_log, target_probabilities
from service.policy import ServedPolicy
from trainer.envs import make_env
from trainer.loop import RunOptions, train

ENV = "agentserve/ContextualBandit-v0"
DECISIONS = 1500
TRUTH_STEPS = 5000


def export(repo: Path, tmp: Path, algorithm: str, timesteps: int) -> Path:
    result = train(
        RunOptions(
            algorithm=algorithm,
            env_id=ENV,
            timesteps=timesteps,
            out_repo=repo,
            run_dir=tmp / f"run-{algorithm}",
            eval_episodes=0,
            eval_freq=0,
            progress=False,
        )
    )
    assert result.artifact is not None
    return result.artifact


def true_values(target: ServedPolicy, logging: ServedPolicy) -> tuple[float, float]:
    """Expected reward per decision on the problem (seed 0), over fresh contexts: the target
    acting greedily, and the logging policy's served distribution."""
    env = make_env(ENV, problem_seed=0, steps=TRUTH_STEPS)
    observation, info = env.reset(seed=123)
    rng = np.random.default_rng(0)
    target_rewards, logging_rewards = [], []
    for _ in range(TRUTH_STEPS):
        expected = info["expected_rewards"]
        action = int(target.decide(observation.tolist(), [], True, rng).action)
        target_rewards.append(expected[action])
        mu = logging.decide(observation.tolist(), [], False, rng).probabilities
        logging_rewards.append(float(np.dot(mu, expected)))
        observation, _, _, _, info = env.step(action)
    return float(np.mean(target_rewards)), float(np.mean(logging_rewards))


def test_decision_log_collected_online_evaluates_a_trained_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, log_dir = tmp_path / "models", tmp_path / "decisions"
    logging_artifact = export(repo, tmp_path, "ppo", 0)  # near uniform over the 5 arms
    target_artifact = export(tmp_path / "targets", tmp_path, "linucb", 1000)
    name = logging_artifact.parent.name
    args = ("--online", name, "--decision-log", str(log_dir), "--snapshot-every", "100000")
    env = make_env(ENV, problem_seed=0, steps=DECISIONS)  # the problem LinUCB was trained on
    observation, _ = env.reset(seed=7)
    propensities = []
    with LocalServer(repo, extra_args=(*args, "--watch-interval", "0")) as server:
        with Client(server.target, policy=name) as client:
            for t in range(DECISIONS):
                decision = client.act(observation, deterministic=False, episode_id=f"d{t}")
                propensities.append(decision.propensity)
                next_observation, reward, *_ = env.step(decision.action)
                client.feedback(f"d{t}", float(reward), terminated=True, feedback_id=f"f{t}")
                observation = next_observation
            client.feedback(f"d{t}", 0.0, terminated=True, feedback_id=f"f{t}")  # a retry
        # Flushed per line: the whole log is readable while the server runs.
        records = read_decision_log([log_dir])
    assert len(records) == DECISIONS  # the retry logged nothing twice
    assert [r.event_id for r in records] == sorted((r.event_id for r in records), key=int)
    assert {(r.policy, r.step, r.terminated) for r in records} == {(name, 0, True)}
    assert [r.propensity for r in records] == pytest.approx(propensities)
    first = json.loads((log_dir / name / "decisions-0.jsonl").read_text().splitlines()[0])
    assert first["episode_id"] == "d0" and len(first["observation"]) == 5
    assert min(propensities) > 0.1 and max(propensities) < 0.3  # near uniform

    target = ServedPolicy(load_manifest(target_artifact))
    logging = ServedPolicy(load_manifest(logging_artifact))
    report = evaluate(records, target_probabilities(target, records))
    target_value, logging_value = true_values(target, logging)
    ips, snips, logged = report.get("IPS"), report.get("SNIPS"), report.get("logged")
    summary = f"true: target {target_value:.4f}, logging {logging_value:.4f}; " + "; ".join(
        f"{e.estimator} {e.value:.4f} [{e.low:.4f}, {e.high:.4f}] n {e.n} ESS {e.ess:.1f}"
        for e in report.estimates
    )
    assert ips.covers(target_value) and snips.covers(target_value), summary
    assert logged.covers(logging_value), summary
    # The estimates rank the trained policy above the policy that logged the data.
    assert ips.low > logging_value and snips.low > logging_value, summary
    assert target_value > logging_value + 0.5, summary
    assert 0.1 * DECISIONS < snips.ess < 0.35 * DECISIONS, summary  # where the two agree

    capsys.readouterr()
    assert main(["evaluate-log", "--log", str(log_dir), "--policy", str(target_artifact)]) == 0
    out = capsys.readouterr().out
    assert f"{DECISIONS} logged decisions in {DECISIONS} episodes" in out
    assert f"{ips.value:.4f}" in out and "PDWIS" not in out  # one decision per episode

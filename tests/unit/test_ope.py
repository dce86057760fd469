"""Off-policy evaluation (agentserve.ope) on synthetic logs whose truth is known, the decision-log
writer and reader, and `agentserve evaluate-log`'s errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from agentserve.cli import main
from agentserve.ope import (
    DecisionLogError,
    effective_sample_size,
    episodes_of,
    evaluate,
    format_report,
    importance_weights,
    ips,
    per_decision_wis,
    read_decision_log,
    snips,
    target_probabilities,
)
from service.online.decision_log import DecisionLog
from service.online.host import Awaiting
from service.server import default_model_repo

MEANS = np.array([0.1, 0.5, 0.9, 0.3, -0.2])
K = len(MEANS)
GRID = default_model_repo() / "gridworld-qlearning" / "1"


def uniform_log(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A uniform-random logging policy over K arms, reward ~ N(mean[a], 1)."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, K, n)
    rewards = MEANS[actions] + rng.normal(0.0, 1.0, n)
    return actions, rewards, np.full(n, 1.0 / K)


@pytest.mark.parametrize("arm", [2, 4])
def test_ips_and_snips_recover_a_deterministic_targets_mean(arm: int) -> None:
    covered = {"IPS": 0, "SNIPS": 0}
    estimates: dict[str, list[float]] = {"IPS": [], "SNIPS": []}
    seeds = 200
    for seed in range(seeds):
        actions, rewards, mu = uniform_log(seed, 2000)
        weights = importance_weights((actions == arm).astype(float), mu)
        for estimate in (ips(weights, rewards), snips(weights, rewards)):
            covered[estimate.estimator] += estimate.covers(MEANS[arm])
            estimates[estimate.estimator].append(estimate.value)
            assert estimate.low < estimate.value < estimate.high
    for name in covered:
        # 95% intervals: coverage near 0.95 over 200 seeds; the estimates centred on the truth.
        assert 0.9 <= covered[name] / seeds <= 0.99, (name, covered[name])
        values = np.asarray(estimates[name])
        assert abs(values.mean() - MEANS[arm]) < 4 * values.std() / np.sqrt(seeds)


def test_estimator_formulas_by_hand() -> None:
    w = np.array([2.0, 0.0, 0.5, 1.5])
    r = np.array([1.0, 3.0, -1.0, 2.0])
    wr = w * r
    estimate = ips(w, r)
    assert estimate.value == pytest.approx(wr.mean())
    half = 1.959963984540054 * wr.std(ddof=1) / 2.0
    assert (estimate.low, estimate.high) == pytest.approx((wr.mean() - half, wr.mean() + half))
    value = wr.sum() / w.sum()
    estimate = snips(w, r)
    assert estimate.value == pytest.approx(value)
    se = np.sqrt(np.sum(w**2 * (r - value) ** 2)) / w.sum()
    assert estimate.high - estimate.value == pytest.approx(1.959963984540054 * se)
    assert estimate.ess == pytest.approx(w.sum() ** 2 / np.sum(w**2)) == pytest.approx(16 / 6.5)
    nothing = snips(np.zeros(3), np.ones(3))
    assert np.isnan(nothing.value) and nothing.ess == 0.0
    with pytest.raises(ValueError, match="propensity"):
        importance_weights([0.5], [0.0])


def test_effective_sample_size() -> None:
    assert effective_sample_size(np.ones(50)) == pytest.approx(50)
    assert effective_sample_size(np.zeros(5)) == 0.0
    actions, _, mu = uniform_log(0, 1000)
    weights = importance_weights((actions == 1).astype(float), mu)
    # A deterministic target under uniform logging: weight K on its own arm's pulls, else 0.
    assert effective_sample_size(weights) == pytest.approx(int((actions == 1).sum()))


# --- Per-decision WIS on a small MDP with a known value ---------------------------------------

# Up to 3 steps; the state is the previous action (0 at the start); reward R[s, a]; taking
# action 1 in state 1 ends the episode early.
R = np.array([[1.0, 0.0], [2.0, -1.0]])
HORIZON = 3
LOGGING = np.array([[0.5, 0.5], [0.5, 0.5]])
TARGET = np.array([[0.2, 0.8], [0.9, 0.1]])


def mdp_value(policy: np.ndarray, gamma: float) -> float:
    """Exact expected discounted return (dynamic programming over the 3 steps)."""

    def value(state: int, t: int) -> float:
        if t == HORIZON:
            return 0.0
        total = 0.0
        for action in (0, 1):
            ends = state == 1 and action == 1
            later = 0.0 if ends else gamma * value(action, t + 1)
            total += policy[state, action] * (R[state, action] + later)
        return total

    return value(0, 0)


def mdp_episodes(seed: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(n):
        state, ratios, rewards = 0, [], []
        for _ in range(HORIZON):
            action = int(rng.random() < LOGGING[state, 1])
            ratios.append(TARGET[state, action] / LOGGING[state, action])
            rewards.append(R[state, action] + rng.normal(0.0, 0.1))
            if state == 1 and action == 1:
                break
            state = action
        episodes.append((np.asarray(ratios), np.asarray(rewards)))
    return episodes


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_per_decision_wis_recovers_a_multi_step_value(gamma: float) -> None:
    truth = mdp_value(TARGET, gamma)
    behaviour = mdp_value(LOGGING, gamma)
    assert abs(truth - behaviour) > 0.5  # the target differs from the logging policy
    covered, values = 0, []
    for seed in range(10):
        estimate = per_decision_wis(mdp_episodes(seed, 2000), gamma, bootstrap=200, seed=seed)
        covered += estimate.covers(truth)
        values.append(estimate.value)
        assert estimate.n == 2000 and 0 < estimate.ess < 2000
    assert covered >= 8, covered
    assert abs(np.mean(values) - truth) < 0.05, (np.mean(values), truth)


def test_per_decision_wis_special_cases() -> None:
    episodes = mdp_episodes(0, 300)
    # On-policy (every ratio 1): the mean discounted return, episodes of any length.
    ones = [(np.ones_like(r), r) for _, r in episodes]
    returns = [float(np.dot(0.9 ** np.arange(len(r)), r)) for _, r in ones]
    assert per_decision_wis(ones, 0.9, bootstrap=0).value == pytest.approx(np.mean(returns))
    # One step per episode: SNIPS.
    w = np.array([0.0, 2.0, 0.5, 1.0])
    r = np.array([1.0, 2.0, 3.0, -1.0])
    single = [(w[i : i + 1], r[i : i + 1]) for i in range(4)]
    assert per_decision_wis(single).value == pytest.approx(snips(w, r).value)
    # gamma 0: the first step's weighted average only.
    first = per_decision_wis(episodes, 0.0, bootstrap=0).value
    w0 = np.array([c[0] for c, _ in episodes])
    r0 = np.array([x[0] for _, x in episodes])
    assert first == pytest.approx(np.dot(w0, r0) / w0.sum())


# --- The decision log ------------------------------------------------------------------------


def write_log(directory: Path, max_bytes: int = 10_000_000) -> DecisionLog:
    log = DecisionLog(directory, "grid", max_bytes=max_bytes)
    rng = np.random.default_rng(0)
    for episode in range(20):
        for step in range(3):
            mask = [True, True, step != 2, True]
            decision = Awaiting(str(episode * 3 + step), [float(step)], mask, step % 2, 0.25)
            log.write(1, f"ep-{episode}", decision, float(rng.normal()), False, step == 2)
    return log


def test_decision_log_rotates_and_reads_back_in_order(tmp_path: Path) -> None:
    log = write_log(tmp_path, max_bytes=2_000)
    log.close()
    files = list((tmp_path / "grid").iterdir())
    assert len(files) > 2 and all(f.stat().st_size <= 2_000 for f in files)
    newest = max(int(f.stem.split("-")[1]) for f in files)
    records = read_decision_log([tmp_path])
    assert [r.event_id for r in records] == [str(i) for i in range(60)]
    assert [r.step for r in records[:6]] == [0, 1, 2, 0, 1, 2]
    first = json.loads((tmp_path / "grid" / "decisions-0.jsonl").read_text().splitlines()[0])
    assert set(first) == {
        "time",
        "policy",
        "version",
        "episode_id",
        "event_id",
        "observation",
        "action_mask",
        "action",
        "propensity",
        "reward",
        "terminated",
        "truncated",
        "step",
    }
    episodes = episodes_of(records)
    assert len(episodes) == 20 and all(len(e) == 3 for e in episodes)
    # A restart appends to the newest file.
    again = DecisionLog(tmp_path, "grid", max_bytes=2_000)
    assert again.path == tmp_path / "grid" / f"decisions-{newest}.jsonl"
    again.close()


def test_target_probabilities_follow_the_served_distribution(tmp_path: Path) -> None:
    from agentserve.manifest import load_manifest
    from service.policy import ServedPolicy

    write_log(tmp_path).close()
    records = read_decision_log([tmp_path / "grid" / "decisions-0.jsonl"])
    policy = ServedPolicy(load_manifest(GRID))
    pi = target_probabilities(policy, records, chunk=7)
    rng = np.random.default_rng(0)
    for record, p in zip(records, pi, strict=True):
        decision = policy.decide(record.observation, record.action_mask or [], False, rng)
        assert p == pytest.approx(decision.probabilities[record.action])
    assert ((pi > 0) & (pi < 1)).all()  # epsilon-greedy: every allowed action has some mass
    report = evaluate(records, pi)
    assert report.multi_step and report.episodes == 20
    assert [e.estimator for e in report.estimates] == [
        "logged",
        "IPS",
        "SNIPS",
        "logged return",
        "PDWIS",
    ]
    assert "estimator" in format_report(report).splitlines()[0]
    with pytest.raises(DecisionLogError, match="continuous actions"):
        target_probabilities(SimpleNamespace(discrete=False, name="x", version=1), records)  # type: ignore[arg-type]


def test_evaluate_log_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_log(tmp_path).close()
    assert main(["evaluate-log", "--log", str(tmp_path), "--policy", str(GRID.parent)]) == 0
    out = capsys.readouterr().out
    assert "target gridworld-qlearning/1, 60 logged decisions in 20 episodes" in out
    for name in ("IPS", "SNIPS", "PDWIS", "ESS"):
        assert name in out

    def error(*argv: str) -> str:
        assert main(["evaluate-log", *argv]) == 2
        return capsys.readouterr().err

    assert "no such file" in error("--log", str(tmp_path / "nope"), "--policy", str(GRID))
    bad = tmp_path / "bad.jsonl"
    good = (tmp_path / "grid" / "decisions-0.jsonl").read_text().splitlines()
    bad.write_text(good[0] + "\n" + good[1][:-5] + "\n")
    assert f"{bad}:2: malformed" in error("--log", str(bad), "--policy", str(GRID))
    record = json.loads(good[0])
    bad.write_text(json.dumps({**record, "observation": [0.0, 1.0]}) + "\n")
    message = error("--log", str(bad), "--policy", str(GRID))
    assert f"{bad}:1: the observation has 2 values" in message and "expects 1" in message
    bad.write_text(json.dumps({**record, "propensity": 0}) + "\n")
    assert "propensity" in error("--log", str(bad), "--policy", str(GRID))
    bad.write_text(json.dumps({**record, "action": [0.5]}) + "\n")
    assert "discrete actions only" in error("--log", str(bad), "--policy", str(GRID))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no decisions-<n>.jsonl" in error("--log", str(empty), "--policy", str(GRID))

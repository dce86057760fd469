"""The safety layer around a served decision (service.policy): request mask AND safety rules,
fallback or FAILED_PRECONDITION when nothing is allowed, clamped continuous actions,
explanations, metrics, and policies that do not load with an invalid rule."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from learner_cases import make_learner, run_steps

from agentserve.errors import ManifestError
from agentserve.manifest import MANIFEST_FILE, load_manifest
from service.errors import FailedPrecondition
from service.metrics import Metrics
from service.policy import ServedPolicy
from service.repository import PolicyRepository
from service.server import default_model_repo
from trainer.export import export_artifact

CARTPOLE = default_model_repo() / "cartpole-dqn" / "1"
LEANS_RIGHT = {"name": "leans-right", "when": {"feature": 2, "op": ">", "value": 0.0}}


def served(section: dict[str, Any] | None, source: Path = CARTPOLE) -> ServedPolicy:
    return ServedPolicy(load_manifest(source), safety_config=section)


def observations(count: int, seed: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.2, 0.2, size=(count, 4)).tolist()


def test_a_rule_is_honoured_exactly_in_the_states_where_it_fires() -> None:
    plain = served(None)
    guarded = served({"rules": [{**LEANS_RIGHT, "forbid": [1]}]})
    rng = np.random.default_rng(0)
    fired_states = 0
    for obs in observations(300, seed=1):
        fires = obs[2] > 0.0
        fired_states += fires
        for deterministic in (True, False):
            decision = guarded.decide(obs, [], deterministic, rng)
            assert [f.rule for f in decision.fired] == (["leans-right"] if fires else [])
            if fires:
                assert decision.action == 0 and decision.probabilities[1] == 0.0
                assert decision.masked_by_rules == 1
            else:  # untouched: the same distribution as without the rule
                reference = plain.decide(obs, [], deterministic, np.random.default_rng(0))
                np.testing.assert_array_equal(decision.probabilities, reference.probabilities)
                if deterministic:
                    assert decision.action == reference.action
    assert 100 < fired_states < 200


def test_request_mask_and_rules_combine() -> None:
    policy = served({"rules": [{**LEANS_RIGHT, "forbid": [1]}]})
    rng = np.random.default_rng(0)
    decision = policy.decide([0, 0, -0.1, 0], [False, True], False, rng)  # rule silent
    assert decision.action == 1 and decision.masked_by_request == 1
    with pytest.raises(FailedPrecondition) as error:
        policy.decide([0, 0, 0.1, 0], [False, True], False, rng)  # request and rule clash
    message = str(error.value)
    assert "action_mask allows only [1]" in message and "'leans-right' forbids [1]" in message
    assert "no fallback_action" in message


def test_all_forbidden_returns_the_fallback_and_flags_it() -> None:
    section = {
        "rules": [{**LEANS_RIGHT, "forbid": [1]}, {"name": "always-left", "forbid": [0]}],
        "fallback_action": 1,
    }
    policy = served(section)
    rng = np.random.default_rng(0)
    for deterministic in (True, False):
        decision = policy.decide([0, 0, 0.1, 0], [], deterministic, rng)
        assert (decision.action, decision.fallback, decision.propensity) == (1, True, 1.0)
        assert decision.probabilities.tolist() == [0.0, 1.0]
        assert {f.rule for f in decision.fired} == {"leans-right", "always-left"}
    decision = policy.decide([0, 0, -0.1, 0], [], True, rng)  # only always-left fires
    assert (decision.action, decision.fallback) == (1, False)


def test_all_forbidden_without_fallback_names_the_rules() -> None:
    policy = served({"rules": [{"name": "a", "forbid": [0]}, {"name": "b", "forbid": [1]}]})
    with pytest.raises(FailedPrecondition, match="'a' forbids \\[0\\]; rule 'b' forbids \\[1\\]"):
        policy.decide([0, 0, 0, 0], [], True, np.random.default_rng(0))


def test_explanation_shows_every_action_before_and_after_masking() -> None:
    policy = served({"rules": [{**LEANS_RIGHT, "forbid": [1]}]})
    plain = served(None)
    obs = [0.0, 0.0, 0.05, 0.0]
    decision = policy.decide(obs, [], True, np.random.default_rng(0), explain=True)
    explanation = decision.explanation
    assert explanation is not None and explanation.value_kind == "q_value"
    unmasked = plain.decide(obs, [], True, np.random.default_rng(0))
    assert unmasked.values is not None
    left, right = explanation.actions
    assert (left.action, left.allowed, left.forbidden_by) == (0, True, ())
    assert (right.action, right.allowed, right.forbidden_by) == (1, False, ("leans-right",))
    assert left.value_before_mask == pytest.approx(float(unmasked.values[0]))
    assert right.value_before_mask == pytest.approx(float(unmasked.values[1]))
    assert right.value_after_mask == -math.inf
    assert left.value_after_mask == left.value_before_mask
    assert left.probability_before_mask == pytest.approx(float(unmasked.probabilities[0]))
    assert (left.probability_after_mask, right.probability_after_mask) == (1.0, 0.0)
    assert [f.rule for f in explanation.fired] == ["leans-right"]
    request_masked = policy.decide(
        [0, 0, -0.05, 0], [True, False], True, np.random.default_rng(0), explain=True
    )
    assert request_masked.explanation is not None
    assert request_masked.explanation.actions[1].forbidden_by == ("request",)
    assert policy.decide(obs, [], True, np.random.default_rng(0)).explanation is None


def test_metrics_count_masks_rule_hits_and_fallbacks() -> None:
    metrics = Metrics()
    policy = served(
        {
            "rules": [
                {**LEANS_RIGHT, "forbid": [1]},
                {"name": "never", "when": {"feature": 0, "op": ">", "value": 1}, "forbid": [0]},
            ],
            "fallback_action": 0,
        }
    )
    rng = np.random.default_rng(0)
    for obs, mask in (([0, 0, 0.1, 0], []), ([0, 0, -0.1, 0], [True, False]), ([2, 0, 0.1, 0], [])):
        metrics.record_decision(policy.name, policy.decide(obs, mask, True, rng))

    def value(name: str, **labels: str) -> float:
        sample = metrics.registry.get_sample_value(name, {"policy": policy.name, **labels})
        return 0.0 if sample is None else sample

    assert value("agentserve_masked_actions_total", source="rule") == 3
    assert value("agentserve_masked_actions_total", source="request") == 1
    assert value("agentserve_safety_rule_hits_total", rule="leans-right") == 2
    assert value("agentserve_safety_rule_hits_total", rule="never") == 1
    assert value("agentserve_safety_fallbacks_total") == 1


def copy_with_safety(tmp_path: Path, safety: object) -> Path:
    repo = tmp_path / "repo"
    target = repo / "cartpole-dqn" / "1"
    shutil.copytree(CARTPOLE, target)
    data = json.loads((target / MANIFEST_FILE).read_text())
    data["safety"] = safety
    (target / MANIFEST_FILE).write_text(json.dumps(data))
    return repo


def test_an_invalid_manifest_rule_stops_that_policy_from_loading(tmp_path: Path) -> None:
    repo = copy_with_safety(tmp_path, {"rules": [{"name": "bad", "forbid": [7]}]})
    shutil.copytree(default_model_repo() / "gridworld-qlearning", repo / "gridworld-qlearning")
    repository = PolicyRepository(repo, Metrics())
    failures = repository.load()
    assert [f.policy for f in failures] == ["cartpole-dqn"]
    assert "safety.rules[0].forbid: action 7 is outside the action space" in failures[0].reason
    assert repository.names() == ["gridworld-qlearning"]
    with pytest.raises(ManifestError, match="action 7"):
        load_manifest(repo / "cartpole-dqn" / "1")


def test_an_invalid_config_rule_stops_that_policy_from_loading(tmp_path: Path) -> None:
    repo = copy_with_safety(tmp_path, None)
    config = {
        "cartpole-dqn": {
            "rules": [{"name": "x", "when": {"feature": 9, "op": "<", "value": 0}, "forbid": [0]}]
        }
    }
    failures = PolicyRepository(repo, Metrics(), safety=config).load()
    assert len(failures) == 1
    assert "safety config of policy 'cartpole-dqn'.rules[0].when.feature" in failures[0].reason


def test_config_rules_add_to_the_manifest_rules(tmp_path: Path) -> None:
    repo = copy_with_safety(tmp_path, {"rules": [{**LEANS_RIGHT, "forbid": [1]}]})
    config = {
        "cartpole-dqn": {
            "rules": [
                {"name": "far-left", "when": {"feature": 0, "op": "<", "value": -1}, "forbid": [0]}
            ],
            "fallback_action": 0,
        }
    }
    repository = PolicyRepository(repo, Metrics(), safety=config)
    assert repository.load() == []
    policy = repository.get("cartpole-dqn")
    assert policy.safety.rule_names == ("leans-right", "far-left")
    decision = policy.decide([-2, 0, 0.1, 0], [], True, np.random.default_rng(0))
    assert decision.fallback and decision.action == 0
    clash = {"cartpole-dqn": {"rules": [{**LEANS_RIGHT, "forbid": [0]}]}}
    (failure,) = PolicyRepository(repo, Metrics(), safety=clash).load()
    assert "rule names ['leans-right'] are defined twice" in failure.reason


@pytest.fixture(scope="module")
def continuous_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    learner = make_learner("ppo/continuous")
    run_steps(learner, 64)
    repo = tmp_path_factory.mktemp("continuous")
    return export_artifact(learner, repo, "pendulum-ppo", "Pendulum-v1", {})


def test_continuous_actions_are_clamped_to_rule_bounds_and_flagged(
    continuous_artifact: Path,
) -> None:
    section = {
        "bounds": [
            {
                "name": "gentle",
                "when": {"feature": 0, "op": ">", "value": 0},
                "low": [-0.5],
                "high": [0.5],
            }
        ]
    }
    policy = served(section, continuous_artifact)
    rng = np.random.default_rng(0)
    clamped_by_rule = 0
    for _ in range(200):
        obs = rng.uniform(-1, 1, size=3).tolist()
        decision = policy.decide(obs, [], False, rng, explain=True)
        action = np.asarray(decision.action)
        explanation = decision.explanation
        assert explanation is not None and explanation.unclamped_action is not None
        raw = explanation.unclamped_action
        if obs[0] > 0:
            assert -0.5 <= action[0] <= 0.5
            assert [f.rule for f in decision.fired] == ["gentle"]
            assert decision.fired[0].low == (-0.5,) and decision.fired[0].high == (0.5,)
        else:
            assert decision.fired == () and -2.0 <= action[0] <= 2.0
        expected = np.clip(np.clip(raw, -2, 2), *((-0.5, 0.5) if obs[0] > 0 else (-2, 2)))
        np.testing.assert_array_equal(action, expected)
        assert decision.clamped == (not np.array_equal(action, raw))
        clamped_by_rule += "rule" in decision.clamp_sources
    assert clamped_by_rule > 0


def test_space_clamping_is_flagged_for_gaussian_draws(continuous_artifact: Path) -> None:
    policy = served(None, continuous_artifact)
    rng = np.random.default_rng(1)
    sources: set[str] = set()
    for _ in range(400):
        decision = policy.decide([0.1, 0.2, 0.3], [], False, rng)
        assert -2.0 <= float(np.asarray(decision.action)[0]) <= 2.0
        sources.update(decision.clamp_sources)
    assert sources <= {"space"}
    deterministic = policy.decide([0.1, 0.2, 0.3], [], True, rng)
    assert deterministic.propensity == 1.0


def test_conflicting_bounds_use_the_fallback_or_fail(continuous_artifact: Path) -> None:
    bounds = [
        {"name": "up", "low": [1.0], "high": [None]},
        {"name": "down", "low": [None], "high": [0.0]},
    ]
    with pytest.raises(FailedPrecondition, match="'up', 'down' leave no action"):
        served({"bounds": bounds}, continuous_artifact).decide(
            [0, 0, 0], [], True, np.random.default_rng(0)
        )
    policy = served({"bounds": bounds, "fallback_action": [0.25]}, continuous_artifact)
    decision = policy.decide([0, 0, 0], [], True, np.random.default_rng(0))
    assert decision.fallback and np.asarray(decision.action).tolist() == [0.25]


def test_export_carries_rules_into_the_manifest_and_refuses_invalid_ones(tmp_path: Path) -> None:
    learner = make_learner("dqn")
    section = {"rules": [{**LEANS_RIGHT, "forbid": [1]}], "fallback_action": 0}
    path = export_artifact(learner, tmp_path, "guarded", "CartPole-v1", {}, safety=section)
    manifest = load_manifest(path).manifest
    assert manifest.safety.rule_names == ("leans-right",) and manifest.safety.fallback_action == 0
    assert json.loads((path / MANIFEST_FILE).read_text())["safety"] == section
    decision = served(None, path).decide([0, 0, 0.1, 0], [], True, np.random.default_rng(0))
    assert decision.action == 0 and decision.fired[0].rule == "leans-right"
    with pytest.raises(ManifestError, match="action 4 is outside"):
        export_artifact(
            learner,
            tmp_path,
            "broken",
            "CartPole-v1",
            {},
            safety={"rules": [{"name": "x", "forbid": [4]}]},
        )
    assert not (tmp_path / "broken").exists()


def test_train_validates_rules_first_and_exports_them(tmp_path: Path) -> None:
    from trainer.loop import RunOptions, train

    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {name: x, forbid: [9]}\n")
    options = RunOptions(
        algorithm="dqn",
        env_id="CartPole-v1",
        timesteps=200,
        run_dir=tmp_path / "run",
        eval_episodes=0,
        progress=False,
        out_repo=tmp_path / "repo",
        safety=bad,
    )
    with pytest.raises(ManifestError, match=r"bad.yaml: safety.rules\[0\].forbid: action 9"):
        train(options)
    assert not (tmp_path / "repo").exists()
    good = tmp_path / "rules.json"
    good.write_text(json.dumps({"rules": [{**LEANS_RIGHT, "forbid": [1]}]}))
    result = train(replace(options, safety=good))
    assert result.artifact is not None
    assert load_manifest(result.artifact).manifest.safety.rule_names == ("leans-right",)


def test_training_logs_the_actions_the_env_mask_forbade(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trainer.loop import RunOptions, train

    run = tmp_path / "run"
    train(
        RunOptions(
            algorithm="qlearning",
            env_id="agentserve/GridWorld-v0",
            timesteps=3000,
            run_dir=run,
            eval_episodes=0,
            progress=False,
        )
    )
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    values = [e.value for e in events.Scalars("safety/env_masked_actions")]
    assert values and all(0.0 < v < 4.0 for v in values)

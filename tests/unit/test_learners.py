"""Every registered learner, in every setup (learner_cases.SETUPS): masked acting, continuous
acting, state round trips, determinism, its policy module."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from learner_cases import (
    ALGORITHMS,
    CASES,
    CONTINUOUS_SETUPS,
    DISCRETE_SETUPS,
    SETUPS,
    make_learner,
    module_outputs,
    num_actions,
    observations_and_masks,
    random_transitions,
    run_steps,
)
from safetensors.numpy import save_file

from agentserve.errors import ConfigError
from agentserve.spaces import BoxSpec
from trainer import registry
from trainer.algos.qlearning import QLearning
from trainer.core.checkpoint import load_checkpoint, save_checkpoint
from trainer.learner import Learner, LearnerState, TransitionBatch

TRAIN_STEPS = 300

each_algorithm = pytest.mark.parametrize("algorithm", ALGORITHMS)
each_setup = pytest.mark.parametrize("algorithm", list(SETUPS))
each_discrete = pytest.mark.parametrize("algorithm", DISCRETE_SETUPS)
each_continuous = pytest.mark.parametrize("algorithm", CONTINUOUS_SETUPS)


@each_algorithm
def test_every_algorithm_has_a_case(algorithm: str) -> None:
    assert algorithm in CASES, f"add a learner_cases.CASES entry for {algorithm!r}"
    assert registry.get(algorithm).algorithm == algorithm


def outputs_differ(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def assert_same_state(a: LearnerState, b: LearnerState) -> None:
    assert a.meta == b.meta
    assert sorted(a.tensors) == sorted(b.tensors)
    for key in a.tensors:
        np.testing.assert_array_equal(a.tensors[key], b.tensors[key], err_msg=key)


def states_differ(a: LearnerState, b: LearnerState) -> bool:
    if a.meta != b.meta or sorted(a.tensors) != sorted(b.tensors):
        return True
    return any(not np.array_equal(a.tensors[k], b.tensors[k], equal_nan=True) for k in a.tensors)


@each_discrete
@pytest.mark.parametrize("trained", [False, True])
def test_act_never_returns_masked_action(algorithm: str, trained: bool) -> None:
    learner = make_learner(algorithm)
    if trained:
        run_steps(learner, TRAIN_STEPS)
    observations, masks = observations_and_masks(learner, 2000, seed=1)
    rows = np.arange(len(masks))
    for deterministic in (True, False):
        for _ in range(3):
            batch = learner.act(observations, masks, deterministic=deterministic)
            assert batch.actions.shape == (len(masks),)
            assert masks[rows, batch.actions].all()
            assert (batch.propensities > 0).all()
            assert (batch.propensities <= 1).all()
            if deterministic:
                np.testing.assert_array_equal(batch.propensities, 1.0)


@each_discrete
def test_act_with_one_allowed_action_takes_it(algorithm: str) -> None:
    learner = make_learner(algorithm)
    n = num_actions(learner)
    observations, _ = observations_and_masks(learner, 400, seed=2)
    only = np.random.default_rng(3).integers(n, size=len(observations))
    masks = np.zeros((len(observations), n), dtype=np.bool_)
    masks[np.arange(len(observations)), only] = True
    for deterministic in (True, False):
        batch = learner.act(observations, masks, deterministic=deterministic)
        np.testing.assert_array_equal(batch.actions, only)
        np.testing.assert_allclose(batch.propensities, 1.0, rtol=1e-6)


@each_discrete
def test_stochastic_act_explores(algorithm: str) -> None:
    learner = make_learner(algorithm)  # the cases start at epsilon 0.5
    n = num_actions(learner)
    observations, _ = observations_and_masks(learner, 1, seed=4)
    many = np.repeat(observations, 2000, axis=0)
    batch = learner.act(many, None, deterministic=False)
    assert set(batch.actions.tolist()) == set(range(n))
    assert set(learner.act(many, None, deterministic=True).actions.tolist()) != set(range(n))


@each_discrete
def test_policy_module_greedy_matches_deterministic_act(algorithm: str) -> None:
    learner = make_learner(algorithm)
    run_steps(learner, TRAIN_STEPS)
    observations, masks = observations_and_masks(learner, 1000, seed=5)
    assert masks is not None
    greedy, probabilities, _ = module_outputs(learner.policy_module(), observations, masks)
    np.testing.assert_array_equal(greedy, learner.act(observations, masks, True).actions)
    assert (probabilities[~masks] == 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def box_bounds(learner: Learner) -> tuple[np.ndarray, np.ndarray]:
    space = learner.action_space
    assert isinstance(space, BoxSpec)
    return np.asarray(space.low, np.float32), np.asarray(space.high, np.float32)


@each_continuous
@pytest.mark.parametrize("trained", [False, True])
def test_continuous_act_shapes_bounds_and_densities(algorithm: str, trained: bool) -> None:
    learner = make_learner(algorithm)
    if trained:
        run_steps(learner, TRAIN_STEPS)
    low, high = box_bounds(learner)
    observations, _ = observations_and_masks(learner, 500, seed=1)
    greedy = learner.act(observations, None, deterministic=True)
    assert greedy.actions.shape == (500, len(low))
    assert greedy.actions.dtype == np.float32
    assert ((greedy.actions >= low) & (greedy.actions <= high)).all()
    np.testing.assert_array_equal(greedy.propensities, 1.0)
    drawn = learner.act(observations, None, deterministic=False)
    assert drawn.actions.shape == (500, len(low))
    assert np.isfinite(drawn.actions).all()
    assert (drawn.propensities > 0).all() and np.isfinite(drawn.propensities).all()
    assert not np.array_equal(drawn.actions, greedy.actions)  # it explores


@each_continuous
def test_continuous_policy_module_matches_deterministic_act(algorithm: str) -> None:
    learner = make_learner(algorithm)
    run_steps(learner, TRAIN_STEPS)
    low, high = box_bounds(learner)
    observations, _ = observations_and_masks(learner, 1000, seed=5)
    greedy, mean, log_std = module_outputs(learner.policy_module(), observations, None)
    np.testing.assert_allclose(
        greedy, learner.act(observations, None, True).actions, rtol=1e-6, atol=1e-6
    )
    assert ((greedy >= low) & (greedy <= high)).all()
    assert mean.shape == log_std.shape == greedy.shape
    assert np.isfinite(log_std).all()


@each_setup
def test_policy_module_is_a_snapshot(algorithm: str) -> None:
    learner = make_learner(algorithm)
    run_steps(learner, 100)
    module = learner.policy_module()
    observations, masks = observations_and_masks(learner, 200, seed=6)
    before = module_outputs(module, observations, masks)
    run_steps(learner, TRAIN_STEPS, seed=1)
    after = module_outputs(module, observations, masks)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    changed = module_outputs(learner.policy_module(), observations, masks)
    assert outputs_differ(before, changed)  # the learner itself did learn


@each_setup
def test_state_dict_is_a_snapshot(algorithm: str) -> None:
    learner = make_learner(algorithm)
    run_steps(learner, TRAIN_STEPS)
    state = learner.state_dict()
    copied = LearnerState({k: v.copy() for k, v in state.tensors.items()}, dict(state.meta))
    for transition in random_transitions(learner, 50, seed=7):
        learner.observe(transition)
    changed = [
        k
        for k in state.tensors
        if not np.array_equal(state.tensors[k], copied.tensors[k], equal_nan=True)
    ]
    assert changed == [], "state_dict() arrays change as the learner keeps learning"


def resume_and_compare(algorithm: str, restore: str, tmp_path: Path) -> None:
    first = make_learner(algorithm, seed=0)
    run_steps(first, TRAIN_STEPS)
    state = first.state_dict()
    second = make_learner(algorithm, seed=123)  # a different seed: everything must come from state
    if restore == "checkpoint":
        path = tmp_path / "checkpoints" / "learner.safetensors"
        save_checkpoint(state, path)
        assert path.is_file()
        assert not list(path.parent.glob(".*.tmp"))
        state = load_checkpoint(path)
    second.load_state_dict(state)
    assert_same_state(first.state_dict(), second.state_dict())
    assert (second.num_steps, second.num_updates) == (first.num_steps, first.num_updates)

    observations, masks = observations_and_masks(first, 500, seed=8)
    np.testing.assert_array_equal(
        first.act(observations, masks, True).actions, second.act(observations, masks, True).actions
    )
    # The generator state travels too: stochastic actions agree.
    np.testing.assert_array_equal(
        first.act(observations, masks, False).actions,
        second.act(observations, masks, False).actions,
    )
    before = module_outputs(first.policy_module(), observations, masks)
    for transition in random_transitions(first, 120, seed=9):
        first.observe(transition)
        second.observe(transition)
    outputs_first = module_outputs(first.policy_module(), observations, masks)
    outputs_second = module_outputs(second.policy_module(), observations, masks)
    for a, b in zip(outputs_first, outputs_second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert outputs_differ(before, outputs_first)  # they did learn, identically
    assert_same_state(first.state_dict(), second.state_dict())


@each_setup
def test_state_dict_round_trip(algorithm: str, tmp_path: Path) -> None:
    resume_and_compare(algorithm, "state", tmp_path)


@each_setup
def test_checkpoint_round_trip(algorithm: str, tmp_path: Path) -> None:
    resume_and_compare(algorithm, "checkpoint", tmp_path)


@each_setup
def test_same_seed_same_steps_same_state(algorithm: str) -> None:
    first, second, other = (make_learner(algorithm, seed=s) for s in (0, 0, 1))
    for learner in (first, second, other):
        run_steps(learner, TRAIN_STEPS, seed=4)
    assert first.num_steps == TRAIN_STEPS
    assert_same_state(first.state_dict(), second.state_dict())
    assert states_differ(first.state_dict(), other.state_dict())


@each_algorithm
def test_loading_another_algorithms_state_raises(algorithm: str, tmp_path: Path) -> None:
    others = [name for name in ALGORITHMS if name != algorithm]
    assert others, "needs a second registered algorithm"
    learner = make_learner(algorithm)
    for other in others:
        state = make_learner(other).state_dict()
        with pytest.raises(ConfigError, match=other):
            learner.load_state_dict(state)
        path = tmp_path / f"{other}.safetensors"
        save_checkpoint(state, path)
        with pytest.raises(ConfigError, match=other):
            learner.load_state_dict(load_checkpoint(path))


def test_load_checkpoint_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


@each_setup
def test_load_checkpoint_of_a_truncated_file(algorithm: str, tmp_path: Path) -> None:
    path = tmp_path / "learner.safetensors"
    save_checkpoint(make_learner(algorithm).state_dict(), path)
    path.write_bytes(path.read_bytes()[:-16])
    with pytest.raises(ConfigError, match="not an agentserve checkpoint"):
        load_checkpoint(path)


def test_load_checkpoint_of_junk(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file")
    with pytest.raises(ConfigError, match="not an agentserve checkpoint"):
        load_checkpoint(junk)


def test_load_checkpoint_without_learner_metadata(tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    save_file({"q_table": np.zeros((2, 2), dtype=np.float32)}, str(plain))
    with pytest.raises(ConfigError, match="not an agentserve checkpoint"):
        load_checkpoint(plain)


@each_setup
def test_observe_counts_steps(algorithm: str) -> None:
    learner = make_learner(algorithm)
    for transition in random_transitions(learner, 25, seed=10):
        scalars = learner.observe(transition)
        assert all(np.isfinite(v) for v in scalars.values())
    assert learner.num_steps == 25
    assert 0.0 <= learner.serving_epsilon <= 1.0


@pytest.mark.parametrize(
    ("terminated", "mask", "expected_target"),
    [
        (False, [False, True, True, False], 1.0 + 0.9 * 2.0),  # max over allowed: 2, not 10
        (False, None, 1.0 + 0.9 * 10.0),  # no mask: every action counts
        (True, [True, True, True, True], 1.0),  # terminal: no bootstrap
    ],
)
def test_qlearning_update_bootstraps_from_allowed_next_actions(
    terminated: bool, mask: list[bool] | None, expected_target: float
) -> None:
    learner = make_learner("qlearning", extra=("learning_rate=0.5", "gamma=0.9"))
    assert isinstance(learner, QLearning)
    learner.q_table[5] = [10.0, 1.0, 2.0, -3.0]
    learner.q_table[3, 2] = 0.4
    learner.observe(
        TransitionBatch(
            observations=np.array([[3.0]], dtype=np.float32),
            actions=np.array([2]),
            rewards=np.array([1.0], dtype=np.float32),
            next_observations=np.array([[5.0]], dtype=np.float32),
            terminated=np.array([terminated]),
            truncated=np.array([False]),
            next_action_masks=None if mask is None else np.array([mask]),
        )
    )
    assert learner.q_table[3, 2] == pytest.approx(0.4 + 0.5 * (expected_target - 0.4))
    assert learner.num_updates == 1


def normalizing_setups() -> list[str]:
    fields = {
        setup: {f.name for f in dataclasses.fields(registry.get(case.algorithm).config_class)}
        for setup, case in SETUPS.items()
    }
    return [setup for setup, names in fields.items() if "normalize_observations" in names]


def test_every_neural_learner_can_normalize_observations() -> None:
    algorithms = {SETUPS[s].algorithm for s in normalizing_setups()}
    assert {"dqn", "reinforce", "a2c", "ppo", "sac", "sac_discrete"} <= algorithms


@pytest.mark.parametrize("algorithm", normalizing_setups())
def test_normalizer_statistics_are_learned_checkpointed_and_exported(
    algorithm: str, tmp_path: Path
) -> None:
    learner = make_learner(algorithm, extra=("normalize_observations=true",))
    run_steps(learner, 120)
    state = learner.state_dict()
    counts = [v for k, v in state.tensors.items() if k.endswith("count") and v.ndim == 0]
    assert counts and float(counts[0]) == pytest.approx(120, abs=1e-3)
    module = learner.policy_module()
    statistics = {k: v for k, v in module.state_dict().items() if k.endswith((".mean", ".var"))}
    assert len(statistics) == 2, "the exported module carries the running mean and variance"
    assert all(not torch.equal(v, torch.zeros_like(v)) for v in statistics.values())
    # The statistics change what the exported policy computes: zeroing them changes the outputs.
    observations, masks = observations_and_masks(learner, 200, seed=3)
    before = module_outputs(module, observations, masks)
    with torch.no_grad():
        for name, value in module.state_dict().items():
            if name.endswith(".mean"):
                value.zero_()
    assert outputs_differ(before, module_outputs(module, observations, masks))
    resumed = make_learner(algorithm, seed=9, extra=("normalize_observations=true",))
    save_checkpoint(state, tmp_path / "state.safetensors")
    resumed.load_state_dict(load_checkpoint(tmp_path / "state.safetensors"))
    assert_same_state(learner.state_dict(), resumed.state_dict())

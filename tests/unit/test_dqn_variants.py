"""DQN's combinable options (Double, Dueling, prioritized replay, n-step): each alone and all
together keep the learner's guarantees (state round trip, determinism, export parity), and the
n-step accumulator and dueling head compute what the papers define."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from learner_cases import make_learner, random_transitions, run_steps

from agentserve.manifest import load_manifest
from service.runtime.onnx import OnnxRuntime
from trainer.core.networks import DuelingQNetwork
from trainer.core.nstep import NStepAccumulator
from trainer.core.replay import PrioritizedReplayBuffer
from trainer.export import check_parity, export_artifact, random_masks, random_observations
from trainer.learner import TransitionBatch

VARIANTS = {
    "double": ("double_q=true",),
    "dueling": ("dueling=true",),
    "per": ("prioritized_replay=true",),
    "nstep": ("n_step=3",),
    "all": ("double_q=true", "dueling=true", "prioritized_replay=true", "n_step=3"),
}
each_variant = pytest.mark.parametrize("variant", list(VARIANTS))


@each_variant
def test_variant_is_built(variant: str) -> None:
    learner = make_learner("dqn", extra=VARIANTS[variant])
    c = learner.config
    assert isinstance(learner.q_net, DuelingQNetwork) == c.dueling  # type: ignore[attr-defined]
    assert isinstance(learner.replay, PrioritizedReplayBuffer) == c.prioritized_replay  # type: ignore[attr-defined]


@each_variant
def test_variant_learns_and_round_trips(variant: str) -> None:
    a = make_learner("dqn", seed=4, extra=VARIANTS[variant])
    run_steps(a, 200, seed=4)
    assert a.num_updates > 0
    b = make_learner("dqn", seed=99, extra=VARIANTS[variant])
    b.load_state_dict(a.state_dict())
    for batch in random_transitions(a, 40, seed=1):
        a.observe(batch)
        b.observe(batch)
    state_a, state_b = a.state_dict(), b.state_dict()
    assert set(state_a.tensors) == set(state_b.tensors)
    for key in state_a.tensors:
        np.testing.assert_array_equal(state_a.tensors[key], state_b.tensors[key], err_msg=key)


@each_variant
def test_variant_is_deterministic(variant: str) -> None:
    a = make_learner("dqn", seed=7, extra=VARIANTS[variant])
    b = make_learner("dqn", seed=7, extra=VARIANTS[variant])
    run_steps(a, 150, seed=7)
    run_steps(b, 150, seed=7)
    for key, value in a.state_dict().tensors.items():
        np.testing.assert_array_equal(value, b.state_dict().tensors[key], err_msg=key)


@pytest.mark.parametrize("variant", ["dueling", "all"])
def test_dueling_export_has_parity(variant: str, tmp_path: Path) -> None:
    learner = make_learner("dqn", extra=VARIANTS[variant])
    run_steps(learner, 120)
    artifact = export_artifact(learner, tmp_path, "cartpole-variant", "CartPole-v1", {})
    module = learner.policy_module().eval()
    assert (
        check_parity(
            module, artifact / "policy.onnx", learner.observation_space, learner.action_space
        )
        < 1e-5
    )
    runtime = OnnxRuntime(load_manifest(artifact))
    rng = np.random.default_rng(0)
    observations = random_observations(learner.observation_space, 64, rng)
    masks = random_masks(2, 64, rng)
    served = runtime.infer(observations, masks)
    with torch.no_grad():
        _, _, values = module(torch.from_numpy(observations), torch.from_numpy(masks))
    np.testing.assert_allclose(served.values, values.numpy(), rtol=1e-5, atol=1e-5)
    assert masks[np.arange(64), served.greedy_actions].all()


def test_dueling_head_combines_value_and_centred_advantages() -> None:
    net = DuelingQNetwork(3, [8], 4)
    x = torch.randn(5, 3)
    features = net.trunk(x)
    advantages = net.advantage(features)
    expected = net.value(features) + advantages - advantages.mean(dim=1, keepdim=True)
    torch.testing.assert_close(net(x), expected)
    # Centred advantages: the mean Q over actions is V(s).
    torch.testing.assert_close(net(x).mean(dim=1, keepdim=True), net.value(features))


def one(
    obs: float, reward: float, terminated: bool = False, truncated: bool = False
) -> TransitionBatch:
    return TransitionBatch(
        observations=np.array([[obs]], dtype=np.float32),
        actions=np.array([int(obs) % 2]),
        rewards=np.array([reward], dtype=np.float32),
        next_observations=np.array([[obs + 1]], dtype=np.float32),
        terminated=np.array([terminated]),
        truncated=np.array([truncated]),
    )


def test_n_step_returns_and_discounts() -> None:
    acc = NStepAccumulator(3, 0.5)
    assert acc.push(one(0, 1.0)) is None
    assert acc.push(one(1, 2.0)) is None
    ready = acc.push(one(2, 4.0))
    assert ready is not None
    batch, discounts = ready
    # s_0 -> s_3: 1 + 0.5 * 2 + 0.25 * 4 = 3, bootstrapped with 0.5^3.
    assert batch.observations[:, 0].tolist() == [0.0]
    assert batch.next_observations[:, 0].tolist() == [3.0]
    assert batch.rewards.tolist() == [3.0]
    assert discounts.tolist() == [0.125]
    assert not batch.terminated[0]


def test_n_step_flushes_at_the_episode_end() -> None:
    acc = NStepAccumulator(3, 0.5)
    acc.push(one(0, 1.0))
    ready = acc.push(one(1, 2.0, terminated=True))
    assert ready is not None
    batch, discounts = ready
    # Both pending transitions leave, ending at the terminal observation 2.
    assert batch.observations[:, 0].tolist() == [0.0, 1.0]
    assert batch.rewards.tolist() == [2.0, 2.0]
    assert discounts.tolist() == [0.25, 0.5]
    assert batch.terminated.tolist() == [True, True]
    assert batch.next_observations[:, 0].tolist() == [2.0, 2.0]
    # The stream starts afresh.
    assert acc.push(one(10, 1.0)) is None


def test_n_step_keeps_streams_apart() -> None:
    acc = NStepAccumulator(2, 1.0)
    two = TransitionBatch(
        observations=np.array([[0.0], [100.0]], dtype=np.float32),
        actions=np.array([0, 1]),
        rewards=np.array([1.0, 10.0], dtype=np.float32),
        next_observations=np.array([[1.0], [101.0]], dtype=np.float32),
        terminated=np.array([False, False]),
        truncated=np.array([False, False]),
    )
    assert acc.push(two) is None
    ready = acc.push(two)
    assert ready is not None
    batch, _ = ready
    assert batch.observations[:, 0].tolist() == [0.0, 100.0]
    assert batch.rewards.tolist() == [2.0, 20.0]


def test_one_step_passes_through_with_gamma() -> None:
    acc = NStepAccumulator(1, 0.9)
    ready = acc.push(one(0, 1.0))
    assert ready is not None
    np.testing.assert_allclose(ready[1], [0.9])


@pytest.mark.parametrize("override", ["n_step=0", "per_alpha=2", "dueling=true"])
def test_invalid_variant_settings_are_refused(override: str) -> None:
    from agentserve.errors import ConfigError

    extra = (override, "net_arch=[]") if override == "dueling=true" else (override,)
    with pytest.raises(ConfigError):
        make_learner("dqn", extra=extra)

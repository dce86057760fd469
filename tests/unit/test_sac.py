"""Soft Actor-Critic (`sac`, `sac_discrete`): the batched twin critic, the squashed Gaussian's
density, Polyak averaging, the temperature, the soft targets and losses (masks included), acting,
and the learner's state (noise generator included)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from learner_cases import make_learner, run_steps
from torch import nn
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from agentserve.errors import ConfigError
from agentserve.spaces import BoxSpec, DiscreteSpec
from trainer.algos.sac import SAC, SACConfig, squashed_sample
from trainer.algos.sac_discrete import SACDiscrete, SACDiscreteConfig
from trainer.core.numerics import flushing_denormals
from trainer.core.replay import ReplaySample
from trainer.core.soft_actor_critic import EnsembleMLP, polyak_update
from trainer.envs import make_env
from trainer.learner import Learner, TransitionBatch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: on a loaded machine, fused Adam's parallel loop over a few small
    tensors can wait on a busy second thread for tens of milliseconds per step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


PENDULUM_OBS = BoxSpec((3,), (-1.0, -1.0, -8.0), (1.0, 1.0, 8.0))
TORQUE = BoxSpec((1,), (-2.0,), (2.0,))
SMALL = {"net_arch": [16, 16], "batch_size": 8, "buffer_size": 200, "learning_starts": 16}


def sac(seed: int = 0, **overrides: Any) -> SAC:
    config = SACConfig(**{**SMALL, **overrides})
    config.validate()
    return SAC(PENDULUM_OBS, TORQUE, config, seed)


def sac_discrete(n: int = 4, seed: int = 0, **overrides: Any) -> SACDiscrete:
    config = SACDiscreteConfig(**{**SMALL, **overrides})
    config.validate()
    return SACDiscrete(BoxSpec((3,), (-1.0,) * 3, (1.0,) * 3), DiscreteSpec(n), config, seed)


def drive_pendulum(learner: Learner, steps: int, seed: int = 0) -> None:
    """Steps Pendulum-v1 with exploring actions, handing each transition to `learner`."""
    env = make_env("Pendulum-v1")
    try:
        observation, _ = env.reset(seed=seed)
        for _ in range(steps):
            obs = np.asarray(observation, dtype=np.float32)[None]
            actions = learner.act(obs, None, deterministic=False).actions
            observation, reward, terminated, truncated, _ = env.step(actions[0])
            learner.observe(
                TransitionBatch(
                    observations=obs,
                    actions=actions,
                    rewards=np.array([reward], dtype=np.float32),
                    next_observations=np.asarray(observation, dtype=np.float32)[None],
                    terminated=np.array([terminated]),
                    truncated=np.array([truncated]),
                )
            )
            if terminated or truncated:
                observation, _ = env.reset()
    finally:
        env.close()


def random_batch(learner: Learner, count: int, seed: int) -> TransitionBatch:
    """`count` random transitions for the 3-float observation spaces used here, with masks (at
    s and s') for discrete learners and box actions for continuous ones."""
    rng = np.random.default_rng(seed)
    masks: dict[str, Any] = {}
    if isinstance(learner.action_space, DiscreteSpec):
        n = learner.action_space.n
        allowed = rng.random((2, count, n)) < 0.7
        allowed[:, np.arange(count), rng.integers(n, size=count)] = True
        actions: np.ndarray = np.array([rng.choice(np.flatnonzero(m)) for m in allowed[0]])
        masks = {"action_masks": allowed[0], "next_action_masks": allowed[1]}
    else:
        actions = rng.uniform(-2.0, 2.0, size=(count, 1)).astype(np.float32)
    return TransitionBatch(
        observations=rng.uniform(-1, 1, size=(count, 3)).astype(np.float32),
        actions=actions,
        rewards=rng.normal(size=count).astype(np.float32),
        next_observations=rng.uniform(-1, 1, size=(count, 3)).astype(np.float32),
        terminated=rng.random(count) < 0.2,
        truncated=rng.random(count) < 0.2,
        **masks,
    )


def observe_one_by_one(learner: Learner, batch: TransitionBatch) -> None:
    for i in range(len(batch.rewards)):
        learner.observe(
            TransitionBatch(
                *(None if v is None else v[i : i + 1] for v in vars(batch).values())  # type: ignore[arg-type]
            )
        )


def assert_same_state(a: Learner, b: Learner) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.meta == state_b.meta
    assert sorted(state_a.tensors) == sorted(state_b.tensors)
    for key, value in state_a.tensors.items():
        np.testing.assert_array_equal(value, state_b.tensors[key], err_msg=key)


# --- Building blocks ---------------------------------------------------------------------------


def test_batched_twin_critic_equals_two_separate_mlps() -> None:
    torch.manual_seed(0)
    critic = EnsembleMLP(5, [8, 6], 3)
    x = torch.randn(11, 5)
    out = critic(x)
    assert out.shape == (2, 11, 3)
    for i in range(2):
        torch.testing.assert_close(out[i], critic.member(i)(x))
    per_member = torch.randn(2, 11, 5)
    out = critic(per_member)
    for i in range(2):
        torch.testing.assert_close(out[i], critic.member(i)(per_member[i]))
    assert not torch.equal(critic.member(0)(x), critic.member(1)(x))  # independent members


def test_batched_twin_critic_gradients_equal_the_separate_mlps() -> None:
    torch.manual_seed(1)
    critic = EnsembleMLP(4, [8, 8], 1)
    members = [critic.member(0), critic.member(1)]
    x, weights = torch.randn(7, 4), torch.randn(2, 7, 1)
    (critic(x) * weights).sum().backward()
    sum((m(x) * w).sum() for m, w in zip(members, weights, strict=True)).backward()
    for layer, (weight, bias) in enumerate(critic.layers()):
        for i, member in enumerate(members):
            linear = member[2 * layer]
            assert isinstance(linear, nn.Linear)
            assert weight.grad is not None and linear.weight.grad is not None
            torch.testing.assert_close(weight.grad[i], linear.weight.grad.T)
            assert bias.grad is not None and linear.bias.grad is not None
            torch.testing.assert_close(bias.grad[i, 0], linear.bias.grad)


def test_denormals_are_flushed_only_inside_the_block() -> None:
    tiny = torch.tensor(1e-38)
    assert tiny * 0.01 > 0  # the default: denormals kept
    with flushing_denormals():
        assert tiny * 0.01 == 0
    assert tiny * 0.01 > 0


def test_detached_weights_pass_gradients_to_the_input_only() -> None:
    critic = EnsembleMLP(4, [8], 1)
    x = torch.randn(5, 4, requires_grad=True)
    critic(x, detach_weights=True).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in critic.parameters())
    expected = torch.autograd.grad(critic(x).sum(), x)[0]
    torch.testing.assert_close(x.grad, expected)


def test_squashed_log_density_matches_torch_distributions() -> None:
    torch.manual_seed(1)
    mean, log_std = torch.randn(64, 3), torch.rand(64, 3) - 1.0
    noise = torch.randn(64, 3)
    actions, log_prob = squashed_sample(mean, log_std, noise)
    torch.testing.assert_close(actions, torch.tanh(mean + log_std.exp() * noise))
    squashed = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform(cache_size=1)])
    u = mean + log_std.exp() * noise
    reference = squashed.log_prob(squashed.transforms[0](u)).sum(dim=-1)
    torch.testing.assert_close(log_prob, reference, rtol=1e-4, atol=1e-4)


def test_env_space_density_integrates_to_one_over_the_box() -> None:
    """act's propensity is the density of the action in the box (tanh, then the box scaling):
    it matches torch.distributions and integrates to 1 over the box."""
    learner = sac(learning_starts=0)
    obs = np.array([[0.3, -0.5, 2.0]], dtype=np.float32)
    with torch.no_grad():
        mean, log_std = learner.actor(torch.from_numpy(obs))
    distribution = TransformedDistribution(
        Normal(mean, log_std.exp()),
        [TanhTransform(cache_size=1), AffineTransform(0.0, 2.0)],  # [-1, 1] -> [-2, 2]
    )
    batch = learner.act(np.repeat(obs, 200, axis=0), None, deterministic=False)
    expected = distribution.log_prob(torch.from_numpy(batch.actions)).exp().squeeze(-1)
    np.testing.assert_allclose(batch.propensities, expected.numpy(), rtol=1e-3)
    grid = torch.linspace(-2.0, 2.0, 40_001)[1:-1, None]
    mass = float(distribution.log_prob(grid).exp().sum() * (4.0 / 40_000))
    assert mass == pytest.approx(1.0, abs=1e-3)


def test_polyak_update_moves_targets_by_tau() -> None:
    online = [torch.randn(3, 4), torch.randn(4)]
    target = [torch.randn(3, 4), torch.randn(4)]
    expected = [0.9 * t + 0.1 * o for t, o in zip(target, online, strict=True)]
    polyak_update(target, online, 0.1)
    for t, e in zip(target, expected, strict=True):
        torch.testing.assert_close(t, e)
    polyak_update(target, online, 1.0)  # tau 1 copies
    for t, o in zip(target, online, strict=True):
        torch.testing.assert_close(t, o)


@pytest.mark.parametrize(
    ("make", "low_target", "high_target"),
    [
        (lambda **kw: sac(**kw), {"target_entropy": -50.0}, {"target_entropy": 10.0}),
        (
            lambda **kw: sac_discrete(**kw),
            {"target_entropy_scale": 0.0},
            {"target_entropy": 10.0},
        ),
    ],
    ids=["sac", "sac_discrete"],
)
def test_temperature_rises_below_the_target_entropy_and_falls_above(
    make: Any, low_target: dict[str, float], high_target: dict[str, float]
) -> None:
    """Entropy above a target of -50 (or 0): alpha falls; below an unreachable 10: it rises."""
    for target, direction in ((low_target, -1.0), (high_target, 1.0)):
        learner = make(learning_rate=0.01, **target)
        observe_one_by_one(learner, random_batch(learner, 40, seed=3))
        assert learner.num_updates > 0
        alpha = float(learner.log_alpha.detach().exp())
        assert (alpha - 1.0) * direction > 0.05, (target, alpha)


def test_fixed_temperature_stays() -> None:
    learner = sac(ent_coef=0.2)
    observe_one_by_one(learner, random_batch(learner, 30, seed=4))
    assert learner.num_updates > 0
    assert float(learner.log_alpha.detach().exp()) == pytest.approx(0.2)


# --- Targets and losses ------------------------------------------------------------------------


class Shifted(nn.Module):
    """A critic whose outputs are the wrapped critic's plus a fixed [out] offset."""

    def __init__(self, inner: EnsembleMLP, offset: torch.Tensor) -> None:
        super().__init__()
        self.inner, self.offset, self.members = inner, offset, inner.members

    def forward(self, x: torch.Tensor, detach_weights: bool = False) -> torch.Tensor:
        out: torch.Tensor = self.inner(x, detach_weights) + self.offset
        return out


def capture_targets(learner: Any) -> list[torch.Tensor]:
    captured: list[torch.Tensor] = []
    original = learner.critic_loss

    def critic_loss(q_taken: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        captured.append(targets.clone())
        result: torch.Tensor = original(q_taken, targets)
        return result

    learner.critic_loss = critic_loss
    return captured


def stored_sample(learner: Any, batch: TransitionBatch, size: int) -> ReplaySample:
    """`batch` stored through `observe` (which must not train yet), then a minibatch drawn."""
    assert learner.num_steps + len(batch.rewards) < learner.config.learning_starts
    learner.observe(batch)
    sample: ReplaySample = learner.replay.sample(size, np.random.default_rng(0))
    return sample


def test_sac_target_takes_the_smaller_twin_and_stops_only_at_termination() -> None:
    learner = sac(gamma=0.9, learning_starts=100)
    batch = TransitionBatch(
        observations=np.zeros((3, 3), dtype=np.float32),
        actions=np.zeros((3, 1), dtype=np.float32),
        rewards=np.array([1.0, 2.0, 3.0], dtype=np.float32),
        next_observations=np.ones((3, 3), dtype=np.float32),
        terminated=np.array([False, True, False]),
        truncated=np.array([False, False, True]),
    )
    sample = stored_sample(learner, batch, 12)
    # Target twins read 5 + inner and -7 + inner: the second is smaller everywhere.
    with torch.no_grad():
        for weight in learner.critic_target.parameters():
            weight.zero_()
    learner.critic_target = Shifted(learner.critic_target, torch.tensor([[[5.0]], [[-7.0]]]))  # type: ignore[assignment]
    captured = capture_targets(learner)
    # The noise the update will draw (for s, then for s'): the next actions' log-probabilities.
    noise_state = learner.generator.get_state()
    noise = torch.randn((2, 12, 1), generator=learner.generator)[1]
    learner.generator.set_state(noise_state)
    with torch.no_grad():
        next_mean, next_log_std = learner.actor(torch.ones(12, 3))
        _, next_log_prob = squashed_sample(next_mean, next_log_std, noise)
    alpha = 0.3
    learner.update(sample, torch.tensor(alpha))
    ids = sample.indices
    bootstraps = torch.from_numpy(~batch.terminated[ids]).float()  # truncated ones do
    soft_value = -7.0 - alpha * next_log_prob
    expected = torch.from_numpy(batch.rewards[ids]) + 0.9 * bootstraps * soft_value
    assert set(ids.tolist()) == {0, 1, 2}
    torch.testing.assert_close(captured[0], expected)


def discrete_batch() -> TransitionBatch:
    """Two transitions; action 1 is masked at s and at s' in both."""
    masks = np.array([[True, False, True], [True, False, False]])
    return TransitionBatch(
        observations=np.array([[0.1, 0.2, 0.3], [-0.4, 0.5, 0.0]], dtype=np.float32),
        actions=np.array([0, 2]),
        rewards=np.array([1.0, -1.0], dtype=np.float32),
        next_observations=np.array([[0.3, 0.0, -0.2], [0.2, 0.2, 0.2]], dtype=np.float32),
        terminated=np.array([False, False]),
        truncated=np.array([False, True]),
        action_masks=masks,
        next_action_masks=masks,
    )


@pytest.mark.parametrize("masked_q", [1e9, -1e9])
def test_discrete_target_and_losses_ignore_masked_actions(masked_q: float) -> None:
    """A masked action with a huge (or hugely negative) Q changes neither the soft target nor the
    actor's loss and step, nor the temperature's."""
    results = []
    for q in (masked_q, 0.0):
        learner = sac_discrete(n=3, gamma=0.9, learning_starts=100)
        sample = stored_sample(learner, discrete_batch(), 8)
        offset = torch.tensor([0.0, q, 0.0])
        learner.critic_target = Shifted(learner.critic_target, offset)  # type: ignore[assignment]
        learner.critic = Shifted(learner.critic, offset)  # type: ignore[assignment]
        captured = capture_targets(learner)
        losses = learner.update(sample, torch.tensor(0.5))
        actor = [p.detach().clone() for p in learner.actor.parameters()]
        results.append((captured[0], losses, actor))
    (targets, losses, actor), (targets0, losses0, actor0) = results
    assert torch.isfinite(targets).all()
    torch.testing.assert_close(targets, targets0)
    torch.testing.assert_close(losses, losses0)  # critic, actor and temperature losses
    for a, b in zip(actor, actor0, strict=True):
        torch.testing.assert_close(a, b)


def test_discrete_soft_target_by_hand() -> None:
    learner = sac_discrete(n=3, gamma=0.9, learning_starts=100)
    batch = discrete_batch()
    sample = stored_sample(learner, batch, 8)
    captured = capture_targets(learner)
    with torch.no_grad():
        next_obs = torch.from_numpy(batch.next_observations)
        logits = learner.actor(next_obs)
        q = learner.critic_target(next_obs).min(dim=0).values
    alpha = 0.5
    learner.update(sample, torch.tensor(alpha))
    expected = []
    for i in sample.indices:
        allowed = np.flatnonzero(batch.next_action_masks[i])  # type: ignore[index]
        pi = torch.softmax(logits[i, allowed], dim=0)
        value = float((pi * (q[i, allowed] - alpha * pi.log())).sum())
        expected.append(batch.rewards[i] + 0.9 * value)  # the truncated one bootstraps too
    assert set(sample.indices.tolist()) == {0, 1}
    np.testing.assert_allclose(captured[0].numpy(), expected, rtol=1e-5)


def test_discrete_default_target_entropy_scales_log_of_allowed_count() -> None:
    learner = sac_discrete(n=4)
    masks = torch.tensor(
        [[True, True, True, True], [True, False, True, False], [False, True, False, False]]
    )
    expected = 0.89 * torch.log(torch.tensor([4.0, 2.0, 1.0]))
    torch.testing.assert_close(learner.target_entropy(masks), expected)


# --- Acting --------------------------------------------------------------------------------------


@pytest.mark.parametrize("trained", [False, True])
def test_discrete_act_never_returns_masked_actions(trained: bool) -> None:
    learner = sac_discrete(n=5)
    if trained:
        observe_one_by_one(learner, random_batch(learner, 40, seed=5))
        assert learner.num_updates > 0
    rng = np.random.default_rng(6)
    obs = rng.uniform(-1, 1, size=(3000, 3)).astype(np.float32)
    masks = rng.random((3000, 5)) < 0.4
    masks[np.arange(3000), rng.integers(5, size=3000)] = True
    for deterministic in (False, True):
        batch = learner.act(obs, masks, deterministic)
        assert masks[np.arange(3000), batch.actions].all()
        assert ((batch.propensities > 0) & (batch.propensities <= 1 + 1e-6)).all()
    explored = learner.act(np.repeat(obs[:1], 500, axis=0), None, False).actions
    assert len(set(explored.tolist())) == 5


def test_discrete_greedy_matches_the_exported_module() -> None:
    learner = sac_discrete(n=4)
    observe_one_by_one(learner, random_batch(learner, 40, seed=7))
    rng = np.random.default_rng(8)
    obs = rng.uniform(-1, 1, size=(500, 3)).astype(np.float32)
    masks = rng.random((500, 4)) < 0.5
    masks[:, 0] = True
    with torch.no_grad():
        greedy, probabilities, _ = learner.policy_module()(
            torch.from_numpy(obs), torch.from_numpy(masks)
        )
    np.testing.assert_array_equal(greedy.numpy(), learner.act(obs, masks, True).actions)
    assert (probabilities.numpy()[~masks] == 0).all()


def test_sac_explores_uniformly_before_learning_starts() -> None:
    learner = sac(learning_starts=1000)
    batch = learner.act(np.zeros((4000, 3), dtype=np.float32), None, deterministic=False)
    assert batch.actions.shape == (4000, 1) and batch.actions.dtype == np.float32
    assert batch.actions.min() >= -2.0 and batch.actions.max() <= 2.0
    assert np.histogram(batch.actions, bins=4, range=(-2, 2))[0].min() > 900
    np.testing.assert_allclose(batch.propensities, 0.25)


def test_sac_deterministic_act_is_the_squashed_mean_inside_the_box() -> None:
    learner = sac(learning_starts=0)
    drive_pendulum(learner, 60)
    with torch.no_grad():
        for weight in learner.actor.net[-1].parameters():
            weight.mul_(50.0)  # push many means far past the box
    obs = np.random.default_rng(9).uniform(-8, 8, size=(400, 3)).astype(np.float32)
    with torch.no_grad():
        mean, _ = learner.actor(torch.from_numpy(obs))
    greedy = learner.act(obs, None, deterministic=True)
    np.testing.assert_allclose(greedy.actions, 2.0 * np.tanh(mean.numpy()), rtol=1e-5, atol=1e-6)
    assert np.abs(greedy.actions).max() <= 2.0 and np.abs(greedy.actions).max() > 1.99
    np.testing.assert_array_equal(greedy.propensities, 1.0)
    explored = learner.act(obs, None, deterministic=False).actions
    assert np.abs(explored).max() <= 2.0
    assert not np.array_equal(explored, greedy.actions)
    with torch.no_grad():
        served, served_mean, served_log_std = learner.policy_module()(torch.from_numpy(obs))
    np.testing.assert_allclose(served.numpy(), greedy.actions, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(served_mean, mean)
    assert served_log_std.shape == (400, 1)


def test_sac_stores_actions_in_the_policy_range() -> None:
    learner = sac(learning_starts=1000)
    batch = random_batch(learner, 5, seed=10)
    learner.observe(batch)
    np.testing.assert_allclose(learner.replay.actions[:5], batch.actions / 2.0, rtol=1e-6)
    assert learner.replay.actions.shape == (200, 1)


# --- Learner state ------------------------------------------------------------------------------

LEARNERS = {
    "sac": lambda seed: make_learner("sac", seed=seed),
    "sac_discrete": lambda seed: make_learner("sac_discrete", seed=seed),
}


def drive(learner: Learner, steps: int, seed: int) -> None:
    if learner.algorithm == "sac":
        drive_pendulum(learner, steps, seed)
    else:
        run_steps(learner, steps, seed)


@pytest.mark.parametrize("algorithm", list(LEARNERS))
def test_state_round_trip_resumes_exactly(algorithm: str) -> None:
    first = LEARNERS[algorithm](0)
    drive(first, 150, seed=0)
    assert first.num_updates > 0
    second = LEARNERS[algorithm](123)
    second.load_state_dict(first.state_dict())
    assert_same_state(first, second)
    size = (300, 4 if algorithm != "sac" else 3)
    obs = np.random.default_rng(11).uniform(-1, 1, size=size).astype(np.float32)
    for deterministic in (True, False):  # the noise generator travels too
        np.testing.assert_array_equal(
            first.act(obs, None, deterministic).actions,
            second.act(obs, None, deterministic).actions,
        )
    drive(first, 60, seed=5)
    drive(second, 60, seed=5)
    assert_same_state(first, second)
    assert "generator" in first.state_dict().tensors


@pytest.mark.parametrize("algorithm", list(LEARNERS))
def test_same_seed_same_result(algorithm: str) -> None:
    a, b, c = LEARNERS[algorithm](3), LEARNERS[algorithm](3), LEARNERS[algorithm](4)
    for learner in (a, b, c):
        drive(learner, 120, seed=2)
    assert_same_state(a, b)
    assert not np.array_equal(
        a.state_dict().tensors["actor.net.0.weight"], c.state_dict().tensors["actor.net.0.weight"]
    )


def test_sampling_noise_leaves_the_global_generator_alone() -> None:
    learner = sac(learning_starts=0)
    observe_one_by_one(learner, random_batch(learner, 30, seed=12))
    before = torch.get_rng_state()
    learner.act(np.zeros((5, 3), dtype=np.float32), None, deterministic=False)
    observe_one_by_one(learner, random_batch(learner, 5, seed=13))
    assert torch.equal(before, torch.get_rng_state())


def test_linear_learning_rate_decays_to_zero() -> None:
    learner = sac(learning_rate_schedule="linear", learning_rate=1e-3, total_timesteps=100)
    assert learner.learning_rate() == pytest.approx(1e-3)
    learner.num_steps = 75
    assert learner.learning_rate() == pytest.approx(2.5e-4)
    learner.num_steps = 150
    assert learner.learning_rate() == 0.0
    scalars = sac(learning_starts=4).observe(random_batch(learner, 8, seed=14))
    assert {"train/loss", "train/actor_loss", "train/critic_loss", "train/ent_coef"} <= set(scalars)
    assert "train/ent_coef_loss" in scalars
    assert all(math.isfinite(v) for v in scalars.values())


# --- Configuration ------------------------------------------------------------------------------


def test_spaces_are_checked() -> None:
    config = SACConfig()
    with pytest.raises(ConfigError, match="finite action bounds"):
        SAC(PENDULUM_OBS, BoxSpec((1,), (-math.inf,), (math.inf,)), config, 0)
    with pytest.raises(ConfigError, match="Box action space"):
        SAC(PENDULUM_OBS, DiscreteSpec(3), config, 0)
    with pytest.raises(ConfigError, match="Discrete action space"):
        SACDiscrete(PENDULUM_OBS, TORQUE, SACDiscreteConfig(), 0)
    with pytest.raises(ConfigError, match="Box observation space"):
        SAC(DiscreteSpec(5), TORQUE, config, 0)


@pytest.mark.parametrize(
    "overrides",
    [
        {"learning_rate_schedule": "cosine"},
        {"tau": 0.0},
        {"batch_size": 300, "buffer_size": 200},
        {"ent_coef": -0.1},
        {"log_std_min": 3.0},
    ],
)
def test_invalid_settings_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SACConfig(**overrides).validate()


def test_invalid_target_entropy_scale_is_refused() -> None:
    with pytest.raises(ConfigError, match="target_entropy_scale"):
        SACDiscreteConfig(target_entropy_scale=1.5).validate()


def test_config_documents_every_field() -> None:
    from trainer.core.config import describe

    for config_class in (SACConfig, SACDiscreteConfig):
        assert all(field.doc for field in describe(config_class)), config_class


@pytest.mark.parametrize("algorithm", ["sac", "sac_discrete"])
def test_observation_normalizer_learns_and_travels_with_the_policy(algorithm: str) -> None:
    learner = (sac if algorithm == "sac" else sac_discrete)(normalize_observations=True)
    batch = random_batch(learner, 40, seed=15)
    batch = TransitionBatch(**{**vars(batch), "observations": batch.observations * 5.0 + 3.0})
    observe_one_by_one(learner, batch)
    assert learner.num_updates > 0
    normalizer = learner.actor.normalizer
    np.testing.assert_allclose(normalizer.mean.numpy(), batch.observations.mean(axis=0), rtol=1e-5)
    assert "actor.normalizer.mean" in learner.state_dict().tensors
    obs = batch.observations[:10]
    with torch.no_grad():
        exported = learner.policy_module()
        greedy = (
            exported(torch.from_numpy(obs))[0]
            if algorithm == "sac"
            else exported(torch.from_numpy(obs), torch.ones(10, 4, dtype=torch.bool))[0]
        )
    np.testing.assert_allclose(greedy.numpy(), learner.act(obs, None, True).actions, rtol=1e-6)

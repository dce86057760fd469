"""Policy-gradient pieces: GAE, the masked categorical head, PPO's losses, REINFORCE returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from learner_cases import make_learner, random_transitions, run_steps
from torch.distributions import Normal, kl_divergence

from agentserve.errors import ConfigError
from agentserve.spaces import BoxSpec, DiscreteSpec
from trainer.algos.a2c import A2C
from trainer.algos.ppo import PPO, adapt_kl_beta, clipped_surrogate_loss
from trainer.algos.reinforce import Reinforce
from trainer.core import masking
from trainer.core.normalization import ObservationNormalizer
from trainer.core.policy_heads import CategoricalHead, GaussianHead, categorical_kl
from trainer.core.rollout import compute_gae, discounted_returns
from trainer.learner import TransitionBatch

REWARDS = [1.0, 2.0, 3.0]
VALUES = [0.5, 1.0, 1.5]
NEXT_VALUES = [1.0, 4.0, 2.0]  # V(s'_1) = 4 differs from V(s_2): s'_1 is an episode's last state


def gae(terminated: list[bool], truncated: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    def column(values: list[float] | list[bool], dtype: type) -> np.ndarray:
        return np.array(values, dtype=dtype)[:, None]

    advantages, returns = compute_gae(
        column(REWARDS, np.float32),
        column(VALUES, np.float32),
        column(NEXT_VALUES, np.float32),
        column(terminated, np.bool_),
        column(truncated, np.bool_),
        gamma=0.5,
        gae_lambda=0.5,
    )
    np.testing.assert_allclose(returns, advantages + column(VALUES, np.float32))
    return advantages[:, 0], returns[:, 0]


def test_gae_without_episode_ends() -> None:
    # deltas: 1 + .5*1 - .5 = 1; 2 + .5*4 - 1 = 3; 3 + .5*2 - 1.5 = 2.5; gamma*lambda = .25
    advantages, _ = gae([False] * 3, [False] * 3)
    np.testing.assert_allclose(advantages, [1.0 + 0.25 * 3.625, 3.0 + 0.25 * 2.5, 2.5])


def test_gae_termination_does_not_bootstrap() -> None:
    advantages, returns = gae([False, True, False], [False] * 3)
    np.testing.assert_allclose(advantages, [1.25, 1.0, 2.5])  # delta_1 = 2 - 1; chain cut
    np.testing.assert_allclose(returns, [1.75, 2.0, 4.0])


def test_gae_truncation_bootstraps_from_the_final_observation() -> None:
    advantages, _ = gae([False] * 3, [False, True, False])
    np.testing.assert_allclose(advantages, [1.75, 3.0, 2.5])  # delta_1 = 2 + .5*4 - 1; chain cut


def test_gae_columns_are_independent_envs() -> None:
    rewards = np.array([[1.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    zeros = np.zeros((2, 2), dtype=np.float32)
    terminated = np.array([[True, False], [False, False]])
    advantages, _ = compute_gae(
        rewards, zeros, zeros, terminated, np.zeros((2, 2), np.bool_), 0.9, 1.0
    )
    np.testing.assert_allclose(advantages, [[1.0, 1.9], [1.0, 1.0]])


def test_reinforce_returns() -> None:
    np.testing.assert_allclose(discounted_returns(np.ones(3, np.float32), 0.9), [2.71, 1.9, 1.0])
    np.testing.assert_allclose(
        discounted_returns(np.ones(3, np.float32), 0.9, bootstrap=5.0), [6.355, 5.95, 5.5]
    )


LOGITS = torch.tensor([[1.0, 2.0, 3.0, 0.5], [0.0, -1.0, 4.0, 2.0]])
MASK = torch.tensor([[True, False, True, True], [False, True, False, True]])


def test_masked_probabilities_are_zero_on_masked_actions() -> None:
    probabilities = masking.masked_probabilities(LOGITS, MASK)
    assert (probabilities[~MASK] == 0).all()
    expected = torch.softmax(LOGITS[0, [0, 2, 3]], dim=0)
    torch.testing.assert_close(probabilities[0, [0, 2, 3]], expected)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2))


def test_masked_log_prob_is_minus_infinity_on_masked_actions() -> None:
    masked = masking.categorical_log_prob(LOGITS, MASK, torch.tensor([1, 0]))
    assert torch.isneginf(masked).all()
    allowed = masking.categorical_log_prob(LOGITS, MASK, torch.tensor([2, 3]))
    expected = torch.log_softmax(LOGITS[0, [0, 2, 3]], dim=0)[1]
    torch.testing.assert_close(allowed[0], expected)
    torch.testing.assert_close(allowed[1], torch.log_softmax(LOGITS[1, [1, 3]], dim=0)[1])


def test_masked_entropy_counts_allowed_actions_only() -> None:
    logits = LOGITS.clone().requires_grad_(True)
    entropy = masking.categorical_entropy(logits, MASK)
    for row, allowed in enumerate(([0, 2, 3], [1, 3])):
        expected = torch.distributions.Categorical(logits=LOGITS[row, allowed]).entropy()
        torch.testing.assert_close(entropy[row], expected)
    entropy.sum().backward()  # type: ignore[no-untyped-call]
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert (logits.grad[~MASK] == 0).all()


def test_sampling_never_draws_masked_actions_and_follows_the_probabilities() -> None:
    rng = np.random.default_rng(0)
    draws = 20_000
    logits = LOGITS.repeat(draws, 1)
    mask = MASK.repeat(draws, 1)
    actions = masking.sample_categorical(logits, mask, rng).numpy().reshape(draws, 2)
    for row in range(2):
        counts = np.bincount(actions[:, row], minlength=4) / draws
        assert (counts[~MASK[row].numpy()] == 0).all()
        expected = masking.masked_probabilities(LOGITS, MASK)[row].numpy()
        np.testing.assert_allclose(counts, expected, atol=0.015)


def test_sampling_is_reproducible_from_the_generator() -> None:
    first = masking.sample_categorical(LOGITS, MASK, np.random.default_rng(7))
    second = masking.sample_categorical(LOGITS, MASK, np.random.default_rng(7))
    torch.testing.assert_close(first, second)


def test_categorical_head_outputs() -> None:
    greedy, probabilities, values = masking.categorical_head(LOGITS, MASK)
    np.testing.assert_array_equal(greedy.numpy(), [2, 3])  # row 1: 2 is masked, 3 beats 1
    torch.testing.assert_close(probabilities, masking.masked_probabilities(LOGITS, MASK))
    torch.testing.assert_close(values, LOGITS)


def test_ppo_clipped_loss_by_hand() -> None:
    ratios = torch.tensor([1.5, 0.5, 1.1, 0.5])
    advantages = torch.tensor([1.0, 1.0, -2.0, -1.0])
    # min(r A, clip(r, .8, 1.2) A): 1.2, 0.5, -2.2, -0.8 -> loss = -mean = 0.325
    loss = clipped_surrogate_loss(ratios, advantages, 0.2)
    torch.testing.assert_close(loss, torch.tensor(0.325))


def test_categorical_kl() -> None:
    old = masking.masked_log_softmax(LOGITS, MASK)
    new = masking.masked_log_softmax(LOGITS * 0.5, MASK)
    torch.testing.assert_close(categorical_kl(old, old, MASK), torch.zeros(2))
    for row, allowed in enumerate(([0, 2, 3], [1, 3])):
        p = torch.distributions.Categorical(logits=LOGITS[row, allowed])
        q = torch.distributions.Categorical(logits=LOGITS[row, allowed] * 0.5)
        expected = torch.distributions.kl_divergence(p, q)
        torch.testing.assert_close(categorical_kl(old, new, MASK)[row], expected)


@pytest.mark.parametrize(
    ("kl", "expected"),
    [(0.001, 0.5), (0.0066, 0.5), (0.007, 1.0), (0.01, 1.0), (0.015, 1.0), (0.016, 2.0)],
)
def test_adaptive_kl_beta_rule(kl: float, expected: float) -> None:
    assert adapt_kl_beta(1.0, kl, target_kl=0.01) == expected


def test_ppo_kl_penalty_adapts_beta_after_each_update_and_saves_it() -> None:
    learner = make_learner("ppo", extra=("kl_penalty=true", "kl_beta0=3.0", "target_kl=0.001"))
    assert isinstance(learner, PPO)
    betas = [learner.kl_beta]
    for transition in random_transitions(learner, 96, seed=0):
        scalars = learner.observe(transition)
        if scalars:
            expected = adapt_kl_beta(betas[-1], scalars["train/approx_kl"], 0.001)
            assert scalars["train/kl_beta"] == learner.kl_beta == expected
            betas.append(learner.kl_beta)
    assert len(betas) == 4 and learner.num_updates == 3 * 2 * 2  # 3 rollouts, 2 epochs of 2
    assert len(set(betas)) > 1
    other = make_learner("ppo", seed=5, extra=("kl_penalty=true",))
    assert isinstance(other, PPO)
    other.load_state_dict(learner.state_dict())
    assert other.kl_beta == learner.kl_beta


def one_transition(
    observation: np.ndarray,
    terminated: bool,
    truncated: bool,
    action_masks: np.ndarray | None = None,
) -> TransitionBatch:
    return TransitionBatch(
        observations=observation[None],
        actions=np.array([1]),
        rewards=np.array([1.0], dtype=np.float32),
        next_observations=(observation + 1.0)[None],
        terminated=np.array([terminated]),
        truncated=np.array([truncated]),
        action_masks=action_masks,
    )


def test_rollout_bootstraps_from_the_true_next_observation() -> None:
    learner = make_learner("a2c")
    assert isinstance(learner, A2C)
    observation = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)
    learner.observe(one_transition(observation, False, True))
    learner.evaluate_rollout()
    with torch.no_grad():
        expected = learner.net.value(torch.from_numpy(observation + 1.0)[None])
    assert learner.rollout.next_values_TN[0, 0] == pytest.approx(float(expected[0]))


def test_rollout_stores_the_masks_actions_were_chosen_under() -> None:
    learner = make_learner("ppo")
    assert isinstance(learner, PPO)
    observations = np.zeros((1, 4), dtype=np.float32)
    mask = np.array([[False, True]])
    assert learner.act(observations, mask, deterministic=False).actions[0] == 1
    learner.observe(one_transition(observations[0], False, False, mask))
    np.testing.assert_array_equal(learner.rollout.action_masks_TNA[0], mask)
    # No mask in the transition: every action was allowed.
    learner.observe(one_transition(observations[0], False, False))
    assert learner.rollout.action_masks_TNA[1].all()


def test_reinforce_episode_returns_and_truncation_bootstrap() -> None:
    learner = make_learner("reinforce", extra=("batch_episodes=10", "gamma=0.5"))
    assert isinstance(learner, Reinforce)
    observation = np.zeros(4, dtype=np.float32)
    learner.observe(one_transition(observation, False, False))
    learner.observe(one_transition(observation, True, False))
    np.testing.assert_allclose(learner.finished[0][3], [1.5, 1.0])
    learner.observe(one_transition(observation, False, True))
    with torch.no_grad():
        bootstrap = float(learner.net.value(torch.ones(1, 4))[0])
    np.testing.assert_allclose(learner.finished[1][3], [1.0 + 0.5 * bootstrap], rtol=1e-6)
    assert learner.num_updates == 0


def test_box_actions_are_accepted_and_box_observations_required() -> None:
    box = BoxSpec(shape=(2,), low=(-1.0, -1.0), high=(1.0, 1.0))
    for cls in (PPO, Reinforce, A2C):
        cls.check_spaces(box, box)
        assert "continuous" in cls.action_spaces
        with pytest.raises(ConfigError, match="Box observation space"):
            cls.check_spaces(DiscreteSpec(n=3), DiscreteSpec(n=2))


def gaussian_params(seed: int, batch: int = 64, dims: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mean = torch.randn(batch, dims, generator=generator)
    log_std = 0.5 * torch.randn(batch, dims, generator=generator)
    return torch.cat([mean, log_std], dim=-1)


def test_gaussian_head_matches_torch_distributions() -> None:
    space = BoxSpec(shape=(3,), low=(-1.0,) * 3, high=(1.0,) * 3)
    head = GaussianHead(space, torch.nn.Parameter(torch.zeros(3)))
    old, new = gaussian_params(0), gaussian_params(1)
    actions = torch.randn(64, 3, generator=torch.Generator().manual_seed(2))
    no_masks = torch.ones(64, 0, dtype=torch.bool)
    reference_old = Normal(old[:, :3], old[:, 3:].exp())
    reference_new = Normal(new[:, :3], new[:, 3:].exp())
    torch.testing.assert_close(
        head.log_prob(old, actions, no_masks), reference_old.log_prob(actions).sum(-1)
    )
    torch.testing.assert_close(head.entropy(old, no_masks), reference_old.entropy().sum(-1))
    torch.testing.assert_close(
        head.kl(old, new, no_masks), kl_divergence(reference_old, reference_new).sum(-1)
    )
    assert torch.allclose(head.kl(old, old, no_masks), torch.zeros(64), atol=1e-6)


def test_gaussian_head_greedy_is_the_clipped_mean_and_draws_have_their_density() -> None:
    space = BoxSpec(shape=(2,), low=(-1.0, 0.0), high=(1.0, 0.5))
    head = GaussianHead(space, torch.nn.Parameter(torch.zeros(2)))
    params = torch.tensor([[3.0, 0.2, -1.0, -1.0], [-0.5, -4.0, 0.0, 0.0]])
    no_masks = torch.ones(2, 0, dtype=torch.bool)
    greedy, ones = head.act(params, no_masks, True, np.random.default_rng(0))
    np.testing.assert_allclose(greedy, [[1.0, 0.2], [-0.5, 0.0]])
    np.testing.assert_array_equal(ones, 1.0)
    drawn, densities = head.act(params, no_masks, False, np.random.default_rng(0))
    expected = head.log_prob(params, torch.from_numpy(drawn), no_masks).exp().numpy()
    np.testing.assert_allclose(densities, expected, rtol=1e-6)


def test_continuous_ppo_update_starts_on_policy_and_learns() -> None:
    learner = make_learner("ppo/continuous", extra=("normalize_observations=false",))
    assert isinstance(learner, PPO)
    run_steps(learner, 31)
    assert learner.num_updates == 0
    r = learner.rollout
    learner.evaluate_rollout()
    total = r.pos * r.n_envs
    with torch.no_grad():
        params = learner.net.policy(torch.from_numpy(r.observations_TNO[:31].reshape(total, -1)))
        log_probs = learner.head.log_prob(
            params,
            torch.from_numpy(r.actions_TN[:31].reshape(total, -1)),
            torch.ones(total, 0, dtype=torch.bool),
        )
    np.testing.assert_allclose(r.log_probs_TN[:31].reshape(total), log_probs.numpy(), rtol=1e-6)
    before = learner.net.log_std.detach().clone()  # type: ignore[union-attr]
    run_steps(learner, 1, seed=1)
    assert learner.num_updates > 0
    assert not torch.equal(before, learner.net.log_std.detach())  # type: ignore[union-attr]


def test_normalizer_statistics_follow_the_observations_and_travel_in_the_export() -> None:
    learner = make_learner("ppo/continuous")
    assert isinstance(learner.net.normalizer, ObservationNormalizer)
    run_steps(learner, 200)
    normalizer = learner.net.normalizer
    assert float(normalizer.count) == pytest.approx(200, abs=1e-6)
    assert normalizer.var.min() > 0
    exported = learner.policy_module()
    names = set(exported.state_dict())
    assert {"actor.0.mean", "actor.0.var", "actor.0.count"} <= names


def test_no_mask_is_the_all_allowed_mask() -> None:
    """The unmasked fast paths (masks None) give what an all-True mask gives, and the one-pass
    log_prob_entropy what log_prob and entropy give apart."""
    head = CategoricalHead(4)
    everything = torch.ones_like(MASK)
    actions = torch.tensor([2, 3])
    for masks in (None, everything, MASK):
        reference = MASK if masks is MASK else everything
        log_prob, entropy = head.log_prob_entropy(LOGITS, actions, masks)
        torch.testing.assert_close(log_prob, head.log_prob(LOGITS, actions, reference))
        torch.testing.assert_close(entropy, head.entropy(LOGITS, reference))
        torch.testing.assert_close(
            head.kl(LOGITS, LOGITS * 0.5, masks), head.kl(LOGITS, LOGITS * 0.5, reference)
        )
        torch.testing.assert_close(
            masking.masked_probabilities(LOGITS, masks),
            masking.masked_probabilities(LOGITS, reference),
        )
        assert torch.equal(
            masking.masked_argmax_torch(LOGITS, masks),
            masking.masked_argmax_torch(LOGITS, reference),
        )


def test_rollout_hands_out_masks_only_when_some_action_was_masked() -> None:
    learner = make_learner("ppo")
    assert isinstance(learner, PPO)
    for batch in random_transitions(learner, 2, seed=0):
        learner.rollout.add(
            batch.observations,
            batch.actions,
            batch.rewards,
            batch.next_observations,
            batch.terminated,
            batch.truncated,
            np.ones((1, learner.num_actions), dtype=np.bool_),
        )
    assert learner.rollout.flat_masks() is None
    rng = np.random.default_rng(0)
    zeros = np.zeros((2, 1), dtype=np.float32)
    batches = list(learner.rollout.minibatches(zeros, zeros, 1, rng))
    assert len(batches) == 2 and all(mb.action_masks is None for mb in batches)
    learner.rollout.action_masks_TNA[1, 0, 0] = False
    masks = learner.rollout.flat_masks()
    assert masks is not None and not masks[1, 0]
    batches = list(learner.rollout.minibatches(zeros, zeros, 1, rng))
    assert all(mb.action_masks is not None for mb in batches)

"""Action masks in training (trainer.core.masking) and serving (service.masking)."""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from service.errors import InvalidArgument
from service.masking import choose, request_mask
from trainer.core.masking import (
    all_allowed,
    epsilon_greedy_act,
    epsilon_greedy_head,
    epsilon_greedy_probabilities,
    masked_argmax,
    sample_allowed,
)

F32_MIN = float(np.finfo(np.float32).min)


# Finite Q-values strictly above the masking sentinel (the dtype's minimum); see
# test_masked_argmax_never_picks_masked_action_at_extreme_scores for the sentinel itself.
def f32(value: float) -> float:
    """`value` rounded to float32, as Hypothesis wants width-32 bounds."""
    return float(np.float32(value))


q_value = st.floats(f32(-1e30), f32(1e30), allow_nan=False, width=32)
epsilon_value = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(1e-6, 1.0))


@st.composite
def scores_and_masks(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """[B, A] float32 scores (with frequent ties) and masks with at least one True per row."""
    batch = draw(st.integers(1, 8))
    actions = draw(st.integers(1, 8))
    elements = st.one_of(q_value, st.sampled_from([0.0, 1.0, -1.0]))
    q = draw(arrays(np.float32, (batch, actions), elements=elements))
    mask = draw(arrays(np.bool_, (batch, actions)))
    forced = draw(arrays(np.int64, batch, elements=st.integers(0, actions - 1)))
    mask[np.arange(batch), forced] = True
    return q, mask


# --- trainer.core.masking ----------------------------------------------------------------------


@given(scores_and_masks())
def test_masked_argmax_is_first_allowed_maximum(case: tuple[np.ndarray, np.ndarray]) -> None:
    q, mask = case
    chosen = masked_argmax(q, mask)
    assert chosen.dtype == np.int64
    for row in range(len(q)):
        assert mask[row, chosen[row]]
        best = q[row][mask[row]].max()
        assert q[row, chosen[row]] == best
        first = int(np.flatnonzero(mask[row] & (q[row] == best))[0])
        assert chosen[row] == first


def test_masked_argmax_without_mask() -> None:
    q = np.array([[0.0, 3.0, 3.0], [5.0, -1.0, 2.0]], dtype=np.float32)
    assert masked_argmax(q, None).tolist() == [1, 0]


def test_masked_argmax_never_picks_masked_action_at_extreme_scores() -> None:
    """An allowed action whose score is -inf or the float32 minimum must still beat masked ones:
    the module promises that "a masked action can never win"."""
    q = np.array([[-np.inf, 0.0], [F32_MIN, F32_MIN], [5.0, -np.inf]], dtype=np.float32)
    mask = np.array([[True, False], [False, True], [False, True]])
    assert masked_argmax(q, mask).tolist() == [0, 1, 1]
    greedy, _, _ = epsilon_greedy_head(torch.from_numpy(q), torch.from_numpy(mask), 0.1)
    assert greedy.tolist() == [0, 1, 1]


@settings(deadline=None)
@given(scores_and_masks(), epsilon_value)
def test_torch_head_and_numpy_probabilities_agree(
    case: tuple[np.ndarray, np.ndarray], epsilon: float
) -> None:
    q, mask = case
    greedy_t, probabilities_t, values_t = epsilon_greedy_head(
        torch.from_numpy(q), torch.from_numpy(mask), epsilon
    )
    probabilities = epsilon_greedy_probabilities(q, mask, epsilon)
    assert probabilities.dtype == np.float32
    assert greedy_t.tolist() == masked_argmax(q, mask).tolist()
    np.testing.assert_allclose(probabilities_t.numpy(), probabilities, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(values_t.numpy(), q)


@given(scores_and_masks(), epsilon_value)
def test_probabilities_are_a_distribution_over_allowed_actions(
    case: tuple[np.ndarray, np.ndarray], epsilon: float
) -> None:
    q, mask = case
    probabilities = epsilon_greedy_probabilities(q, mask, epsilon)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert (probabilities[~mask] == 0.0).all()
    assert (probabilities >= 0.0).all()
    greedy = masked_argmax(q, mask)
    rows = np.arange(len(q))
    assert (probabilities[rows, greedy] >= probabilities.max(axis=1)).all()
    if epsilon > 0:
        assert (probabilities[mask] > 0.0).all()


def test_probabilities_values() -> None:
    q = np.array([[1.0, 5.0, 3.0, 0.0]], dtype=np.float32)
    mask = np.array([[True, False, True, True]])
    probabilities = epsilon_greedy_probabilities(q, mask, 0.3)
    np.testing.assert_allclose(probabilities, [[0.1, 0.0, 0.8, 0.1]], atol=1e-7)
    unmasked = epsilon_greedy_probabilities(q, None, 0.4)
    np.testing.assert_allclose(unmasked, [[0.1, 0.7, 0.1, 0.1]], atol=1e-7)


def test_torch_head_masks_in_its_own_dtype() -> None:
    q = torch.tensor([[1.0, 9.0, 2.0]], dtype=torch.float64)
    mask = torch.tensor([[True, False, True]])
    greedy, probabilities, _ = epsilon_greedy_head(q, mask, 0.5)
    assert greedy.tolist() == [2]
    assert probabilities.dtype == torch.float64
    np.testing.assert_allclose(probabilities.numpy(), [[0.25, 0.0, 0.75]])


@settings(deadline=None, max_examples=50)
@given(scores_and_masks(), epsilon_value, st.integers(0, 2**32 - 1))
def test_epsilon_greedy_act_samples_allowed_actions_with_their_probabilities(
    case: tuple[np.ndarray, np.ndarray], epsilon: float, seed: int
) -> None:
    q, mask = case
    repeats = 64
    q_many, mask_many = np.tile(q, (repeats, 1)), np.tile(mask, (repeats, 1))
    actions, propensities = epsilon_greedy_act(
        np.random.default_rng(seed), q_many, mask_many, epsilon, deterministic=False
    )
    rows = np.arange(len(q_many))
    assert mask_many[rows, actions].all()
    probabilities = epsilon_greedy_probabilities(q_many, mask_many, epsilon)
    np.testing.assert_array_equal(propensities, probabilities[rows, actions])
    assert (propensities > 0).all()
    assert (propensities <= 1).all()


def test_epsilon_greedy_act_frequencies_match_probabilities() -> None:
    q = np.tile(np.array([[2.0, 9.0, 1.0, 0.5]], dtype=np.float32), (40_000, 1))
    mask = np.tile(np.array([[True, False, True, True]]), (40_000, 1))
    actions, _ = epsilon_greedy_act(np.random.default_rng(3), q, mask, 0.3, deterministic=False)
    frequencies = np.bincount(actions, minlength=4) / len(actions)
    np.testing.assert_allclose(frequencies, [0.8, 0.0, 0.1, 0.1], atol=0.01)


@given(scores_and_masks(), epsilon_value)
def test_epsilon_greedy_act_deterministic_is_masked_argmax(
    case: tuple[np.ndarray, np.ndarray], epsilon: float
) -> None:
    q, mask = case
    actions, propensities = epsilon_greedy_act(
        np.random.default_rng(0), q, mask, epsilon, deterministic=True
    )
    np.testing.assert_array_equal(actions, masked_argmax(q, mask))
    np.testing.assert_array_equal(propensities, np.ones(len(q), dtype=np.float32))


def test_epsilon_greedy_act_without_mask_is_uniform_when_exploring() -> None:
    q = np.zeros((20_000, 3), dtype=np.float32)
    q[:, 2] = 1.0
    actions, propensities = epsilon_greedy_act(
        np.random.default_rng(1), q, None, 1.0, deterministic=False
    )
    frequencies = np.bincount(actions, minlength=3) / len(actions)
    np.testing.assert_allclose(frequencies, [1 / 3] * 3, atol=0.015)
    np.testing.assert_allclose(propensities, 1 / 3, rtol=1e-6)


def test_sample_allowed_and_all_allowed() -> None:
    rng = np.random.default_rng(0)
    mask = np.array([False, True, False, True, False])
    draws = {sample_allowed(rng, mask, 5) for _ in range(200)}
    assert draws == {1, 3}
    assert {sample_allowed(rng, None, 3) for _ in range(200)} == {0, 1, 2}
    allowed = all_allowed(2, 3)
    assert allowed.shape == (2, 3)
    assert allowed.dtype == np.bool_
    assert allowed.all()


# --- service.masking ---------------------------------------------------------------------------


def test_request_mask_empty_allows_everything() -> None:
    mask = request_mask([], 4)
    assert mask.dtype == np.bool_
    assert mask.tolist() == [True, True, True, True]


def test_request_mask_passes_flags_through() -> None:
    assert request_mask([False, True, False], 3).tolist() == [False, True, False]


@pytest.mark.parametrize("flags", [[True], [True, False, True, True, False]])
def test_request_mask_wrong_length(flags: list[bool]) -> None:
    with pytest.raises(InvalidArgument) as error:
        request_mask(flags, 4)
    message = str(error.value)
    assert f"{len(flags)} flags" in message
    assert "4 actions" in message


def test_request_mask_all_false() -> None:
    with pytest.raises(InvalidArgument, match="allows no action"):
        request_mask([False, False, False], 3)


class FixedRng:
    """Stands in for np.random.Generator: `random()` returns one chosen uniform draw."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


@st.composite
def probabilities_and_masks(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative float32 probabilities (any scale, not summing to 1, often adversarial: most
    mass on masked actions) and non-empty masks giving some allowed action positive mass."""
    n = draw(st.integers(1, 16))
    mask = draw(arrays(np.bool_, n))
    mask[draw(st.integers(0, n - 1))] = True
    big = st.floats(0.0, f32(3e38), width=32)
    tiny = st.one_of(
        st.just(0.0),
        st.floats(0.0, f32(1e-30), width=32),
        st.floats(f32(1e-45), f32(1e-37), width=32),
    )
    nice = st.sampled_from([0.0, 1 / 3, 0.1, 0.2, 0.7, 1.0, 1 - 2**-24])
    # Widely mixed scales make np.sum (pairwise) and np.cumsum (sequential) round differently.
    mixed = st.sampled_from([0.0, 1.0, f32(0.75 * 2**-53), f32(1e-20), f32(1e-5), f32(3e-8)])
    style = draw(st.sampled_from(["any", "masked-heavy", "nice", "mixed"]))
    if style == "masked-heavy":
        allowed_elements, masked_elements = tiny, st.floats(0.5, 1.0, width=32)
    elif style == "nice":
        allowed_elements = masked_elements = nice
    elif style == "mixed":
        allowed_elements = masked_elements = mixed
    else:
        allowed_elements = masked_elements = big
    allowed = draw(arrays(np.float32, n, elements=allowed_elements))
    masked = draw(arrays(np.float32, n, elements=masked_elements))
    probabilities = np.where(mask, allowed, masked).astype(np.float32)
    assume((probabilities[mask] > 0).any())
    return probabilities, mask


uniform_draw = st.one_of(
    st.floats(0.0, 1.0, exclude_max=True),
    st.sampled_from([0.0, 1 - 2**-53, 1 - 2**-24, 0.5]),
)


@settings(max_examples=300)
@given(probabilities_and_masks(), uniform_draw)
def test_choose_never_returns_masked_action(
    case: tuple[np.ndarray, np.ndarray], draw_value: float
) -> None:
    probabilities, mask = case
    rng = cast(np.random.Generator, FixedRng(draw_value))
    action, propensity = choose(0, probabilities, mask, deterministic=False, rng=rng)
    assert 0 <= action < len(mask)
    assert mask[action]
    assert probabilities[action] > 0
    assert propensity == float(probabilities[action])


@given(probabilities_and_masks(), st.integers(0, 2**32 - 1))
def test_choose_with_real_generator_never_returns_masked_action(
    case: tuple[np.ndarray, np.ndarray], seed: int
) -> None:
    probabilities, mask = case
    rng = np.random.default_rng(seed)
    for _ in range(20):
        action, _ = choose(0, probabilities, mask, deterministic=False, rng=rng)
        assert mask[action]
        assert probabilities[action] > 0


def test_choose_samples_renormalised_allowed_probabilities() -> None:
    probabilities = np.array([0.1, 0.6, 0.3, 0.0], dtype=np.float32)
    mask = np.array([True, False, True, True])
    rng = np.random.default_rng(7)
    counts = np.zeros(4)
    for _ in range(20_000):
        action, propensity = choose(1, probabilities, mask, deterministic=False, rng=rng)
        counts[action] += 1
        assert propensity == pytest.approx(float(probabilities[action]))
    np.testing.assert_allclose(counts / counts.sum(), [0.25, 0.0, 0.75, 0.0], atol=0.015)


def test_choose_top_edge_lands_on_last_allowed_action() -> None:
    # The masked last action carries most mass; a uniform draw just below 1 must not reach it.
    probabilities = np.array([0.3, 0.2, 0.5], dtype=np.float32)
    mask = np.array([True, True, False])
    rng = cast(np.random.Generator, FixedRng(1 - 2**-53))
    assert choose(0, probabilities, mask, deterministic=False, rng=rng) == (1, pytest.approx(0.2))


def test_choose_when_the_total_exceeds_the_last_cumulative_sum() -> None:
    # np.sum adds pairwise, np.cumsum left to right: here the total is larger than the last
    # cumulative sum, so a draw near 1 lands past the end, on the masked last action.
    tiny = np.float32(0.75 * 2**-53)
    probabilities = np.array([1.0, *[tiny] * 7, 1.0], dtype=np.float32)
    mask = np.array([True] * 8 + [False])
    allowed = np.where(mask, probabilities.astype(np.float64), 0.0)
    assert allowed.sum() > np.cumsum(allowed)[-1]  # the premise of this test
    rng = cast(np.random.Generator, FixedRng(1 - 2**-53))
    action, propensity = choose(0, probabilities, mask, deterministic=False, rng=rng)
    assert mask[action]
    assert propensity == float(probabilities[action]) > 0


def test_choose_deterministic_returns_greedy_with_propensity_one() -> None:
    probabilities = np.array([0.05, 0.9, 0.05], dtype=np.float32)
    mask = np.array([True, True, True])
    rng = np.random.default_rng(0)
    assert choose(1, probabilities, mask, deterministic=True, rng=rng) == (1, 1.0)


def test_choose_deterministic_refuses_masked_greedy() -> None:
    probabilities = np.array([0.05, 0.9, 0.05], dtype=np.float32)
    mask = np.array([True, False, True])
    with pytest.raises(RuntimeError, match="masked"):
        choose(1, probabilities, mask, deterministic=True, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    "probabilities",
    [[0.0, 1.0, 0.0], [np.nan, 0.5, 0.5], [np.inf, 0.0, 0.0]],
)
def test_choose_refuses_no_usable_probability_on_allowed_actions(
    probabilities: list[float],
) -> None:
    mask = np.array([True, False, True])
    with pytest.raises(RuntimeError, match="no probability"):
        choose(
            0,
            np.array(probabilities, dtype=np.float32),
            mask,
            deterministic=False,
            rng=np.random.default_rng(0),
        )


def test_choose_ignores_nan_and_inf_on_masked_actions() -> None:
    probabilities = np.array([np.nan, 0.4, np.inf, 0.6], dtype=np.float32)
    mask = np.array([False, True, False, True])
    rng = np.random.default_rng(0)
    actions = {choose(0, probabilities, mask, deterministic=False, rng=rng)[0] for _ in range(200)}
    assert actions == {1, 3}

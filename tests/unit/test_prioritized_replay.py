"""Sum tree and prioritized replay: sampling proportional to priority, importance weights,
beta annealing, state round trip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.core.replay import PrioritizedReplayBuffer
from trainer.core.sum_tree import SumTree
from trainer.learner import TransitionBatch

OBS, ACTIONS = 2, 3


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.0, 100.0), min_size=1, max_size=40).filter(lambda v: sum(v) > 1e-3),
    st.lists(st.floats(0.0, 0.999999), min_size=1, max_size=20),
)
def test_sum_tree_find_matches_a_linear_scan(values: list[float], fractions: list[float]) -> None:
    tree = SumTree(len(values))
    tree.set(np.arange(len(values)), np.asarray(values))
    assert tree.total == pytest.approx(sum(values))
    queries = np.asarray(fractions) * tree.total
    cumulative = np.cumsum(values)
    expected = np.minimum(np.searchsorted(cumulative, queries, side="right"), len(values) - 1)
    found = tree.find(queries)
    for q, e, f in zip(queries, expected, found, strict=True):
        # Equal up to float rounding at a boundary, and never a zero-priority leaf.
        assert f == e or abs(cumulative[min(e, f)] - q) < 1e-9 * max(1.0, tree.total)
        assert values[f] > 0 or values[e] == 0


def test_sum_tree_updates_repair_ancestors() -> None:
    tree = SumTree(6)
    tree.set(np.arange(6), np.ones(6))
    tree.set(np.array([2, 5]), np.array([10.0, 0.0]))
    assert tree.total == pytest.approx(14.0)
    np.testing.assert_array_equal(tree.get(np.arange(6)), [1, 1, 10, 1, 1, 0])


def batch(count: int) -> TransitionBatch:
    ids = np.arange(count)
    return TransitionBatch(
        observations=np.repeat(ids[:, None], OBS, axis=1).astype(np.float32),
        actions=ids % ACTIONS,
        rewards=np.zeros(count, dtype=np.float32),
        next_observations=np.zeros((count, OBS), dtype=np.float32),
        terminated=np.zeros(count, dtype=np.bool_),
        truncated=np.zeros(count, dtype=np.bool_),
    )


def filled(count: int = 4, alpha: float = 1.0) -> PrioritizedReplayBuffer:
    buffer = PrioritizedReplayBuffer(8, OBS, ACTIONS, alpha=alpha, beta0=0.4)
    buffer.add(batch(count), np.full(count, 0.99, dtype=np.float32))
    return buffer


def test_sampling_follows_priorities() -> None:
    buffer = filled()
    buffer.update_priorities(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]))
    counts = np.zeros(4)
    rng = np.random.default_rng(1)
    for _ in range(20):
        sample = buffer.sample(1_000, rng)
        counts += np.bincount(sample.indices, minlength=4)
    np.testing.assert_allclose(counts / counts.sum(), [0.1, 0.2, 0.3, 0.4], atol=0.01)


def test_new_transitions_get_the_highest_priority() -> None:
    buffer = filled(2)
    buffer.update_priorities(np.array([0, 1]), np.array([5.0, 0.5]))
    buffer.add(batch(1), np.full(1, 0.99, dtype=np.float32))
    assert buffer.tree.get(np.array([2]))[0] == pytest.approx(5.0 + 1e-6)


def test_importance_weights_and_beta_annealing() -> None:
    buffer = filled()
    buffer.update_priorities(np.arange(4), np.array([1.0, 1.0, 1.0, 5.0]))
    early = buffer.sample(256, np.random.default_rng(0), progress=0.0)
    late = buffer.sample(256, np.random.default_rng(0), progress=1.0)
    assert early.weights.max().item() == pytest.approx(1.0)
    # Rare transitions weigh most; the frequent one least.
    common = early.indices == 3
    assert early.weights[common].max() < early.weights[~common].min()
    # beta = 1 corrects fully: w = (N P(i))^-1 / max, so the common one weighs 1/5.
    assert late.weights[late.indices == 3][0].item() == pytest.approx(0.2, rel=1e-5)
    assert early.weights[early.indices == 3][0].item() == pytest.approx(0.2**0.4, rel=1e-5)


def test_alpha_zero_is_uniform() -> None:
    buffer = filled(alpha=0.0)
    buffer.update_priorities(np.arange(4), np.array([1.0, 100.0, 1.0, 1.0]))
    sample = buffer.sample(4_000, np.random.default_rng(0))
    np.testing.assert_allclose(np.bincount(sample.indices, minlength=4) / 4_000, 0.25, atol=0.03)
    assert np.allclose(sample.weights.numpy(), 1.0)


def test_state_round_trip_keeps_priorities() -> None:
    buffer = filled()
    buffer.update_priorities(np.arange(4), np.array([0.5, 2.0, 8.0, 1.0]))
    restored = PrioritizedReplayBuffer(8, OBS, ACTIONS, alpha=1.0, beta0=0.4)
    restored.load_state_tensors(buffer.state_tensors("r."), "r.")
    np.testing.assert_allclose(restored.tree.get(np.arange(4)), buffer.tree.get(np.arange(4)))
    assert restored.max_priority == buffer.max_priority
    a = buffer.sample(64, np.random.default_rng(3), 0.5)
    b = restored.sample(64, np.random.default_rng(3), 0.5)
    np.testing.assert_array_equal(a.indices, b.indices)

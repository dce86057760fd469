"""trainer.core.replay.ReplayBuffer: circular storage, sampling and its saved state."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from trainer.core.replay import ReplayBuffer
from trainer.learner import TransitionBatch

OBS, ACTIONS = 3, 4


def transitions(start: int, count: int, masks: bool = True) -> TransitionBatch:
    """Transitions numbered start .. start+count-1; every field encodes the number."""
    ids = np.arange(start, start + count)
    mask = np.ones((count, ACTIONS), dtype=np.bool_)
    mask[np.arange(count), ids % ACTIONS] = False
    return TransitionBatch(
        observations=np.repeat(ids[:, None], OBS, axis=1).astype(np.float32),
        actions=(ids % ACTIONS).astype(np.int64),
        rewards=(ids * 0.5).astype(np.float32),
        next_observations=np.repeat(ids[:, None] + 1000, OBS, axis=1).astype(np.float32),
        terminated=ids % 3 == 0,
        truncated=ids % 5 == 0,
        next_action_masks=mask if masks else None,
    )


def with_discounts(batch: TransitionBatch) -> tuple[TransitionBatch, np.ndarray]:
    """1-step transitions: each bootstraps with gamma = 0.99."""
    return batch, np.full(len(batch.actions), 0.99, dtype=np.float32)


def same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.equal(a, b)
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def stored_ids(buffer: ReplayBuffer) -> list[int]:
    return [int(v) for v in buffer.observations[: buffer.size, 0]]


def test_add_fills_in_order() -> None:
    buffer = ReplayBuffer(5, OBS, ACTIONS)
    buffer.add(*with_discounts(transitions(0, 3)))
    assert (buffer.position, buffer.size) == (3, 3)
    assert stored_ids(buffer) == [0, 1, 2]
    np.testing.assert_array_equal(buffer.actions[:3], [0, 1, 2])
    np.testing.assert_array_equal(buffer.rewards[:3], [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(buffer.terminated[:3], [True, False, False])
    np.testing.assert_array_equal(buffer.next_observations[:3, 0], [1000, 1001, 1002])
    assert not buffer.next_action_masks[1, 1]
    assert buffer.next_action_masks[1].sum() == ACTIONS - 1


def test_add_wraps_around_at_capacity() -> None:
    buffer = ReplayBuffer(5, OBS, ACTIONS)
    buffer.add(*with_discounts(transitions(0, 4)))
    buffer.add(*with_discounts(transitions(4, 3)))  # ids 4, 5, 6: 5 and 6 overwrite slots 0 and 1
    assert (buffer.position, buffer.size) == (2, 5)
    assert stored_ids(buffer) == [5, 6, 2, 3, 4]
    np.testing.assert_array_equal(buffer.actions, [1, 2, 2, 3, 0])
    buffer.add(*with_discounts(transitions(7, 8)))  # more than the capacity in one batch
    assert (buffer.position, buffer.size) == (0, 5)
    assert stored_ids(buffer) == [10, 11, 12, 13, 14]


def test_missing_masks_are_stored_as_all_allowed() -> None:
    buffer = ReplayBuffer(2, OBS, ACTIONS)
    buffer.add(*with_discounts(transitions(0, 2)))
    assert not buffer.next_action_masks.all()
    buffer.add(*with_discounts(transitions(2, 2, masks=False)))  # overwrites both slots
    assert buffer.next_action_masks.all()


def test_observations_are_flattened() -> None:
    buffer = ReplayBuffer(4, 6, 2)
    observations = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    buffer.add(
        *with_discounts(
            TransitionBatch(
                observations=observations,
                actions=np.array([0, 1]),
                rewards=np.zeros(2, dtype=np.float32),
                next_observations=observations + 100,
                terminated=np.array([False, True]),
                truncated=np.array([False, False]),
            )
        )
    )
    np.testing.assert_array_equal(buffer.observations[:2], observations.reshape(2, 6))
    np.testing.assert_array_equal(buffer.next_observations[:2], observations.reshape(2, 6) + 100)


def test_sample_shapes_and_dtypes() -> None:
    buffer = ReplayBuffer(50, OBS, ACTIONS)
    buffer.add(*with_discounts(transitions(0, 30)))
    sample = buffer.sample(16, np.random.default_rng(0))
    assert sample.observations.shape == (16, OBS)
    assert sample.observations.dtype == torch.float32
    assert sample.next_observations.shape == (16, OBS)
    assert sample.next_observations.dtype == torch.float32
    assert sample.actions.shape == (16,)
    assert sample.actions.dtype == torch.int64
    assert sample.rewards.shape == (16,)
    assert sample.rewards.dtype == torch.float32
    assert sample.terminated.shape == (16,)
    assert sample.terminated.dtype == torch.bool
    assert sample.next_action_masks.shape == (16, ACTIONS)
    assert sample.next_action_masks.dtype == torch.bool


def test_sample_draws_only_stored_transitions_and_keeps_them_together() -> None:
    buffer = ReplayBuffer(100, OBS, ACTIONS)
    buffer.add(*with_discounts(transitions(0, 7)))
    sample = buffer.sample(500, np.random.default_rng(1))
    ids = sample.observations[:, 0].numpy().astype(np.int64)
    assert set(ids.tolist()) == set(range(7))  # 500 draws reach all 7, nothing beyond
    np.testing.assert_array_equal(sample.actions.numpy(), ids % ACTIONS)
    np.testing.assert_array_equal(sample.rewards.numpy(), ids * 0.5)
    np.testing.assert_array_equal(sample.next_observations[:, 0].numpy(), ids + 1000)
    np.testing.assert_array_equal(sample.terminated.numpy(), ids % 3 == 0)
    np.testing.assert_array_equal(sample.next_action_masks.numpy()[np.arange(500), ids % 4], False)


def test_sample_is_reproducible_with_the_same_generator_seed() -> None:
    buffer = ReplayBuffer(20, OBS, ACTIONS)
    buffer.add(*with_discounts(transitions(0, 20)))
    first = buffer.sample(8, np.random.default_rng(5))
    second = buffer.sample(8, np.random.default_rng(5))
    for a, b in zip(first, second, strict=True):
        assert same(a, b)


def assert_same_buffer(a: ReplayBuffer, b: ReplayBuffer) -> None:
    assert (a.position, a.size, a.capacity) == (b.position, b.size, b.capacity)
    for name in ReplayBuffer._FIELDS:
        np.testing.assert_array_equal(getattr(a, name)[: a.size], getattr(b, name)[: b.size])


def test_state_round_trip_of_a_partly_filled_buffer() -> None:
    original = ReplayBuffer(10, OBS, ACTIONS)
    original.add(*with_discounts(transitions(0, 4)))
    tensors = original.state_tensors("replay.")
    assert set(tensors) == {f"replay.{n}" for n in ReplayBuffer._FIELDS} | {"replay.cursor"}
    assert tensors["replay.observations"].shape == (4, OBS)
    restored = ReplayBuffer(10, OBS, ACTIONS)
    restored.load_state_tensors(tensors, "replay.")
    assert_same_buffer(original, restored)


def test_state_round_trip_after_wrapping_continues_identically() -> None:
    original = ReplayBuffer(6, OBS, ACTIONS)
    original.add(*with_discounts(transitions(0, 9)))
    assert (original.position, original.size) == (3, 6)
    restored = ReplayBuffer(6, OBS, ACTIONS)
    restored.load_state_tensors(original.state_tensors("x/"), "x/")
    assert_same_buffer(original, restored)
    # The write cursor survives: the next transitions overwrite the same slots in both.
    original.add(*with_discounts(transitions(9, 2)))
    restored.add(*with_discounts(transitions(9, 2)))
    assert_same_buffer(original, restored)
    assert stored_ids(restored) == [6, 7, 8, 9, 10, 5]
    for a, b in zip(
        original.sample(32, np.random.default_rng(2)),
        restored.sample(32, np.random.default_rng(2)),
        strict=True,
    ):
        assert same(a, b)


def test_discounts_are_stored_and_sampled() -> None:
    buffer = ReplayBuffer(10, OBS, ACTIONS)
    batch = transitions(0, 3)
    buffer.add(batch, np.array([0.9, 0.81, 0.729], dtype=np.float32))
    sample = buffer.sample(64, np.random.default_rng(0))
    ids = sample.observations[:, 0].numpy().astype(np.int64)
    np.testing.assert_allclose(sample.discounts.numpy(), 0.9 ** (ids + 1), rtol=1e-6)
    assert torch.equal(sample.weights, torch.ones(64))


def test_action_masks_at_s_are_stored_and_sampled() -> None:
    buffer = ReplayBuffer(10, OBS, ACTIONS)
    batch = transitions(0, 4)
    masks_at_s = ~batch.next_action_masks  # type: ignore[operator]
    masks_at_s[:, 0] = True
    buffer.add(replace(batch, action_masks=masks_at_s), np.full(4, 0.99, dtype=np.float32))
    np.testing.assert_array_equal(buffer.action_masks[:4], masks_at_s)
    sample = buffer.sample(64, np.random.default_rng(3))
    ids = sample.observations[:, 0].numpy().astype(np.int64)
    assert sample.action_masks.dtype == torch.bool
    np.testing.assert_array_equal(sample.action_masks.numpy(), masks_at_s[ids])
    buffer.add(*with_discounts(transitions(4, 2)))  # no masks at s: all allowed
    assert buffer.action_masks[4:6].all()


def continuous(start: int, count: int, size: int = 2) -> TransitionBatch:
    """Transitions with [count, size] float actions that encode the transition's number."""
    batch = transitions(start, count, masks=False)
    ids = np.arange(start, start + count, dtype=np.float32)
    actions = np.stack([ids / 100 + k for k in range(size)], axis=1).astype(np.float32)
    return replace(batch, actions=actions)


def test_continuous_actions_are_stored_sampled_and_restored() -> None:
    buffer = ReplayBuffer(6, OBS, 0, action_size=2)
    assert buffer.actions.shape == (6, 2) and buffer.actions.dtype == np.float32
    buffer.add(*with_discounts(continuous(0, 8)))  # wraps: ids 6, 7 overwrite slots 0, 1
    np.testing.assert_allclose(buffer.actions[:, 0], np.array([6, 7, 2, 3, 4, 5]) / 100)
    sample = buffer.sample(32, np.random.default_rng(4))
    assert sample.actions.shape == (32, 2) and sample.actions.dtype == torch.float32
    assert sample.action_masks.shape == (32, 0) and sample.next_action_masks.shape == (32, 0)
    ids = sample.observations[:, 0].numpy()
    np.testing.assert_allclose(sample.actions[:, 1].numpy(), ids / 100 + 1, rtol=1e-6)
    restored = ReplayBuffer(6, OBS, 0, action_size=2)
    restored.load_state_tensors(buffer.state_tensors("r."), "r.")
    assert_same_buffer(buffer, restored)


def test_checkpoints_without_masks_at_s_still_load() -> None:
    """Buffers saved before the masks at s were stored load them as all allowed."""
    original = ReplayBuffer(5, OBS, ACTIONS)
    original.add(*with_discounts(transitions(0, 3)))
    tensors = original.state_tensors("replay.")
    del tensors["replay.action_masks"]
    restored = ReplayBuffer(5, OBS, ACTIONS)
    restored.action_masks[:] = False
    restored.load_state_tensors(tensors, "replay.")
    assert restored.action_masks[:3].all()
    np.testing.assert_array_equal(restored.observations[:3], original.observations[:3])

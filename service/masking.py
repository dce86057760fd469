"""Request masks and the final choice of action: the one place that guarantees a served
discrete action is allowed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from service.errors import InvalidArgument

BoolArray = npt.NDArray[np.bool_]


def request_mask(flags: Sequence[bool], num_actions: int) -> BoolArray:
    """The request's `action_mask` as an array; empty = every action allowed."""
    if len(flags) == 0:
        return np.ones(num_actions, dtype=np.bool_)
    if len(flags) != num_actions:
        raise InvalidArgument(
            f"action_mask has {len(flags)} flags but the policy has {num_actions} actions "
            "(send one flag per action, or none)"
        )
    mask = np.fromiter(flags, dtype=np.bool_, count=num_actions)
    if not np.count_nonzero(mask):
        raise InvalidArgument("action_mask allows no action: at least one flag must be true")
    return mask


def choose(
    greedy: int,
    probabilities: npt.NDArray[np.float32],
    mask: BoolArray,
    deterministic: bool,
    rng: np.random.Generator,
) -> tuple[int, float]:
    """(action, propensity). Sampling draws only from allowed actions: their probabilities are
    renormalised after zeroing the masked ones, so rounding can never pick a masked action."""
    if deterministic:
        if not mask[greedy]:
            raise RuntimeError("runtime returned a masked greedy action")
        return greedy, 1.0
    allowed = np.where(mask, probabilities.astype(np.float64), 0.0)
    total = allowed.sum()
    if not np.isfinite(total) or total <= 0.0:
        raise RuntimeError("runtime gave no probability to any allowed action")
    cumulative = np.cumsum(allowed)
    action = int(np.searchsorted(cumulative, rng.random() * total, side="right"))
    action = min(action, len(mask) - 1)
    while not mask[action] or allowed[action] == 0.0:  # guard the float edge at the top end
        action -= 1
    return action, float(probabilities[action])


def request_masks(flags: Sequence[bool], count: int, num_actions: int) -> BoolArray:
    """ActBatch's row-major `action_masks` as [count, A]; empty = every action allowed."""
    if len(flags) == 0:
        return np.ones((count, num_actions), dtype=np.bool_)
    if len(flags) != count * num_actions:
        raise InvalidArgument(
            f"action_masks has {len(flags)} flags but {count} observations x {num_actions} "
            f"actions need {count * num_actions} (or send none)"
        )
    masks = np.fromiter(flags, dtype=np.bool_, count=len(flags)).reshape(count, num_actions)
    empty = np.flatnonzero(~masks.any(axis=1))
    if len(empty):
        raise InvalidArgument(f"action_masks row {int(empty[0])} allows no action")
    return masks


def choose_batch(
    greedy: npt.NDArray[np.int64],
    probabilities: npt.NDArray[np.float32],
    allowed: BoolArray,
    deterministic: bool,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """`choose` for [N] rows at once: (actions [N], propensities [N])."""
    count = len(greedy)
    if deterministic:
        if not allowed[np.arange(count), greedy].all():
            raise RuntimeError("runtime returned a masked greedy action")
        return greedy.astype(np.int64), np.ones(count, dtype=np.float32)
    weights = np.where(allowed, probabilities.astype(np.float64), 0.0)
    totals = weights.sum(axis=1)
    if not (np.isfinite(totals) & (totals > 0.0)).all():
        raise RuntimeError("runtime gave no probability to any allowed action")
    cumulative = np.cumsum(weights, axis=1)
    draws = rng.random(count) * totals
    actions = np.minimum((cumulative <= draws[:, None]).sum(axis=1), allowed.shape[1] - 1)
    rows = np.arange(count)
    for row in np.flatnonzero(~allowed[rows, actions] | (weights[rows, actions] == 0.0)):
        action = int(actions[row])  # the float edge at the top end, as in `choose`
        while not allowed[row, action] or weights[row, action] == 0.0:
            action -= 1
        actions[row] = action
    return actions.astype(np.int64), probabilities[rows, actions].astype(np.float32)

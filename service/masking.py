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
    if not mask.any():
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

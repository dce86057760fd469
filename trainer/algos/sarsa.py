"""Tabular SARSA (Rummery & Niranjan, 1994) and Expected SARSA (van Seijen et al., 2009).

Both are on-policy TD control: Q-learning with another value of s' in the target. Everything
else (the table, `QLearningConfig`, the epsilon schedule, the policy module, export, checkpoints,
the table runtime) is `QLearning`'s; the subclasses below override only `_next_value`.

    SARSA:          Q(s, a) <- Q(s, a) + alpha * (r + gamma * Q(s', a') - Q(s, a))
    Expected SARSA: Q(s, a) <- Q(s, a) + alpha * (r + gamma * sum_b pi(b | s') Q(s', b) - Q(s, a))

a' is the action the acting policy actually took at s' (`TransitionBatch.next_actions`; the
offline loop acts at s' before it calls `observe`), and pi is the epsilon-greedy policy over the
actions allowed at s' (`next_action_masks`) with the learner's current epsilon, i.e. the acting
policy itself. Terminated transitions do not bootstrap. With SARSA's stochastic sample the learned
values are those of the exploring policy, which is why SARSA learns the safe path on the cliff
walk (Sutton & Barto, Example 6.6) while Q-learning learns the greedy policy's values.

Exploration: epsilon decays linearly from `exploration_initial_eps` to `exploration_final_eps`
over `exploration_fraction` of the budget. For a fixed epsilon (the textbook setting) give
`exploration_fraction: 0` (epsilon is `exploration_final_eps` from the first step), or
`exploration_initial_eps` equal to `exploration_final_eps`.
"""

from __future__ import annotations

import numpy as np

from agentserve.errors import ConfigError
from trainer.algos.qlearning import QLearning
from trainer.core import masking
from trainer.learner import BoolArray, FloatArray, TransitionBatch
from trainer.registry import register


def expected_value(q_values_A: FloatArray, mask_A: BoolArray | None, epsilon: float) -> float:
    """sum_a pi(a) Q(a) for the epsilon-greedy policy pi over the allowed actions (0 if none is)."""
    if mask_A is not None and not mask_A.any():
        return 0.0
    masks = None if mask_A is None else mask_A[None]
    probabilities_A = masking.epsilon_greedy_probabilities(q_values_A[None], masks, epsilon)[0]
    return float(np.dot(probabilities_A.astype(np.float64), q_values_A.astype(np.float64)))


def _mask_row(batch: TransitionBatch, i: int) -> BoolArray | None:
    return None if batch.next_action_masks is None else batch.next_action_masks[i]


@register
class Sarsa(QLearning):
    """SARSA: bootstraps from Q(s', a') with a' the action actually taken at s'.

    Truncated episodes: where a time limit cut the episode at s' (truncated, not terminated), the
    driver resets the env, so no action is ever taken at s' and `next_actions` is -1 there. s'
    still has a value, so the target then bootstraps from the expectation of Q(s', .) under the
    current epsilon-greedy policy over the actions allowed at s' -- the value SARSA's sample
    Q(s', a') estimates (one Expected-SARSA step). Not bootstrapping would treat the time limit
    as part of the task; bootstrapping from the max would be an off-policy Q-learning step. A
    truncated transition that does carry an a' (a driver that kept acting) uses it as usual.

    `observe` raises ConfigError, before it changes anything, when a non-terminal transition has
    no usable a': `next_actions` is None (a driver that cannot supply it), -1 on a transition
    that is neither terminated nor truncated, out of range, or an action masked at s'.
    """

    algorithm = "sarsa"

    def observe(self, batch: TransitionBatch) -> dict[str, float]:
        self._check_next_actions(batch)
        return super().observe(batch)

    def _check_next_actions(self, batch: TransitionBatch) -> None:
        live = ~np.asarray(batch.terminated, dtype=np.bool_)
        if not live.any():
            return
        if batch.next_actions is None:
            raise ConfigError(
                f"{self.algorithm} needs TransitionBatch.next_actions (the action taken at s') for "
                "transitions that are not terminated, and this batch has none: the driver must "
                "choose the action at s' before calling observe (as trainer.loop does), or use "
                "expected_sarsa or qlearning, which do not need it"
            )
        next_actions = np.asarray(batch.next_actions)
        if next_actions.shape != live.shape:
            raise ConfigError(
                f"next_actions has shape {next_actions.shape}, expected {live.shape} "
                "(one action per transition)"
            )
        ended = live & (next_actions == -1)
        unexplained = ended & ~np.asarray(batch.truncated, dtype=np.bool_)
        if unexplained.any():
            i = int(np.flatnonzero(unexplained)[0])
            raise ConfigError(
                f"transition {i}: next_actions is -1 (no action at s') but the transition is "
                "neither terminated nor truncated"
            )
        taken = live & ~ended
        bad = taken & ((next_actions < 0) | (next_actions >= self.num_actions))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ConfigError(
                f"transition {i}: next action {int(next_actions[i])} is not an action of this "
                f"space (0..{self.num_actions - 1}, or -1 where s' ended the episode)"
            )
        if batch.next_action_masks is not None:
            rows = np.flatnonzero(taken)
            allowed = np.asarray(batch.next_action_masks, dtype=np.bool_)[rows, next_actions[rows]]
            if not allowed.all():
                i = int(rows[np.flatnonzero(~allowed)[0]])
                raise ConfigError(
                    f"transition {i}: next action {int(next_actions[i])} is masked at s' "
                    "(next_action_masks), so the acting policy cannot have taken it"
                )

    def _next_value(self, batch: TransitionBatch, i: int, next_state: np.int64) -> float:
        assert batch.next_actions is not None  # checked by observe
        next_action = int(batch.next_actions[i])
        if next_action == -1:  # truncated at s': the expectation under the acting policy
            return expected_value(self.q_table[next_state], _mask_row(batch, i), self.epsilon)
        return float(self.q_table[next_state, next_action])


@register
class ExpectedSarsa(QLearning):
    """Expected SARSA: bootstraps from the expectation of Q(s', .) under the current
    epsilon-greedy policy over the actions allowed at s'; `next_actions` is not needed."""

    algorithm = "expected_sarsa"

    def _next_value(self, batch: TransitionBatch, i: int, next_state: np.int64) -> float:
        return expected_value(self.q_table[next_state], _mask_row(batch, i), self.epsilon)

"""Action masks with one meaning everywhere: True = allowed.

Masked scores are set to the dtype's minimum before argmax / max / softmax, and an argmax that
still lands on a masked action (possible only when every allowed score is -inf or that minimum)
falls back to the first allowed action: a masked action never wins, in training, in the exported
torch module and inside the ONNX graph alike.
"""

from __future__ import annotations

import numpy as np
import torch

from trainer.learner import BoolArray


def all_allowed(batch: int, num_actions: int) -> BoolArray:
    return np.ones((batch, num_actions), dtype=np.bool_)


def mask_scores(scores_BA: torch.Tensor, mask_BA: torch.Tensor) -> torch.Tensor:
    """Scores with masked actions replaced by the lowest representable value."""
    return torch.where(mask_BA, scores_BA, torch.finfo(scores_BA.dtype).min)


def masked_argmax_torch(scores_BA: torch.Tensor, mask_BA: torch.Tensor | None) -> torch.Tensor:
    """Argmax over allowed actions (first maximum on ties); never a masked index. `mask_BA`
    None (here and in the functions below): every action allowed."""
    if mask_BA is None:
        return scores_BA.argmax(dim=-1)
    greedy_B = mask_scores(scores_BA, mask_BA).argmax(dim=-1)
    allowed_B = mask_BA.gather(1, greedy_B.unsqueeze(-1)).squeeze(-1)
    first_allowed_B = mask_BA.to(torch.int32).argmax(dim=-1)
    return torch.where(allowed_B, greedy_B, first_allowed_B)


def epsilon_greedy_head(
    q_values_BA: torch.Tensor, mask_BA: torch.Tensor, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(greedy_action_B, probabilities_BA, q_values_BA) of an epsilon-greedy policy over allowed
    actions: epsilon spread evenly over the allowed ones, 1 - epsilon on the masked argmax."""
    greedy_B = masked_argmax_torch(q_values_BA, mask_BA)
    allowed_BA = mask_BA.to(q_values_BA.dtype)
    uniform_BA = allowed_BA / allowed_BA.sum(dim=-1, keepdim=True)
    actions_A = torch.arange(q_values_BA.shape[-1], device=q_values_BA.device)
    one_hot_BA = (actions_A.unsqueeze(0) == greedy_B.unsqueeze(-1)).to(q_values_BA.dtype)
    probabilities_BA = epsilon * uniform_BA + (1.0 - epsilon) * one_hot_BA
    return greedy_B, probabilities_BA, q_values_BA


def masked_argmax(q_values_BA: np.ndarray, mask_BA: BoolArray | None) -> np.ndarray:
    """Numpy masked argmax (first maximum on ties, as torch and ONNX ArgMax)."""
    if mask_BA is None:
        return np.asarray(q_values_BA.argmax(axis=-1), dtype=np.int64)
    low = np.finfo(q_values_BA.dtype).min
    greedy_B = np.where(mask_BA, q_values_BA, low).argmax(axis=-1)
    allowed_B = mask_BA[np.arange(len(greedy_B)), greedy_B]
    return np.asarray(np.where(allowed_B, greedy_B, mask_BA.argmax(axis=-1)), dtype=np.int64)


def epsilon_greedy_probabilities(
    q_values_BA: np.ndarray,
    mask_BA: BoolArray | None,
    epsilon: float,
    greedy_B: np.ndarray | None = None,
) -> np.ndarray:
    """Numpy twin of `epsilon_greedy_head`'s probabilities (float32, [B, A]); `greedy_B` may
    pass the masked argmax when the caller already has it."""
    q_values_BA = np.asarray(q_values_BA, dtype=np.float32)
    allowed_BA = np.ones_like(q_values_BA) if mask_BA is None else mask_BA.astype(np.float32)
    if greedy_B is None:
        greedy_B = masked_argmax(q_values_BA, mask_BA)
    one_hot_BA = np.zeros_like(q_values_BA)
    one_hot_BA[np.arange(len(greedy_B)), greedy_B] = 1.0
    uniform_BA = allowed_BA / allowed_BA.sum(axis=-1, keepdims=True)
    return np.asarray(
        np.float32(epsilon) * uniform_BA + np.float32(1.0 - epsilon) * one_hot_BA,
        dtype=np.float32,
    )


def sample_allowed(rng: np.random.Generator, mask_A: BoolArray | None, num_actions: int) -> int:
    """A uniformly random allowed action."""
    if mask_A is None:
        return int(rng.integers(num_actions))
    allowed = np.flatnonzero(mask_A)
    return int(allowed[rng.integers(len(allowed))])


def epsilon_greedy_act(
    rng: np.random.Generator,
    q_values_BA: np.ndarray,
    mask_BA: BoolArray | None,
    epsilon: float,
    deterministic: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Acts epsilon-greedily among allowed actions; returns (actions_B, propensities_B)."""
    batch, num_actions = q_values_BA.shape
    greedy_B = masked_argmax(q_values_BA, mask_BA)
    if deterministic:
        return greedy_B, np.ones(batch, dtype=np.float32)
    actions_B = greedy_B.copy()
    explore_B = rng.random(batch) < epsilon
    for i in np.flatnonzero(explore_B):
        actions_B[i] = sample_allowed(rng, None if mask_BA is None else mask_BA[i], num_actions)
    # epsilon_greedy_probabilities at the chosen actions, without building [B, A] arrays.
    allowed_B = (
        np.full(batch, num_actions, dtype=np.float32)
        if mask_BA is None
        else mask_BA.sum(axis=-1).astype(np.float32)
    )
    uniform_B = np.float32(1.0) / allowed_B
    propensities_B = np.float32(epsilon) * uniform_B + np.float32(1.0 - epsilon) * (
        actions_B == greedy_B
    ).astype(np.float32)
    return actions_B, propensities_B.astype(np.float32)


# Masked categorical policies (policy-gradient learners). Masked logits become the dtype's
# minimum, so after log-softmax a masked action's probability underflows to exactly 0 while every
# number stays finite (no NaN in gradients); the public log-probability is -inf on masked actions.


def masked_log_softmax(logits_BA: torch.Tensor, mask_BA: torch.Tensor | None) -> torch.Tensor:
    """Log-probabilities over the allowed actions; finite everywhere, exp() exactly 0 on masked
    actions (use this inside losses). `mask_BA` None: every action allowed."""
    if mask_BA is None:
        return torch.log_softmax(logits_BA, dim=-1)
    return torch.log_softmax(mask_scores(logits_BA, mask_BA), dim=-1)


def masked_probabilities(logits_BA: torch.Tensor, mask_BA: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the allowed actions, exactly 0 on masked ones."""
    if mask_BA is None:
        return torch.softmax(logits_BA, dim=-1)
    probabilities_BA = torch.softmax(mask_scores(logits_BA, mask_BA), dim=-1)
    return torch.where(mask_BA, probabilities_BA, torch.zeros_like(probabilities_BA))


def categorical_log_prob(
    logits_BA: torch.Tensor, mask_BA: torch.Tensor, actions_B: torch.Tensor
) -> torch.Tensor:
    """log pi(a | s) of the masked distribution; -inf where the action is masked."""
    log_probs_BA = masked_log_softmax(logits_BA, mask_BA)
    log_probs_BA = torch.where(mask_BA, log_probs_BA, torch.full_like(log_probs_BA, -torch.inf))
    return log_probs_BA.gather(1, actions_B.long().unsqueeze(1)).squeeze(1)


def categorical_entropy(logits_BA: torch.Tensor, mask_BA: torch.Tensor | None) -> torch.Tensor:
    """[B] entropy of the masked distribution (a sum over the allowed actions only)."""
    return entropy_of_log_probs(masked_log_softmax(logits_BA, mask_BA), mask_BA)


def entropy_of_log_probs(log_probs_BA: torch.Tensor, mask_BA: torch.Tensor | None) -> torch.Tensor:
    """[B] -sum p log p over the allowed actions, from `masked_log_softmax`'s output."""
    terms_BA = log_probs_BA.exp() * log_probs_BA
    if mask_BA is not None:
        terms_BA = torch.where(mask_BA, terms_BA, 0.0)
    return -terms_BA.sum(dim=-1)


def sample_categorical(
    logits_BA: torch.Tensor, mask_BA: torch.Tensor | None, rng: np.random.Generator
) -> torch.Tensor:
    """[B] actions drawn from the masked softmax by the Gumbel-max trick with noise from `rng`
    (the learner's generator, so draws are reproducible and travel with its state). Masked
    actions keep the dtype's minimum, which no finite Gumbel noise lifts above an allowed one, and
    `masked_argmax_torch` guards the rest: a masked action is never drawn."""
    uniform_BA = rng.random(tuple(logits_BA.shape))
    tiny = np.finfo(np.float64).tiny
    gumbel_BA = -np.log(-np.log(np.clip(uniform_BA, tiny, 1.0 - 1e-12)))
    log_probs_BA = masked_log_softmax(logits_BA, mask_BA).double()
    if mask_BA is None:  # the same sum and first maximum, in numpy: fewer calls
        return torch.from_numpy((log_probs_BA.detach().numpy() + gumbel_BA).argmax(axis=-1))
    noisy_BA = log_probs_BA + torch.from_numpy(gumbel_BA)
    return masked_argmax_torch(noisy_BA, mask_BA)


def categorical_head(
    logits_BA: torch.Tensor, mask_BA: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(greedy_action_B, probabilities_BA, logits_BA) of a masked softmax policy: the masked
    argmax, the masked softmax (exactly 0 on masked actions) and the raw policy logits as the
    "values" output."""
    greedy_B = masked_argmax_torch(logits_BA, mask_BA)
    return greedy_B, masked_probabilities(logits_BA, mask_BA), logits_BA

"""n-step returns: turns a stream of 1-step transitions into n-step ones.

Each row of a TransitionBatch is one stream (one env of the offline loop's lockstep batch). For
each stream the last n transitions are kept; once n are there, the oldest leaves as
(s_t, a_t, sum_k gamma^k r_{t+k}, s_{t+n}) with discount gamma^n. An episode end flushes the
stream: every pending transition leaves with the rewards up to the end and the discount to the
final observation (0 bootstrap if terminated).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from trainer.learner import TransitionBatch


@dataclass
class _Pending:
    observation: npt.NDArray[np.float32]
    action: int
    reward: float
    """Discounted reward sum so far."""
    steps: int


class NStepAccumulator:
    def __init__(self, n: int, gamma: float) -> None:
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n, self.gamma = n, gamma
        self.streams: dict[int, deque[_Pending]] = {}

    def push(
        self, batch: TransitionBatch
    ) -> tuple[TransitionBatch, npt.NDArray[np.float32]] | None:
        """Adds one transition per stream; returns the n-step transitions that are complete
        (and their discounts), or None."""
        if self.n == 1:
            return batch, np.full(len(batch.actions), self.gamma, dtype=np.float32)
        out_obs, out_act, out_rew, out_next, out_term, out_trunc, out_masks, out_disc = (
            [],
            [],
            [],
            [],
            [],
            [],
            [],
            [],
        )
        for i in range(len(batch.actions)):
            stream = self.streams.setdefault(i, deque())
            reward = float(batch.rewards[i])
            for pending in stream:
                pending.reward += self.gamma**pending.steps * reward
                pending.steps += 1
            stream.append(_Pending(batch.observations[i], int(batch.actions[i]), reward, 1))
            done = bool(batch.terminated[i] or batch.truncated[i])
            while stream and (done or stream[0].steps >= self.n):
                first = stream.popleft()
                out_obs.append(first.observation)
                out_act.append(first.action)
                out_rew.append(first.reward)
                out_next.append(batch.next_observations[i])
                out_term.append(bool(batch.terminated[i]))
                out_trunc.append(bool(batch.truncated[i]))
                masks = batch.next_action_masks
                out_masks.append(None if masks is None else masks[i])
                out_disc.append(self.gamma**first.steps)
        if not out_act:
            return None
        all_masks = None if any(m is None for m in out_masks) else np.stack(out_masks)  # type: ignore[arg-type]
        return (
            TransitionBatch(
                observations=np.stack(out_obs),
                actions=np.asarray(out_act, dtype=np.int64),
                rewards=np.asarray(out_rew, dtype=np.float32),
                next_observations=np.stack(out_next),
                terminated=np.asarray(out_term),
                truncated=np.asarray(out_trunc),
                next_action_masks=all_masks,
            ),
            np.asarray(out_disc, dtype=np.float32),
        )

    def clear(self) -> None:
        self.streams.clear()

    def state_tensors(self, prefix: str) -> dict[str, npt.NDArray[Any]]:
        """The pending transitions of every stream (they are part of the learner's state)."""
        tensors: dict[str, npt.NDArray[Any]] = {}
        for stream, pending in self.streams.items():
            if not pending:
                continue
            key = f"{prefix}{stream}."
            tensors[key + "observations"] = np.stack([p.observation for p in pending])
            tensors[key + "actions"] = np.array([p.action for p in pending], dtype=np.int64)
            tensors[key + "rewards"] = np.array([p.reward for p in pending], dtype=np.float64)
            tensors[key + "steps"] = np.array([p.steps for p in pending], dtype=np.int64)
        return tensors

    def load_state_tensors(self, tensors: dict[str, npt.NDArray[Any]], prefix: str) -> None:
        self.streams.clear()
        streams = {k[len(prefix) :].split(".")[0] for k in tensors if k.startswith(prefix)}
        for stream in sorted(streams, key=int):
            key = f"{prefix}{stream}."
            self.streams[int(stream)] = deque(
                _Pending(np.array(obs), int(action), float(reward), int(steps))
                for obs, action, reward, steps in zip(
                    tensors[key + "observations"],
                    tensors[key + "actions"],
                    tensors[key + "rewards"],
                    tensors[key + "steps"],
                    strict=True,
                )
            )

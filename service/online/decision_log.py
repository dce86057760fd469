"""The decision log of an online policy (`agentserve serve --decision-log DIR`): every decision
that a feedback completes, as one JSON line in `DIR/<policy>/decisions-<n>.jsonl`, for analysis
and off-policy evaluation (`agentserve evaluate-log`, agentserve.ope).

Keys (agentserve.ope.RECORD_FIELDS): time (UNIX seconds when the feedback completed it), policy,
version (the policy's published version when the decision was made), episode_id, event_id (the
decision's write-ahead-log sequence), observation, action_mask (the mask the learner chose under:
the request's AND the safety rules'; null = all allowed), action, propensity (the learner's
probability of that action, exploration included), reward, terminated, truncated, step (the
decision's index within its episode, counted by this process: it restarts at 0 after a restart).

Written live only, never during write-ahead-log replay, and flushed per line (not fsync'd): the
log is for analysis; durability lives in the write-ahead log. A file rotates to the next n once
it would exceed `MAX_FILE_BYTES`; a restart appends to the newest file. A write that fails (e.g.
a full disk) is logged and skipped: it never fails the feedback, which is already durable.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import IO, TYPE_CHECKING

from agentserve.ope import LOG_PATTERN

if TYPE_CHECKING:
    from service.online.host import Awaiting

log = logging.getLogger("agentserve.online")

MAX_FILE_BYTES = 64 * 1024 * 1024
"""A decision-log file rotates once the next line would take it past this size (64 MiB)."""
MAX_OPEN_EPISODES = 100_000
"""Episodes whose step count is remembered (the oldest is forgotten first)."""


class DecisionLog:
    def __init__(self, directory: Path, policy: str, max_bytes: int = MAX_FILE_BYTES) -> None:
        self.directory = directory / policy
        self.policy = policy
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        numbers = [
            int(match.group(1))
            for p in self.directory.iterdir()
            if (match := LOG_PATTERN.fullmatch(p.name))
        ]
        self.number = max(numbers, default=0)
        self.file: IO[str] = self._open()
        self.size = self.file.tell()
        self.steps: OrderedDict[str, int] = OrderedDict()
        self.failures = 0

    @property
    def path(self) -> Path:
        return self.directory / f"decisions-{self.number}.jsonl"

    def _open(self) -> IO[str]:
        return self.path.open("a", encoding="utf-8")

    def write(
        self,
        version: int,
        episode_id: str,
        decision: Awaiting,
        reward: float,
        terminated: bool,
        truncated: bool,
    ) -> None:
        """Appends the episode's decision that this feedback completes."""
        step = self.steps.pop(episode_id, 0)
        if not (terminated or truncated):
            self.steps[episode_id] = step + 1
            while len(self.steps) > MAX_OPEN_EPISODES:
                self.steps.popitem(last=False)
        record = {
            "time": round(time.time(), 6),
            "policy": self.policy,
            "version": version,
            "episode_id": episode_id,
            "event_id": decision.event_id,
            "observation": decision.observation,
            "action_mask": decision.mask,
            "action": decision.action,
            "propensity": decision.propensity,
            "reward": float(reward),
            "terminated": bool(terminated),
            "truncated": bool(truncated),
            "step": step,
        }
        line = json.dumps(record, separators=(",", ":")) + "\n"
        size = len(line.encode())
        try:
            if self.size > 0 and self.size + size > self.max_bytes:
                self.file.close()
                self.number += 1
                self.file = self._open()
                self.size = 0
            self.file.write(line)
            self.file.flush()
            self.size += size
        except (OSError, ValueError) as error:  # ValueError: the file could not be reopened
            self.failures += 1
            if self.failures == 1 or self.failures % 1000 == 0:
                log.error(
                    "%s: decision log write failed (%d so far): %s",
                    self.policy,
                    self.failures,
                    error,
                )

    def close(self) -> None:
        self.file.close()

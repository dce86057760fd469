"""Learning off the event loop.

A learner with torch networks learns in a thread of its own: `submit` queues a transition and
returns at once, the thread hands the queued transitions to `learner.observe` in the order they
were logged (the learner makes its gradient steps there, at its configured ratio), and after every
observe that learned it copies the learner's acting modules into a replica of the learner. `Act`
chooses with the replica under a lock held only for one act or one copy, so a PPO update of
seconds or a DQN train phase never holds up an answer; the acting policy is at most one learning
step behind the learner (each transition carries the log-probability of its action under the
replica, and the policy-gradient learners importance-weight by it).

Snapshots are taken in the same thread, between two transitions: a snapshot requested after log
record n runs once every transition up to n has been observed and none after it, so the learner
state it saves matches the log position it names.

Learners that act from arrays updated in O(1) per step (tables, bandits: no acting modules) learn
inline in `submit`, and act with the learner itself: their next decision sees every update.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from trainer.core.numerics import flushing_denormals
from trainer.learner import Learner, TransitionBatch

log = logging.getLogger("agentserve.online")


@dataclass(frozen=True)
class _Task:
    """Work for the learner thread other than a transition (a snapshot)."""

    run: Callable[[Learner], None]


class LearnerWorker:
    def __init__(
        self,
        learner: Learner,
        replica: Callable[[], Learner],
        name: str,
        on_observed: Callable[[], None] = lambda: None,
    ) -> None:
        """`replica` builds a second learner of the same kind (used only when the learner has
        acting modules); `on_observed` runs after each transition is learned from."""
        self.learner = learner
        self.name = name
        self.on_observed = on_observed
        self.background = bool(learner.acting_modules())
        self.actor = replica() if self.background else learner
        """The learner `Act` chooses with (the learner itself when learning inline)."""
        self._weights: list[tuple[torch.Tensor, torch.Tensor]] = []
        """(replica, learner) parameters: they change with learning steps."""
        self._statistics: list[tuple[torch.Tensor, torch.Tensor]] = []
        """(replica, learner) buffers (observation normalizer statistics): they change with
        every observed step."""
        if self.background:
            for target, source in zip(
                self.actor.acting_modules(), learner.acting_modules(), strict=True
            ):
                sources = dict(source.named_parameters())
                for key, parameter in target.named_parameters():
                    self._weights.append((parameter, sources[key]))
                buffers = dict(source.named_buffers())
                for key, buffer in target.named_buffers():
                    self._statistics.append((buffer, buffers[key]))
        self._act_lock = threading.Lock()
        self._queue: queue.SimpleQueue[TransitionBatch | _Task | None] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self.errors = 0

    @property
    def pending(self) -> int:
        """Transitions submitted and not yet learned from (the learner's lag)."""
        return self._pending

    def start(self) -> None:
        """Until `start`, everything runs inline (recovery replays the log this way)."""
        self.sync()
        if self.background and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"learner-{self.name}", daemon=True
            )
            self._thread.start()

    @contextmanager
    def acting(self) -> Iterator[Learner]:
        """The learner to act with, not changing while the block runs."""
        with self._act_lock:
            yield self.actor

    def submit(self, batch: TransitionBatch) -> None:
        if self._thread is None:
            self._observe(batch)
            self.on_observed()
            return
        with self._idle:
            self._pending += 1
        self._queue.put(batch)

    def request(self, task: Callable[[Learner], None]) -> None:
        """Runs `task(learner)` after every transition submitted so far has been learned from
        and before any later one."""
        if self._thread is None:
            task(self.learner)
        else:
            self._queue.put(_Task(task))

    def drain(self, timeout: float | None = None) -> bool:
        """Waits until every submitted transition has been learned from; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        """Stops after the transition in hand; what is still queued is in the write-ahead log
        and replayed at the next start."""
        if self._thread is not None:
            while True:  # drop the queue: the log holds it
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def sync(self, weights: bool = True) -> None:
        """Copies the learner's acting modules (`weights`: parameters too, else the statistics
        only) and step counters into the replica."""
        if not self.background:
            return
        pairs = self._weights + self._statistics if weights else self._statistics
        with self._act_lock, torch.no_grad():
            for target, source in pairs:
                target.copy_(source)
            self.actor.num_steps = self.learner.num_steps
            self.actor.num_updates = self.learner.num_updates

    def _observe(self, batch: TransitionBatch) -> None:
        updates = self.learner.num_updates
        try:
            self.learner.observe(batch)
        except Exception:  # a bug must not stop learning from everything after it
            self.errors += 1
            log.exception("%s: learning from a transition failed; it is skipped", self.name)
        # Every step: statistics and the step count (exploration schedules follow it); after a
        # learning step: the weights too.
        self.sync(weights=self.learner.num_updates != updates)

    def _run(self) -> None:
        with flushing_denormals():
            while True:
                item = self._queue.get()
                if item is None:
                    return
                if isinstance(item, _Task):
                    try:
                        item.run(self.learner)
                    except Exception:
                        log.exception("%s: a snapshot failed; learning goes on", self.name)
                    continue
                self._observe(item)
                with self._idle:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()
                self.on_observed()

"""One policy learning online: the learner (the same class and code the offline trainer runs),
the episodes it is waiting on, and its durability.

- `act`: the learner chooses (exploration included; a learner with networks learns in a thread of
  its own and acts through a replica refreshed after every learning step: service.online.worker).
  With an episode id the decision is recorded (observation, mask, action, propensity) and written
  to the write-ahead log.
- `feedback`: joined with the episode's last decision into a transition (s, a, r, s', done, the
  action's log-probability when chosen, the episode's key) and handed to the learner. Without a
  next observation (episode going on) the transition is completed by the episode's next decision.
  The record is in the log and fsync'd (group commit, off the event loop: `durable`) before the
  acknowledgement; a `feedback_id` seen before is acknowledged again, never applied twice.
- `update`: explicit transitions, logged and applied the same way.
- Every `snapshot_every` updates: the log rolls to a new segment, and once the learner has learned
  from everything logged before, a snapshot of the whole learner state (safetensors + JSON
  metadata: episodes, recent ids, log position; temp file, fsync, rename, directory fsync) is
  written, the segments it covers are deleted, and the learner's policy is published as a new
  artifact version that hot reload picks up. Recovery = the newest snapshot + the log records
  after it (a torn last record is cut), replayed before the server answers.

Replay is exact because every record carries what it changes: a decision record holds the chosen
action (nothing is re-drawn), a feedback record the reward and next observation.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import math
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from agentserve.errors import ManifestError
from agentserve.manifest import Manifest
from agentserve.spaces import DiscreteSpec, SpaceSpec
from service.errors import FailedPrecondition, InvalidArgument, NotFound
from service.metrics import Metrics
from service.online.decision_log import DecisionLog
from service.online.wal import WriteAheadLog, fsync_directory
from service.online.worker import LearnerWorker
from trainer.core.checkpoint import load_checkpoint, save_checkpoint
from trainer.core.numerics import flushing_denormals
from trainer.export import export_artifact
from trainer.learner import LEARNER_RNG_STREAM, Learner, LearnerState, TransitionBatch
from trainer.rebuild import learner_from_manifest

log = logging.getLogger("agentserve.online")

MAX_EPISODES = 100_000
"""Open episodes remembered (the oldest is forgotten first)."""
MAX_IDS = 1_000_000
"""Feedback / transition ids remembered for idempotent retries (the oldest forgotten first)."""
REWARD_HALF_LIFE = 100
MAX_LAG = 10_000
"""Transitions the learner may fall behind by; beyond it feedback waits (backpressure)."""
ACTING_STREAM = 0xAC7
"""Mixed into the seed of the acting replica's generator (exploration apart from training)."""


def episode_key(episode_id: str) -> int:
    """A stable 63-bit key for an episode id (the same across restarts, for replay)."""
    digest = hashlib.blake2b(episode_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def log_probability(propensity: float) -> float:
    """log of a recorded propensity (probability or density); NaN when unknown (<= 0)."""
    return math.log(propensity) if propensity > 0 else math.nan


@dataclass
class Awaiting:
    """An episode's last decision, and (once its feedback came without a next observation) the
    reward waiting for the next decision to supply s'."""

    event_id: str
    observation: list[float]
    mask: list[bool] | None
    action: int | list[float]
    propensity: float
    reward: float | None = None
    version: int = 0
    """The published policy version when the decision was made (0: not recorded)."""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class FrozenPolicy:
    """What export_artifact reads of a learner, captured at one moment (the live learner goes
    on learning while the export runs)."""

    module: nn.Module
    algorithm: str
    observation_space: SpaceSpec
    action_space: SpaceSpec
    distribution: str
    serving_epsilon: float
    runtimes: tuple[str, ...]

    @classmethod
    def of(cls, learner: Learner) -> FrozenPolicy:
        return cls(
            copy.deepcopy(learner.policy_module()),  # a table policy shares the live table
            learner.algorithm,
            learner.observation_space,
            learner.action_space,
            learner.distribution,
            learner.serving_epsilon,
            tuple(learner.runtimes),
        )

    def policy_module(self) -> nn.Module:
        return self.module


@dataclass(frozen=True)
class OnlineDecision:
    action: int | np.ndarray
    propensity: float
    event_id: str
    version: int


class OnlinePolicy:
    def __init__(
        self,
        manifest: Manifest,
        state_dir: Path,
        model_repo: Path,
        metrics: Metrics,
        snapshot_every: int = 1_000,
        decision_log: Path | None = None,
    ) -> None:
        self.manifest = manifest
        self.name = manifest.name
        self.state_dir = state_dir / manifest.name
        self.model_repo = model_repo
        self.metrics = metrics
        self.snapshot_every = snapshot_every
        self.learner = learner_from_manifest(manifest)
        self.worker = LearnerWorker(
            self.learner, lambda: self._replica(manifest), self.name, self._learned
        )
        self.discrete = isinstance(manifest.action_space, DiscreteSpec)
        self.observation_size = manifest.observation_space.flat_size
        self.version = manifest.version
        self.episodes: OrderedDict[str, Awaiting] = OrderedDict()
        self.awaiting = 0
        """Episodes whose feedback waits for the next decision to supply s' (learner lag)."""
        self.seen: OrderedDict[str, int] = OrderedDict()
        self.updates_since_snapshot = 0
        self.reward_mean = 0.0
        self._publisher: threading.Thread | None = None
        self._syncing: asyncio.Future[int] | None = None
        self.wal = WriteAheadLog(self.state_dir / "wal")
        with flushing_denormals():  # as in the learner thread: the same numbers
            recovered = self._recover()
        trained = int(manifest.training.get("timesteps", 0) or 0)
        if not recovered and trained > 0:
            raise ManifestError(
                f"{manifest.name}/{manifest.version} was trained offline ({trained} steps) and "
                f"has no online state in {self.state_dir}: online learning starts from an "
                "untrained export (agentserve train ... --timesteps 0) or from its own state"
            )
        # Opened after replay: the decision log holds live decisions only.
        self.decision_log = None if decision_log is None else DecisionLog(decision_log, self.name)
        self.worker.start()

    @staticmethod
    def _replica(manifest: Manifest) -> Learner:
        actor = learner_from_manifest(manifest)
        actor.rng = np.random.default_rng([actor.seed, LEARNER_RNG_STREAM, ACTING_STREAM])
        return actor

    def _learned(self) -> None:
        """After each transition the learner learned from (in the learner's thread)."""
        self.metrics.online_updates.labels(self.name).inc()
        self.metrics.online_lag.labels(self.name).set(self.worker.pending)

    @property
    def lag(self) -> int:
        return self.worker.pending

    async def wait_for_learner(self) -> None:
        """Holds a caller while the learner is more than MAX_LAG transitions behind."""
        while self.worker.pending >= MAX_LAG:
            await asyncio.sleep(0.005)

    async def durable(self, sequence: int) -> None:
        """Returns once the log record `sequence` (and every one before it) is on disk: the
        moment to acknowledge it. Group commit off the event loop: one fsync in a thread covers
        every record appended before it began, and callers arriving meanwhile wait for the next
        one, so neither `Act` nor other feedback waits for the disk."""
        while self.wal.synced < sequence:
            if self._syncing is None or self._syncing.done():
                self._syncing = asyncio.ensure_future(asyncio.to_thread(self.wal.sync))
            await asyncio.shield(self._syncing)

    def drain(self, timeout: float | None = None) -> bool:
        """Waits until the learner has learned from everything acknowledged."""
        return self.worker.drain(timeout)

    # --- Serving --------------------------------------------------------------------------------

    def act(
        self,
        observation: np.ndarray,
        mask: np.ndarray | None,
        deterministic: bool,
        episode_id: str,
    ) -> OnlineDecision:
        """`observation` validated, shaped [1, ...]; `mask` [A] (request AND rules) or None."""
        with self.worker.acting() as actor:
            batch = actor.act(observation, None if mask is None else mask[None], deterministic)
        action: int | np.ndarray = (
            int(batch.actions[0]) if self.discrete else np.asarray(batch.actions[0], np.float32)
        )
        propensity = float(batch.propensities[0])
        event_id = ""
        if episode_id:
            record = {
                "type": "decision",
                "episode": episode_id,
                "observation": observation.reshape(-1).tolist(),
                "mask": None if mask is None else mask.tolist(),
                "action": action if isinstance(action, int) else action.tolist(),
                "propensity": propensity,
                "version": self.version,
            }
            sequence = self._append(record)
            event_id = str(sequence)
            record["event_id"] = event_id
            self._apply(record)
        return OnlineDecision(action, propensity, event_id, self.version)

    def feedback(
        self,
        episode_id: str,
        reward: float,
        terminated: bool,
        truncated: bool,
        next_observation: list[float],
        event_id: str,
        feedback_id: str,
        next_mask: list[bool],
    ) -> tuple[bool, int]:
        """(applied, log sequence); acknowledge it once `durable(sequence)` has returned (a
        retry of an id seen before returns the original's sequence, which may still be on its
        way to disk)."""
        if feedback_id and feedback_id in self.seen:
            return False, self.seen[feedback_id]
        episode = self.episodes.get(episode_id)
        if episode is None or episode.reward is not None:
            raise NotFound(
                f"policy {self.name!r} has no decision of episode {episode_id!r} awaiting "
                "feedback (Act with this episode_id first)"
            )
        if event_id and event_id != episode.event_id:
            raise FailedPrecondition(
                f"event {event_id!r} is not episode {episode_id!r}'s last decision "
                f"({episode.event_id!r})"
            )
        self._check_observation(next_observation, "next_observation", required=False)
        if truncated and not terminated and not next_observation:
            raise InvalidArgument(
                "a truncated episode needs its next_observation (learning bootstraps from it)"
            )
        self._check_mask(next_mask)
        record = {
            "type": "feedback",
            "episode": episode_id,
            "reward": float(reward),
            "terminated": terminated,
            "truncated": truncated,
            "next_observation": list(next_observation),
            "next_mask": list(next_mask) or None,
            "id": feedback_id,
        }
        sequence = self._log(record)
        if self.decision_log is not None:  # the decision this feedback completed
            self.decision_log.write(
                episode.version or self.version, episode_id, episode, reward, terminated, truncated
            )
        return True, sequence

    def update(self, transition: dict[str, Any]) -> tuple[bool, int]:
        """An explicit transition (fields as in the Transition message)."""
        identifier = str(transition.get("id", ""))
        if identifier and identifier in self.seen:
            return False, self.seen[identifier]
        self._check_observation(transition["observation"], "observation", required=True)
        self._check_observation(transition["next_observation"], "next_observation", required=True)
        record = {"type": "transition", **transition}
        return True, self._log(record)

    def close(self) -> None:
        self.worker.close()
        self.wal.close()
        if self.decision_log is not None:
            self.decision_log.close()
        if self._publisher is not None:
            self._publisher.join(timeout=60)

    # --- Applying records (live and in replay) --------------------------------------------------

    def _append(self, record: dict[str, Any]) -> int:
        before = self.wal.bytes_written
        sequence = self.wal.append(json.dumps(record).encode())
        self.metrics.wal_bytes.labels(self.name).inc(self.wal.bytes_written - before)
        return sequence

    def _log(self, record: dict[str, Any]) -> int:
        """Appends and applies a record; it is durable once `durable(sequence)` returns."""
        sequence = self._append(record)
        self._apply(record, sequence)
        self.updates_since_snapshot += 1
        if self.updates_since_snapshot >= self.snapshot_every:
            self.snapshot()
        return sequence

    def _apply(self, record: dict[str, Any], sequence: int = 0) -> None:
        kind = record["type"]
        if kind == "decision":
            episode = self.episodes.pop(record["episode"], None)
            if episode is not None and episode.reward is not None:  # s' arrives with this one
                self.awaiting -= 1
                self._observe(
                    record["episode"],
                    episode,
                    episode.reward,
                    record["observation"],
                    record["mask"],
                    record["action"],
                    False,
                    False,
                )
            self.episodes[record["episode"]] = Awaiting(
                record.get("event_id", str(sequence)),
                record["observation"],
                record["mask"],
                record["action"],
                record["propensity"],
                version=int(record.get("version", 0)),
            )
            while len(self.episodes) > MAX_EPISODES:
                _, forgotten = self.episodes.popitem(last=False)
                self.awaiting -= forgotten.reward is not None
            self.metrics.online_awaiting.labels(self.name).set(self.awaiting)
            return
        if kind == "feedback":
            episode = self.episodes[record["episode"]]
            done = record["terminated"] or record["truncated"]
            if record["next_observation"] or done:
                self._observe(
                    record["episode"],
                    episode,
                    record["reward"],
                    record["next_observation"] or episode.observation,
                    record["next_mask"],
                    None,
                    record["terminated"],
                    record["truncated"],
                )
                del self.episodes[record["episode"]]  # its next decision starts afresh
            else:
                episode.reward = record["reward"]
                self.awaiting += 1
                self.metrics.online_awaiting.labels(self.name).set(self.awaiting)
        elif kind == "transition":
            propensity = float(record.get("propensity") or 0.0)
            self._observe_batch(
                episode_key(f"#transition-{sequence}"),
                log_probability(propensity),
                record["observation"],
                record["action"],
                record["reward"],
                record["next_observation"],
                record.get("mask"),
                record.get("next_mask"),
                None,
                bool(record["terminated"]),
                bool(record["truncated"]),
            )
        identifier = record.get("id") or ""
        if identifier:
            self.seen[identifier] = sequence
            while len(self.seen) > MAX_IDS:
                self.seen.popitem(last=False)

    def _observe(
        self,
        episode_id: str,
        episode: Awaiting,
        reward: float,
        next_observation: list[float],
        next_mask: list[bool] | None,
        next_action: int | list[float] | None,
        terminated: bool,
        truncated: bool,
    ) -> None:
        self._observe_batch(
            episode_key(episode_id),
            log_probability(episode.propensity),
            episode.observation,
            episode.action,
            reward,
            next_observation,
            episode.mask,
            next_mask,
            next_action,
            terminated,
            truncated,
        )

    def _observe_batch(
        self,
        key: int,
        log_prob: float,
        observation: list[float],
        action: int | list[float],
        reward: float,
        next_observation: list[float],
        mask: list[bool] | None,
        next_mask: list[bool] | None,
        next_action: int | list[float] | None,
        terminated: bool,
        truncated: bool,
    ) -> None:
        shape = (1, -1)
        batch = TransitionBatch(
            observations=np.asarray(observation, np.float32).reshape(shape),
            actions=(
                np.asarray([action], np.int64)
                if self.discrete
                else np.asarray(action, np.float32).reshape(shape)
            ),
            rewards=np.asarray([reward], np.float32),
            next_observations=np.asarray(next_observation, np.float32).reshape(shape),
            terminated=np.asarray([terminated]),
            truncated=np.asarray([truncated]),
            action_masks=None if mask is None else np.asarray([mask], np.bool_),
            next_action_masks=None if next_mask is None else np.asarray([next_mask], np.bool_),
            next_actions=(
                np.asarray([-1 if next_action is None or terminated else next_action], np.int64)
                if self.discrete
                else None
            ),
            log_probs=np.asarray([log_prob], np.float32),
            episode_keys=np.asarray([key], np.int64),
        )
        self.worker.submit(batch)
        weight = 1.0 - 0.5 ** (1.0 / REWARD_HALF_LIFE)
        self.reward_mean += weight * (float(reward) - self.reward_mean)
        self.metrics.online_reward.labels(self.name).set(self.reward_mean)
        self.metrics.online_lag.labels(self.name).set(self.worker.pending)

    # --- Snapshots, publishing, recovery --------------------------------------------------------

    def snapshot(self, publish: bool = False) -> Future[None]:
        """Rolls the log and asks the learner for a snapshot at this log position; it is written
        (and the policy as it is then published as a new version) once the learner has learned
        from every transition logged so far. The future completes when the snapshot is durable
        and its publishing has started. `publish`: publish even if an earlier publish is still
        running (after it), as an explicit checkpoint must."""
        covered = self.wal.roll()
        online = {
            "wal_sequence": covered,
            "episodes": {k: v.to_json() for k, v in self.episodes.items()},
            "seen": list(self.seen.items()),
            "version": self.version,
            "reward_mean": self.reward_mean,
        }
        self.updates_since_snapshot = 0
        written: Future[None] = Future()

        def task(learner: Learner) -> None:
            try:
                self._write_snapshot(learner, online, publish)
            except BaseException as error:
                written.set_exception(error)
                raise
            written.set_result(None)

        self.worker.request(task)
        return written

    async def checkpoint(self) -> None:
        """A snapshot now, published as a new version: returns once both are done (the new
        version is `self.version` unless publishing failed, which the log explains)."""
        await asyncio.wrap_future(self.snapshot(publish=True))
        publisher = self._publisher
        if publisher is not None:
            await asyncio.to_thread(publisher.join)

    def _write_snapshot(self, learner: Learner, online: dict[str, Any], publish: bool) -> None:
        """In the learner's thread (inline for table learners): durable state, then the log
        segments it covers go."""
        covered = int(online["wal_sequence"])
        if publish and self._publisher is not None:
            self._publisher.join()
        self._start_publish(learner, covered)
        state = learner.state_dict()
        path = self.state_dir / f"snapshot-{covered:020d}.safetensors"
        save_checkpoint(LearnerState(state.tensors, {**state.meta, "online": online}), path)
        fsync_directory(self.state_dir)
        for old in sorted(self.state_dir.glob("snapshot-*.safetensors"))[:-2]:
            old.unlink()
        self.wal.drop_through(covered)
        self.metrics.online_snapshots.labels(self.name).inc()

    def _start_publish(self, learner: Learner, covered: int) -> None:
        """Exports the current policy as the next version of the policy in a worker thread (an
        ONNX export takes seconds; Act and Feedback go on meanwhile). One at a time: while one
        runs, later snapshots publish nothing."""
        if self._publisher is not None and self._publisher.is_alive():
            return
        frozen = FrozenPolicy.of(learner)
        training = {
            **self.manifest.training,
            "online": {"updates": learner.num_steps, "wal_sequence": covered},
        }

        def publish() -> None:
            try:
                path = export_artifact(
                    frozen,  # type: ignore[arg-type]
                    self.model_repo,
                    self.name,
                    self.manifest.env_id,
                    training,
                    safety=self.manifest.safety.to_json() or None,
                )
            except Exception:
                log.exception("publishing %s failed; learning goes on", self.name)
                return
            self.version = int(path.name)
            log.info(
                "published %s/%s after %d updates",
                self.name,
                path.name,
                training["online"]["updates"],
            )

        self._publisher = threading.Thread(target=publish, name=f"publish-{self.name}")
        self._publisher.start()

    def _recover(self) -> bool:
        """Latest snapshot + the log after it. Returns whether there was any state."""
        snapshots = sorted(self.state_dir.glob("snapshot-*.safetensors"))
        after = 0
        if snapshots:
            state = load_checkpoint(snapshots[-1])
            online = state.meta.pop("online")
            self.learner.load_state_dict(state)
            after = int(online["wal_sequence"])
            self.episodes = OrderedDict((k, Awaiting(**v)) for k, v in online["episodes"].items())
            self.awaiting = sum(e.reward is not None for e in self.episodes.values())
            self.seen = OrderedDict((k, int(v)) for k, v in online["seen"])
            self.version = max(self.version, int(online["version"]))
            self.reward_mean = float(online["reward_mean"])
        replayed = 0
        for sequence, payload in self.wal.replay(after):
            record = json.loads(payload)
            if record["type"] == "decision":
                record["event_id"] = str(sequence)
            self._apply(record, sequence)
            replayed += 1
        if snapshots or replayed:
            log.info(
                "%s: recovered from %s + %d log records",
                self.name,
                snapshots[-1].name if snapshots else "no snapshot",
                replayed,
            )
        return bool(snapshots) or replayed > 0

    # --- Validation -------------------------------------------------------------------------

    def _check_observation(self, values: list[float], field: str, required: bool) -> None:
        if not values:
            if required:
                raise InvalidArgument(f"{field} is required")
            return
        if len(values) != self.observation_size:
            raise InvalidArgument(
                f"{field} has {len(values)} values; policy {self.name!r} expects "
                f"{self.observation_size}"
            )
        if not np.isfinite(np.asarray(values, np.float64)).all():
            raise InvalidArgument(f"{field} has NaN or Inf")

    def _check_mask(self, mask: list[bool]) -> None:
        if mask and (not self.discrete or len(mask) != self.manifest.action_space.n):  # type: ignore[union-attr]
            raise InvalidArgument("next_action_mask needs one flag per discrete action")


def writable(path: Path) -> bool:
    return os.access(path, os.W_OK)

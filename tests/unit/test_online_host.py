"""service.online.host with a learner that learns in its own thread: the snapshots it takes while
feedback keeps coming match the log positions they name, so a restart (newest snapshot + the log
after it) rebuilds exactly the learner that was running; feedback waits while the learner is
too far behind."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from artifact_cases import untrained_policy

from agentserve.manifest import load_manifest
from service.metrics import Metrics
from service.online import host
from service.online.host import OnlinePolicy
from trainer.envs import make_env
from trainer.learner import TransitionBatch

SMALL = {
    "dqn": ("net_arch=[32, 32]", "learning_starts=50", "train_freq=2", "batch_size=16"),
    "ppo": ("net_arch=[32, 32]", "n_steps=64", "batch_size=32", "n_epochs=2"),
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """One untrained export per learner these tests use (exports take seconds), by algorithm:
    (its repository, its name)."""
    made = {}
    for algorithm, env_id, overrides in (
        ("dqn", "CartPole-v1", SMALL["dqn"]),
        ("ppo", "CartPole-v1", SMALL["ppo"]),
        ("ucb1", "agentserve/BernoulliBandit-v0", ()),
    ):
        repo = tmp_path_factory.mktemp(f"export-{algorithm}")
        made[algorithm] = (repo, untrained_policy(repo, algorithm, env_id, *overrides))
    return made


def fresh_repo(
    exports: dict[str, tuple[Path, str]], algorithm: str, tmp_path: Path
) -> tuple[Path, str]:
    """A model repository of this test's own holding the untrained `algorithm` as version 1."""
    source, name = exports[algorithm]
    repo = tmp_path / "models"
    shutil.copytree(source / name, repo / name)
    return repo, name


def drive(online: OnlinePolicy, steps: int, simulators: int = 3) -> None:
    """CartPole simulators taking turns: Act with an episode id, then Feedback."""
    envs = [make_env("CartPole-v1") for _ in range(simulators)]
    observations = [env.reset(seed=i)[0] for i, env in enumerate(envs)]
    episodes = [0] * simulators
    for step in range(steps):
        i = step % simulators
        episode = f"sim{i}-{episodes[i]}"
        observation = np.asarray(observations[i], np.float32)[None]
        decision = online.act(observation, None, deterministic=False, episode_id=episode)
        observations[i], reward, terminated, truncated, _ = envs[i].step(decision.action)
        online.feedback(
            episode,
            float(reward),
            bool(terminated),
            bool(truncated),
            list(map(float, observations[i])),
            decision.event_id,
            f"{episode}-{step}",
            [],
        )
        if terminated or truncated:
            episodes[i] += 1
            observations[i], _ = envs[i].reset()


@pytest.mark.parametrize("algorithm", sorted(SMALL))
def test_a_restart_rebuilds_the_learner_that_was_running(
    exports: dict[str, tuple[Path, str]], algorithm: str, tmp_path: Path
) -> None:
    repo, name = fresh_repo(exports, algorithm, tmp_path)
    manifest = load_manifest(repo / name / "1").manifest
    online = OnlinePolicy(manifest, tmp_path / "state", repo, Metrics(), snapshot_every=70)
    try:
        assert online.worker.background
        drive(online, 400)
        assert online.drain(timeout=120)
        running = online.learner.state_dict()
    finally:
        online.close()
    assert running.meta["num_updates"] > 0
    assert len(list((tmp_path / "state" / name).glob("snapshot-*"))) >= 1
    restarted = OnlinePolicy(manifest, tmp_path / "state", repo, Metrics(), snapshot_every=70)
    try:
        rebuilt = restarted.learner.state_dict()
    finally:
        restarted.close()
    assert rebuilt.meta["num_steps"] == running.meta["num_steps"] == 400
    assert rebuilt.tensors.keys() == running.tensors.keys()
    for key, value in rebuilt.tensors.items():
        np.testing.assert_array_equal(value, running.tensors[key], err_msg=key)


def test_feedback_waits_while_the_learner_is_too_far_behind(
    exports: dict[str, tuple[Path, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, name = fresh_repo(exports, "dqn", tmp_path)
    manifest = load_manifest(repo / name / "1").manifest
    monkeypatch.setattr(host, "MAX_LAG", 2)
    online = OnlinePolicy(manifest, tmp_path / "state", repo, Metrics())
    release = threading.Event()
    real_observe = online.learner.observe

    def stuck(batch: TransitionBatch) -> dict[str, float]:
        assert release.wait(timeout=60)
        return real_observe(batch)

    online.learner.observe = stuck  # type: ignore[method-assign]
    try:
        drive(online, 2, simulators=1)  # two transitions in hand (the first one stuck)
        assert online.lag == 2
        with pytest.raises(TimeoutError):
            asyncio.run(asyncio.wait_for(online.wait_for_learner(), timeout=0.5))
        release.set()
        asyncio.run(asyncio.wait_for(online.wait_for_learner(), timeout=30))
        assert online.drain(timeout=30)
    finally:
        release.set()
        online.close()


def test_a_decision_records_the_version_that_made_it(
    exports: dict[str, tuple[Path, str]], tmp_path: Path
) -> None:
    repo, name = fresh_repo(exports, "dqn", tmp_path)
    manifest = load_manifest(repo / name / "1").manifest
    online = OnlinePolicy(manifest, tmp_path / "state", repo, Metrics())
    observation = np.zeros((1, 4), np.float32)
    try:
        online.act(observation, None, deterministic=False, episode_id="early")
        online.version = 7  # as a publish does
        online.act(observation, None, deterministic=False, episode_id="late")
        assert (online.episodes["early"].version, online.episodes["late"].version) == (1, 7)
        online.wal.sync()
    finally:
        online.close()
    restarted = OnlinePolicy(manifest, tmp_path / "state", repo, Metrics())
    try:  # replayed from the log
        assert restarted.episodes["early"].version == 1
        assert restarted.episodes["late"].version == 7
    finally:
        restarted.close()


def test_acknowledgement_waits_for_the_disk_and_fsyncs_are_shared(
    exports: dict[str, tuple[Path, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`durable(n)` returns only after an fsync that covers record n, run off the event loop;
    feedback arriving while one fsync runs shares the next one (group commit)."""
    repo, name = fresh_repo(exports, "ucb1", tmp_path)
    manifest = load_manifest(repo / name / "1").manifest
    online = OnlinePolicy(manifest, tmp_path / "state", repo, Metrics())
    fsyncs: list[tuple[int, bool]] = []
    real_sync = online.wal.sync

    def recorded_sync() -> int:
        covered = real_sync()
        fsyncs.append((covered, threading.current_thread() is threading.main_thread()))
        return covered

    monkeypatch.setattr(online.wal, "sync", recorded_sync)
    observation = np.zeros((1, 1), np.float32)

    async def feedback_from(simulators: int) -> list[int]:
        sequences = []
        for i in range(simulators):
            online.act(observation, None, deterministic=False, episode_id=f"e{i}")
            _, sequence = online.feedback(f"e{i}", 1.0, True, False, [0.0], "", f"f{i}", [])
            assert online.wal.synced < sequence  # not yet on disk: not yet acknowledged
            sequences.append(sequence)
        await asyncio.gather(*(online.durable(s) for s in sequences))
        return sequences

    try:
        sequences = asyncio.run(feedback_from(8))
        assert online.wal.synced >= max(sequences)
        assert 1 <= len(fsyncs) <= 2  # eight acknowledgements, one or two fsyncs
        assert not any(on_loop for _, on_loop in fsyncs)  # never on the event loop's thread
    finally:
        online.close()


def test_a_checkpoint_of_a_learner_in_its_thread_is_written_and_published(
    exports: dict[str, tuple[Path, str]], tmp_path: Path
) -> None:
    """An explicit checkpoint (the admin service's) waits for the learner thread to write the
    snapshot and for the new version to be published, even right after another one."""
    repo, name = fresh_repo(exports, "dqn", tmp_path)
    manifest = load_manifest(repo / name / "1").manifest
    online = OnlinePolicy(manifest, tmp_path / "state", repo, Metrics(), snapshot_every=10**6)
    try:
        assert online.worker.background
        drive(online, 120)
        asyncio.run(online.checkpoint())
        assert online.version == 2
        assert (repo / name / "2").is_dir()
        assert len(list((tmp_path / "state" / name).glob("snapshot-*"))) == 1
        drive(online, 30)
        asyncio.run(online.checkpoint())  # publishes after the first, never skipped
        assert online.version == 3
    finally:
        online.close()

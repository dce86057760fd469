"""service.online.worker: a learner with networks learns in its own thread, in log order, while
acting goes on with a replica that follows it; tables and bandits learn inline."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
from learner_cases import SETUPS, make_learner, observations_and_masks, random_transitions

from service.online.worker import LearnerWorker
from trainer.core.numerics import flushing_denormals
from trainer.learner import Learner, TransitionBatch

WITH_NETWORKS = [s for s in SETUPS if make_learner(s).acting_modules()]
TABULAR = [s for s in SETUPS if s not in WITH_NETWORKS]


def worker_for(setup: str) -> LearnerWorker:
    return LearnerWorker(make_learner(setup), lambda: make_learner(setup, seed=99), setup)


def transitions(learner: Learner, count: int) -> list[TransitionBatch]:
    """Single transitions with episode keys (as the service hands them over)."""
    return [
        replace(b, episode_keys=np.array([i % 3], np.int64))
        for i, b in enumerate(random_transitions(learner, count, seed=2))
    ]


def test_every_neural_learner_learns_in_the_background_and_tables_inline() -> None:
    assert {"dqn", "ppo", "sac", "sac_discrete", "a2c", "reinforce"} <= set(WITH_NETWORKS)
    assert {"qlearning", "ucb1", "linucb"} <= set(TABULAR)
    for setup in TABULAR:
        worker = worker_for(setup)
        assert worker.actor is worker.learner  # the next decision sees every update


@pytest.mark.parametrize("setup", WITH_NETWORKS)
def test_the_replica_acts_as_the_learner_after_each_learning_step(setup: str) -> None:
    worker = worker_for(setup)
    worker.start()
    try:
        for batch in transitions(worker.learner, 300):
            worker.submit(batch)
        assert worker.drain(timeout=120)
    finally:
        worker.close()
    learner, actor = worker.learner, worker.actor
    assert learner.num_updates > 0
    assert (actor.num_steps, actor.num_updates) == (learner.num_steps, learner.num_updates)
    observations, masks = observations_and_masks(learner, 64, seed=3)
    np.testing.assert_array_equal(
        actor.act(observations, masks, deterministic=True).actions,
        learner.act(observations, masks, deterministic=True).actions,
    )


@pytest.mark.parametrize("setup", ["dqn", "ppo", "reinforce"])
def test_learning_in_the_thread_equals_learning_inline(setup: str) -> None:
    worker = worker_for(setup)
    inline = make_learner(setup)
    batches = transitions(inline, 200)
    worker.start()
    try:
        for batch in batches:
            worker.submit(batch)
        assert worker.drain(timeout=120)
    finally:
        worker.close()
    with flushing_denormals():  # as in the learner thread
        for batch in batches:
            inline.observe(batch)
    ours, theirs = worker.learner.state_dict(), inline.state_dict()
    assert ours.tensors.keys() == theirs.tensors.keys()
    for key, value in ours.tensors.items():
        np.testing.assert_array_equal(value, theirs.tensors[key], err_msg=key)


def test_acting_goes_on_while_the_learner_is_busy() -> None:
    """A learner stuck in the middle of learning (a long PPO update, a DQN train phase) does not
    hold up a decision; the decision comes from the replica."""
    worker = worker_for("dqn")
    learner = worker.learner
    inside, release = threading.Event(), threading.Event()
    real_observe = learner.observe

    def slow_observe(batch: TransitionBatch) -> dict[str, float]:
        inside.set()
        assert release.wait(timeout=60)
        return real_observe(batch)

    learner.observe = slow_observe  # type: ignore[method-assign]
    worker.start()
    try:
        worker.submit(transitions(learner, 1)[0])
        assert inside.wait(timeout=30)
        answered = threading.Event()
        observations, masks = observations_and_masks(learner, 1, seed=0)

        def decide() -> None:
            with worker.acting() as actor:
                actor.act(observations, masks, deterministic=False)
            answered.set()

        threading.Thread(target=decide, daemon=True).start()
        assert answered.wait(timeout=30), "a decision waited for the learner"
        assert worker.pending == 1
    finally:
        release.set()
        assert worker.drain(timeout=30)
        worker.close()
    assert learner.num_steps == 1


def test_a_task_runs_between_the_transitions_submitted_before_and_after_it() -> None:
    worker = worker_for("dqn")
    seen: list[int] = []
    batches = transitions(worker.learner, 40)
    worker.start()
    try:
        for i, batch in enumerate(batches):
            worker.submit(batch)
            if i in (9, 29):
                worker.request(lambda learner: seen.append(learner.num_steps))
        assert worker.drain(timeout=60)
    finally:
        worker.close()
    assert seen == [10, 30]


def test_a_failing_transition_is_logged_and_learning_goes_on() -> None:
    worker = worker_for("dqn")
    batches = transitions(worker.learner, 5)
    broken = replace(batches[2], observations=np.zeros((1, 99), np.float32))
    worker.start()
    try:
        for batch in [*batches[:2], broken, *batches[3:]]:
            worker.submit(batch)
        assert worker.drain(timeout=60)
    finally:
        worker.close()
    assert worker.errors == 1
    assert worker.learner.num_steps == 4

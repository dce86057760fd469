"""The mask guarantee, property-tested: for every discrete algorithm of the registry, in training
(`Learner.act`) and in every runtime that serves its artifact (`ServedPolicy.decide`), a random
observation with a random non-empty mask — alone, or ANDed with a safety rule — never yields a
masked action, greedy or sampled, over many draws."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from learner_cases import SETUPS, is_discrete, make_learner, num_actions, run_steps

from agentserve.manifest import load_manifest
from service.errors import FailedPrecondition
from service.policy import ServedPolicy
from trainer.export import default_policy_name, export_artifact, random_observations
from trainer.learner import Learner

DRAWS = 60
DISCRETE_SETUPS = [setup for setup in SETUPS if is_discrete(setup)]


@dataclass(frozen=True)
class Served:
    learner: Learner
    policies: dict[str, ServedPolicy]
    """Runtime name -> the artifact served by that runtime."""
    guarded: ServedPolicy
    """The artifact (preferred runtime) with a rule forbidding action 0 where feature 0 >= its
    middle value."""


@pytest.fixture(scope="module", params=DISCRETE_SETUPS)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Served:
    learner = make_learner(request.param)
    run_steps(learner, 200)
    env_id = SETUPS[request.param].env_id
    repo = tmp_path_factory.mktemp(f"guarantee-{request.param.replace('/', '-')}")
    path = export_artifact(
        learner, repo, default_policy_name(env_id, learner.algorithm), env_id, {}
    )
    artifact = load_manifest(path)
    policies = {name: ServedPolicy(artifact, name) for name in artifact.manifest.runtimes}
    middle = float(
        random_observations(learner.observation_space, 1000, np.random.default_rng(0))
        .reshape(1000, -1)[:, 0]
        .mean()
    )
    rule = {"name": "no-zero", "when": {"feature": 0, "op": ">=", "value": middle}, "forbid": [0]}
    guarded = ServedPolicy(artifact, safety_config={"rules": [rule]})
    return Served(learner, policies, guarded)


def draw_case(data: st.DataObject, learner: Learner) -> tuple[np.ndarray, np.ndarray]:
    n = num_actions(learner)
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n).filter(any)))
    seed = data.draw(st.integers(0, 2**32 - 1))
    observation = random_observations(learner.observation_space, 1, np.random.default_rng(seed))
    return observation, mask


SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(data=st.data())
def test_learner_act_never_returns_a_masked_action(served: Served, data: st.DataObject) -> None:
    observation, mask = draw_case(data, served.learner)
    observations = np.repeat(observation, DRAWS, axis=0)
    masks = np.repeat(mask[None], DRAWS, axis=0)
    for deterministic in (True, False):
        actions = served.learner.act(observations, masks, deterministic).actions
        assert mask[np.asarray(actions, dtype=np.int64)].all()


@SETTINGS
@given(data=st.data())
def test_every_runtime_never_serves_a_masked_action(served: Served, data: st.DataObject) -> None:
    observation, mask = draw_case(data, served.learner)
    flat = observation.reshape(-1).tolist()
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    for runtime, policy in served.policies.items():
        greedy = policy.decide(flat, mask.tolist(), True, rng)
        assert mask[greedy.action], runtime
        for _ in range(DRAWS):
            assert mask[policy.decide(flat, mask.tolist(), False, rng).action], runtime


@SETTINGS
@given(data=st.data())
def test_request_mask_and_rule_together_are_never_violated(
    served: Served, data: st.DataObject
) -> None:
    observation, mask = draw_case(data, served.learner)
    flat = observation.reshape(-1).tolist()
    allowed = mask.copy()
    fires = bool(served.guarded.safety.verdict(observation.reshape(-1), len(mask)).fired)
    if fires:
        allowed[0] = False
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    if not allowed.any():
        with pytest.raises(FailedPrecondition):
            served.guarded.decide(flat, mask.tolist(), True, rng)
        return
    for deterministic in (True, False):
        for _ in range(1 if deterministic else DRAWS):
            assert allowed[served.guarded.decide(flat, mask.tolist(), deterministic, rng).action]


def test_every_discrete_algorithm_is_covered() -> None:
    from trainer import registry

    covered = {SETUPS[setup].algorithm for setup in DISCRETE_SETUPS}
    discrete = {name for name in registry.names() if "discrete" in registry.get(name).action_spaces}
    assert discrete <= covered

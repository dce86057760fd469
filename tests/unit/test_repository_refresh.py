"""PolicyRepository.refresh / apply: new versions appear, broken ones are reported once while
the old keep serving, removed ones go, and pins choose the serving default."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from artifact_cases import publish_copy

from agentserve.errors import ConfigError
from service.metrics import Metrics
from service.repository import PolicyRepository
from service.server import default_model_repo

CARTPOLE = "cartpole-dqn"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(default_model_repo() / CARTPOLE, root / CARTPOLE)
    return root


def value(metrics: Metrics, name: str, **labels: str) -> float:
    sample = metrics.registry.get_sample_value(name, labels)
    return 0.0 if sample is None else sample


def test_a_new_version_is_loaded_and_becomes_the_default(repo: Path) -> None:
    metrics = Metrics()
    repository = PolicyRepository(repo, metrics)
    assert repository.load() == []
    old = repository.get(CARTPOLE)
    publish_copy(repo, CARTPOLE, 2)
    refresh = repository.refresh()
    assert repository.get(CARTPOLE) is old  # nothing changes before apply
    assert [p.version for p in refresh.loaded] == [2] and refresh.removed == ()
    assert repository.apply(refresh) == []
    assert repository.get(CARTPOLE).version == 2 and repository.get(CARTPOLE, 1) is old
    assert value(metrics, "agentserve_policy_reloads_total", policy=CARTPOLE) == 1
    assert value(metrics, "agentserve_policy_default_version", policy=CARTPOLE) == 2
    assert repository.refresh().loaded == ()  # nothing new


def test_a_broken_version_is_reported_once_and_the_old_keeps_serving(repo: Path) -> None:
    metrics = Metrics()
    repository = PolicyRepository(repo, metrics)
    repository.load()
    broken = publish_copy(repo, CARTPOLE, 2, broken=True)
    (failure,) = repository.apply(repository.refresh())
    assert (failure.policy, failure.version) == (CARTPOLE, "2") and "sha256" in failure.reason
    assert repository.get(CARTPOLE).version == 1
    assert repository.apply(repository.refresh()) == []  # unchanged: not retried, not re-reported
    assert value(metrics, "agentserve_policy_load_failures_total", policy=CARTPOLE) == 1
    shutil.rmtree(broken)
    publish_copy(repo, CARTPOLE, 2)  # fixed: a new manifest, so it is tried again
    assert repository.apply(repository.refresh()) == []
    assert repository.get(CARTPOLE).version == 2


def test_a_removed_version_is_unloaded(repo: Path) -> None:
    metrics = Metrics()
    repository = PolicyRepository(repo, metrics)
    repository.load()
    second = publish_copy(repo, CARTPOLE, 2)
    repository.apply(repository.refresh())
    shutil.rmtree(second)
    refresh = repository.refresh()
    assert refresh.removed == ((CARTPOLE, 2),)
    repository.apply(refresh)
    assert repository.versions(CARTPOLE) == [1]
    assert value(metrics, "agentserve_policy_unloads_total", policy=CARTPOLE) == 1


def test_pins_choose_the_default_and_follow_the_file(repo: Path, tmp_path: Path) -> None:
    publish_copy(repo, CARTPOLE, 2)
    pins = tmp_path / "pins.yaml"
    pins.write_text(f"{CARTPOLE}: 1\n")
    repository = PolicyRepository(repo, Metrics(), pins_file=pins)
    repository.load()
    assert repository.get(CARTPOLE).version == 1  # rollback by pin
    assert repository.get(CARTPOLE, 2).version == 2
    pins.write_text("{}\n")
    repository.apply(repository.refresh())
    assert repository.get(CARTPOLE).version == 2
    pins.write_text(f"{CARTPOLE}: 7\n")  # not loaded: the highest serves (and the pin waits)
    repository.apply(repository.refresh())
    assert repository.get(CARTPOLE).version == 2
    pins.write_text("not: [a, mapping of versions]\n")
    repository.apply(repository.refresh())  # logged, the previous pins stay
    assert repository.pins == {CARTPOLE: 7}


def test_an_invalid_pins_file_stops_the_start(repo: Path, tmp_path: Path) -> None:
    pins = tmp_path / "pins.yaml"
    pins.write_text(f"{CARTPOLE}: latest\n")
    with pytest.raises(ConfigError, match="positive version integers"):
        PolicyRepository(repo, Metrics(), pins_file=pins)

"""trainer.core.config: presets, overrides and typed config building."""

from __future__ import annotations

from typing import Any

import pytest

from agentserve.errors import ConfigError
from trainer.algos.dqn import DQNConfig
from trainer.algos.qlearning import QLearningConfig
from trainer.core.config import (
    build_config,
    config_to_json,
    describe,
    load_preset,
    parse_override,
    resolve,
)


def test_dqn_cartpole_preset() -> None:
    spec = resolve("dqn", DQNConfig, "CartPole-v1", [])
    config = spec.config
    assert isinstance(config, DQNConfig)
    assert config.learning_rate == pytest.approx(1e-3)  # zoo: 2.3e-3 (see the preset)
    assert config.net_arch == [256, 256]
    assert config.batch_size == 64
    assert config.train_freq == 256
    assert config.double_q is False  # the dataclass default: the preset does not set it
    assert spec.timesteps == 50_000
    assert spec.env_kwargs == {}


def test_override_wins_over_preset() -> None:
    spec = resolve("dqn", DQNConfig, "CartPole-v1", ["learning_rate=0.001", "net_arch=[64]"])
    assert spec.config.learning_rate == pytest.approx(1e-3)
    assert spec.config.net_arch == [64]
    assert spec.config.batch_size == 64  # untouched preset values stay


def test_override_in_exponent_notation() -> None:
    # The documented form `-p learning_rate=1e-3` (see parse_override's docstring).
    spec = resolve("dqn", DQNConfig, "CartPole-v1", ["learning_rate=1e-3"])
    assert spec.config.learning_rate == pytest.approx(1e-3)


def test_later_override_wins() -> None:
    spec = resolve("dqn", DQNConfig, "CartPole-v1", ["batch_size=8", "batch_size=16"])
    assert spec.config.batch_size == 16


def test_env_section_overrides_default_section() -> None:
    preset = load_preset("qlearning")
    assert preset["default"]["learning_rate"] == 0.1
    spec = resolve("qlearning", QLearningConfig, "agentserve/GridWorld-v0", [])
    assert spec.config.learning_rate == 0.5  # env section beats default section
    assert spec.config.gamma == 0.99  # from the default section
    assert spec.config.initial_q == 0.0  # dataclass default
    assert spec.timesteps == 20_000


def test_unknown_env_uses_default_section_only() -> None:
    spec = resolve("qlearning", QLearningConfig, "Taxi-v3", [])
    assert spec.config.learning_rate == 0.1
    assert spec.config.exploration_fraction == QLearningConfig().exploration_fraction
    assert spec.timesteps is None
    assert spec.env_kwargs == {}


def test_reserved_keys_are_taken_out() -> None:
    spec = resolve("qlearning", QLearningConfig, "FrozenLake-v1", [])
    assert spec.timesteps == 200_000
    assert spec.env_kwargs == {"is_slippery": True}
    assert spec.config.learning_rate == pytest.approx(0.05)
    hyperparameters = config_to_json(spec.config)
    assert "timesteps" not in hyperparameters
    assert "env_kwargs" not in hyperparameters


def test_reserved_keys_can_be_overridden() -> None:
    spec = resolve(
        "qlearning",
        QLearningConfig,
        "FrozenLake-v1",
        ["timesteps=500", "env_kwargs={is_slippery: false}"],
    )
    assert spec.timesteps == 500
    assert spec.env_kwargs == {"is_slippery": False}


def test_env_kwargs_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="env_kwargs"):
        resolve("qlearning", QLearningConfig, "FrozenLake-v1", ["env_kwargs=[1, 2]"])


def test_bad_timesteps_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="timesteps"):
        resolve("qlearning", QLearningConfig, "FrozenLake-v1", ["timesteps=abc"])


def test_no_preset_file_means_dataclass_defaults() -> None:
    assert load_preset("no-such-algorithm") == {}
    spec = resolve("no-such-algorithm", QLearningConfig, "FrozenLake-v1", [])
    assert spec.config == QLearningConfig()
    assert spec.timesteps is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gamma=0.9", ("gamma", 0.9)),
        ("double_q=true", ("double_q", True)),
        ("net_arch=[64, 64]", ("net_arch", [64, 64])),
        (" batch_size = 32", ("batch_size", 32)),
        ("name=a=b", ("name", "a=b")),
        ("initial_q=", ("initial_q", None)),
    ],
)
def test_parse_override(text: str, expected: tuple[str, Any]) -> None:
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["noequals", "", "=5", "  =5"])
def test_parse_override_needs_key_equals_value(text: str) -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_override(text)


def test_parse_override_unreadable_value() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        parse_override("net_arch=[64,")


def test_unknown_hyperparameter_is_named() -> None:
    with pytest.raises(ConfigError, match="learnig_rate") as error:
        resolve("dqn", DQNConfig, "CartPole-v1", ["learnig_rate=0.1"])
    assert "learning_rate" in str(error.value)  # lists the known names as a hint


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("batch_size=abc", "batch_size"),
        ("batch_size=1.5", "batch_size"),
        ("batch_size=true", "batch_size"),
        ("double_q=3", "double_q"),
        ("double_q=yes_please", "double_q"),
        ("learning_rate=fast", "learning_rate"),
        ("learning_rate=false", "learning_rate"),
        ("net_arch=64", "net_arch"),
        ("net_arch=[64, x]", "net_arch"),
        ("net_arch=[64.5]", "net_arch"),
    ],
)
def test_wrong_type_is_a_config_error(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        resolve("dqn", DQNConfig, "CartPole-v1", [override])


def test_int_is_accepted_for_float_and_integral_float_for_int() -> None:
    spec = resolve("dqn", DQNConfig, "CartPole-v1", ["max_grad_norm=5", "batch_size=32.0"])
    assert spec.config.max_grad_norm == 5.0
    assert isinstance(spec.config.max_grad_norm, float)
    assert spec.config.batch_size == 32
    assert isinstance(spec.config.batch_size, int)


def test_validate_runs_after_building() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        build_config(DQNConfig, {"batch_size": 64, "buffer_size": 10})
    with pytest.raises(ConfigError, match="learning_rate"):
        resolve("qlearning", QLearningConfig, "agentserve/GridWorld-v0", ["learning_rate=2"])


def test_describe_documents_fields_inherited_from_a_base_config() -> None:
    from trainer.algos.ppo import PPOConfig

    docs = {field.name: field.doc for field in describe(PPOConfig)}
    assert "running mean and variance" in docs["normalize_observations"]
    assert docs["log_std_init"] and docs["n_steps"]

"""The side-by-side speed comparison: our runs stop at the threshold with honest clocks, every
config field maps onto Stable-Baselines3's arguments (or fails clearly), and the ratios and
verdicts follow the documented rules."""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any

import pytest

from agentserve.errors import ConfigError
from trainer import registry
from trainer.core.config import resolve
from trainer.speed import (
    CASES,
    MAPPINGS,
    LinearSchedule,
    Outcome,
    SpeedCase,
    map_config,
    ratio,
    run_ours,
    sb3_setup,
    select,
    summarize,
)

TINY = SpeedCase("dqn", "CartPole-v1", 30.0, 4_000, 1_000, "DQN")


def test_our_run_stops_at_the_first_evaluation_over_the_threshold() -> None:
    outcome = run_ours(TINY, seed=0)
    assert outcome.steps_to_threshold is not None
    assert outcome.steps_to_threshold % TINY.eval_freq == 0
    assert outcome.steps == outcome.steps_to_threshold  # stopped there
    assert outcome.seconds_to_threshold is not None
    assert 0 < outcome.seconds_to_threshold <= outcome.train_seconds + 1e-6
    assert outcome.curve[-1][0] == outcome.steps_to_threshold


def test_unreachable_threshold_runs_the_whole_budget() -> None:
    outcome = run_ours(SpeedCase("dqn", "CartPole-v1", 10_000.0, 1_500, 500, "DQN"), seed=0)
    assert outcome.steps_to_threshold is None and outcome.seconds_to_threshold is None
    assert outcome.steps == 1_500


def test_steps_per_second() -> None:
    assert Outcome(None, None, 1_000, 2.0).steps_per_second == 500.0


def test_outcome_round_trips_through_json() -> None:
    outcome = Outcome(2_500, 1.5, 2_500, 1.5, ((2_500, 480.0, 1.5),))
    assert Outcome.from_json(outcome.to_json()) == outcome


def _case(algorithm: str) -> SpeedCase:
    case = next((c for c in CASES if c.algorithm == algorithm), None)
    assert case is not None
    assert algorithm in registry.names()
    return case


@pytest.mark.parametrize("algorithm", ["dqn", "ppo", "sac"])
def test_every_config_field_has_a_rule(algorithm: str) -> None:
    case = _case(algorithm)
    fields = {f.name for f in dataclasses.fields(registry.get(case.algorithm).config_class)}
    assert fields <= set(MAPPINGS[algorithm]), fields - set(MAPPINGS[algorithm])


def test_dqn_preset_maps_field_by_field() -> None:
    setup = sb3_setup(_case("dqn"))
    kwargs = setup.kwargs
    assert setup.n_envs == 1
    preset = resolve("dqn", registry.get("dqn").config_class, "CartPole-v1", []).config
    assert kwargs["learning_rate"] == pytest.approx(preset.learning_rate)
    assert kwargs["train_freq"] == 256 and kwargs["gradient_steps"] == 128
    assert kwargs["target_update_interval"] == 10
    assert kwargs["exploration_fraction"] == pytest.approx(0.16)
    assert kwargs["policy_kwargs"] == {"net_arch": [256, 256]}
    assert kwargs["n_steps"] == 1
    assert "total_timesteps" not in kwargs and "double_q" not in kwargs


def test_ppo_preset_maps_schedules_networks_and_envs() -> None:
    import torch

    setup = sb3_setup(_case("ppo"))
    kwargs = setup.kwargs
    assert setup.n_envs == 8  # the preset's lockstep envs
    assert isinstance(kwargs["learning_rate"], LinearSchedule)
    assert kwargs["learning_rate"](1.0) == pytest.approx(1e-3)
    assert kwargs["learning_rate"](0.25) == pytest.approx(2.5e-4)
    assert kwargs["clip_range"] == LinearSchedule(0.2)
    assert (kwargs["n_steps"], kwargs["batch_size"], kwargs["n_epochs"]) == (32, 256, 20)
    assert (kwargs["gamma"], kwargs["gae_lambda"]) == (pytest.approx(0.98), pytest.approx(0.8))
    policy = kwargs["policy_kwargs"]
    assert policy["net_arch"] == {"pi": [64, 64], "vf": [64, 64]}
    assert policy["activation_fn"] is torch.nn.Tanh
    assert policy["optimizer_class"] is torch.optim.Adam
    assert policy["optimizer_kwargs"] == {"eps": pytest.approx(1e-5)}  # no RMSprop alpha


def test_sac_preset_maps_automatic_temperature() -> None:
    kwargs = sb3_setup(_case("sac")).kwargs
    assert kwargs["ent_coef"].startswith("auto")
    assert kwargs["target_entropy"] == "auto"
    assert isinstance(kwargs["policy_kwargs"]["net_arch"], list)


@pytest.mark.parametrize("algorithm", ["dqn", "ppo", "sac"])
def test_stable_baselines3_accepts_the_mapped_arguments(algorithm: str) -> None:
    """SB3 builds the model from them (no training)."""
    case = _case(algorithm)
    sb3 = pytest.importorskip("stable_baselines3")  # a benchmark-only extra
    from stable_baselines3.common.env_util import make_vec_env

    setup = sb3_setup(case)
    model_class = getattr(sb3, case.sb3_class)
    assert set(setup.kwargs) <= set(inspect.signature(model_class).parameters)
    env = make_vec_env(case.env_id, n_envs=setup.n_envs, seed=0, env_kwargs=setup.env_kwargs)
    try:
        model = model_class("MlpPolicy", env, seed=0, device="cpu", **setup.kwargs)
        assert model.gamma == pytest.approx(setup.kwargs["gamma"])
    finally:
        env.close()


def test_a_value_without_an_sb3_counterpart_is_refused() -> None:
    config = registry.get("dqn").config_class(double_q=True)
    with pytest.raises(ConfigError, match="double_q=True cannot be compared"):
        map_config("dqn", config)


def test_an_unmapped_field_or_algorithm_is_refused() -> None:
    @dataclasses.dataclass
    class Grown:
        learning_rate: float = 1e-3
        brand_new_knob: int = 3

    with pytest.raises(ConfigError, match="'brand_new_knob' has no Stable-Baselines3 mapping"):
        map_config("dqn", Grown())
    with pytest.raises(ConfigError, match="no Stable-Baselines3 mapping for 'a2c'"):
        map_config("a2c", Grown())


def test_select_by_substring() -> None:
    assert [c.algorithm for c in select(["CartPole"])] == ["dqn", "ppo"]
    assert select([]) == list(CASES)
    with pytest.raises(ConfigError, match="matches no speed case"):
        select(["nothing like this"])


def test_ratio_counts_a_missed_threshold_as_infinitely_slow() -> None:
    assert ratio(10.0, 20.0) == 0.5
    assert ratio(None, 20.0) == math.inf
    assert ratio(10.0, None) == 0.0
    assert ratio(None, None) is None


def _entry(ours: tuple[int | None, float | None], sb3: tuple[int | None, float | None]) -> Any:
    case = CASES[0]

    def outcome(steps: int | None, seconds: float | None) -> dict[str, Any]:
        return Outcome(steps, seconds, steps or case.budget, seconds or 100.0).to_json()

    return {
        "threshold": case.threshold,
        "budget": case.budget,
        "eval_freq": case.eval_freq,
        "agentserve": outcome(*ours),
        "sb3": outcome(*sb3),
    }


def test_summary_verdicts() -> None:
    case = CASES[0]
    met = summarize(
        case,
        {
            "0": _entry((20_000, 10.0), (25_000, 30.0)),
            "1": _entry((22_500, 12.0), (22_500, 30.0)),
            "2": _entry((None, None), (30_000, 40.0)),  # ours missed once: ratio inf
        },
    )
    assert met.seeds == (0, 1, 2)
    assert met.time_ratio == pytest.approx(0.4)  # median of 1/3, 0.4, inf
    assert met.steps_ratio == pytest.approx(1.0)  # median of 0.8, 1, inf
    assert met.steps["agentserve"] == 22_500
    assert met.verdict == "met" and met.met
    assert met.steps_signs == (1, 1, 1)  # fewer, equal, more (ours missed: more)

    slow = summarize(case, {"0": _entry((20_000, 20.0), (25_000, 30.0))})
    assert slow.verdict.startswith("missed: time ratio")
    more_steps = summarize(case, {"0": _entry((30_000, 10.0), (25_000, 30.0))})
    assert more_steps.verdict == "missed: more env steps than SB3"
    neither = summarize(case, {"0": _entry((None, None), (None, None))})
    assert neither.verdict.startswith("undecided")
    assert neither.steps_signs == (0, 0, 0)  # both missed: no information
    assert summarize(case, {}).verdict == "not run yet"


def test_entries_of_another_case_definition_are_left_out() -> None:
    stale = _entry((20_000, 10.0), (25_000, 30.0))
    stale["budget"] = 1_000
    assert summarize(CASES[0], {"0": stale}).verdict == "not run yet"


def test_sb3_run_evaluates_at_the_crossings_and_stops_at_the_threshold() -> None:
    pytest.importorskip("stable_baselines3")
    from trainer.speed import run_sb3

    case = SpeedCase("ppo", "CartPole-v1", 1.0, 4_000, 500, "PPO")  # any policy reaches 1
    outcome = run_sb3(case, seed=0)
    assert outcome.steps_to_threshold is not None
    assert case.eval_freq <= outcome.steps_to_threshold < case.eval_freq + 8  # 8 lockstep envs
    assert outcome.steps == outcome.steps_to_threshold
    assert [point[0] for point in outcome.curve] == [outcome.steps_to_threshold]

"""agentserve.safety: the rule language is parsed strictly (every error says where), evaluated
exactly, and written back unchanged."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentserve.errors import ManifestError
from agentserve.safety import MAX_DEPTH, SafetyPolicy, parse_safety
from agentserve.spaces import BoxSpec, DiscreteSpec

OBS = BoxSpec((4,), (-10.0,) * 4, (10.0,) * 4)
ACTIONS = DiscreteSpec(3)
BOX_ACTIONS = BoxSpec((2,), (-2.0, -2.0), (2.0, 2.0))


def rules(*items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"rules": list(items), **extra}


def observation(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_no_section_is_an_empty_policy() -> None:
    safety = parse_safety(None, OBS, ACTIONS)
    assert safety.empty and safety == SafetyPolicy()
    verdict = safety.verdict(observation(0, 0, 0, 0), 3)
    assert verdict.allowed.all() and verdict.fired == ()


@pytest.mark.parametrize(
    ("op", "value", "holds"),
    [
        ("<", 1.0, True),
        ("<=", 0.5, True),
        (">", 0.5, False),
        (">=", 0.5, True),
        ("==", 0.5, True),
        ("!=", 0.5, False),
        ("<", 0.5, False),
    ],
)
def test_comparisons(op: str, value: float, holds: bool) -> None:
    safety = parse_safety(
        rules({"name": "r", "when": {"feature": 1, "op": op, "value": value}, "forbid": [2]}),
        OBS,
        ACTIONS,
    )
    verdict = safety.verdict(observation(0, 0.5, 0, 0), 3)
    assert verdict.allowed.tolist() == [True, True, not holds]
    assert [f.rule for f in verdict.fired] == (["r"] if holds else [])


def test_ranges_combinators_and_feature_names() -> None:
    section = {
        "feature_names": ["x", "v", "angle", "spin"],
        "rules": [
            {
                "name": "edge",
                "when": {
                    "any": [
                        {"feature": "x", "between": [-10, -2]},
                        {
                            "all": [
                                {"feature": "x", "op": ">", "value": 2},
                                {"not": {"feature": "v", "op": "<=", "value": 0}},
                            ]
                        },
                    ]
                },
                "forbid": [0, 1],
            },
            {"name": "always", "forbid": [2]},
        ],
    }
    safety = parse_safety(section, OBS, ACTIONS)
    cases = {(-2.0, 0.0): True, (-1.9, 0.0): False, (3.0, 1.0): True, (3.0, -1.0): False}
    for (x, v), fires in cases.items():
        verdict = safety.verdict(observation(x, v, 0, 0), 3)
        assert [f.rule for f in verdict.fired] == (["edge", "always"] if fires else ["always"])
        assert verdict.allowed.tolist() == [not fires, not fires, False]
        assert verdict.fired[-1].forbidden_actions == (2,)


def test_json_round_trip_is_unchanged() -> None:
    section = rules(
        {"name": "a", "when": {"feature": 0, "op": "<", "value": 1}, "forbid": [0]},
        fallback_action=1,
    )
    original = copy.deepcopy(section)
    safety = parse_safety(section, OBS, ACTIONS)
    assert safety.to_json() == original
    assert parse_safety(safety.to_json(), OBS, ACTIONS) == safety


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ([], "safety: needs an object"),
        ({"rule": []}, "unknown field(s) ['rule']"),
        (rules({"name": "a", "forbid": []}), "safety.rules[0].forbid: list at least one action"),
        (rules({"name": "a", "forbid": [3]}), "action 3 is outside the action space"),
        (rules({"name": "a", "forbid": [1, 1]}), "action 1 is listed twice"),
        (rules({"name": "a", "forbid": [True]}), "actions are integers"),
        (rules({"forbid": [0]}), "safety.rules[0]: missing field(s) ['name']"),
        (rules({"name": "no spaces", "forbid": [0]}), "is not a rule name"),
        (rules({"name": "a", "forbid": [0]}, {"name": "a", "forbid": [1]}), "repeated: ['a']"),
        (
            rules({"name": "a", "when": {"feature": 4, "op": "<", "value": 0}, "forbid": [0]}),
            "safety.rules[0].when.feature: feature index 4 is outside the observation",
        ),
        (
            rules({"name": "a", "when": {"feature": "x", "op": "<", "value": 0}, "forbid": [0]}),
            "unknown feature name 'x'",
        ),
        (
            rules({"name": "a", "when": {"feature": 0, "op": "=<", "value": 0}, "forbid": [0]}),
            "safety.rules[0].when.op: unknown operator '=<'",
        ),
        (
            rules({"name": "a", "when": {"feature": 0, "op": "<", "value": "1"}, "forbid": [0]}),
            "safety.rules[0].when.value: needs a finite number",
        ),
        (
            rules(
                {
                    "name": "a",
                    "when": {"feature": 0, "op": "<", "value": float("nan")},
                    "forbid": [0],
                }
            ),
            "needs a finite number",
        ),
        (
            rules({"name": "a", "when": {"feature": 0, "between": [2, 1]}, "forbid": [0]}),
            "low 2.0 is above high 1.0",
        ),
        (rules({"name": "a", "when": {"all": []}, "forbid": [0]}), "needs at least one condition"),
        (
            rules(
                {
                    "name": "a",
                    "when": {"all": [{"feature": 0, "op": "<", "value": 0}], "x": 1},
                    "forbid": [0],
                }
            ),
            "unknown field(s) ['x']",
        ),
        (
            rules(
                {
                    "name": "a",
                    "when": {"feature": 0, "op": "<", "value": 0, "not": {}},
                    "forbid": [0],
                }
            ),
            "safety.rules[0].when: unknown field(s) ['feature', 'op', 'value']",
        ),
        (
            rules({"name": "a", "when": "obs[0] < 1", "forbid": [0]}),
            "a condition must be an object",
        ),
        ({"fallback_action": 3}, "safety.fallback_action: action 3 is outside 0..2"),
        ({"bounds": [{"name": "b"}]}, "bounds need continuous actions"),
        ({"feature_names": ["a", "b"]}, "needs 4 non-empty names"),
        ({"feature_names": ["a", "a", "b", "c"]}, "names must be unique"),
    ],
)
def test_invalid_sections_say_where_and_why(section: Any, message: str) -> None:
    with pytest.raises(ManifestError) as error:
        parse_safety(section, OBS, ACTIONS)
    assert message in str(error.value)


def test_nesting_is_bounded() -> None:
    condition: dict[str, Any] = {"feature": 0, "op": "<", "value": 0}
    for _ in range(MAX_DEPTH + 1):
        condition = {"not": condition}
    with pytest.raises(ManifestError, match="nest deeper"):
        parse_safety(rules({"name": "a", "when": condition, "forbid": [0]}), OBS, ACTIONS)


def test_rules_are_never_evaluated_as_code(tmp_path: Any) -> None:
    marker = tmp_path / "pwned"
    sneaky = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    for section in (
        rules({"name": "a", "when": {"feature": 0, "op": sneaky, "value": 0}, "forbid": [0]}),
        rules({"name": "a", "when": {"feature": sneaky, "op": "<", "value": 0}, "forbid": [0]}),
        rules({"name": "a", "when": {"feature": 0, "op": "<", "value": sneaky}, "forbid": [0]}),
    ):
        with pytest.raises(ManifestError):
            parse_safety(section, OBS, ACTIONS)
    assert not marker.exists()


def test_bounds_narrow_the_box_where_they_fire() -> None:
    section = {
        "bounds": [
            {
                "name": "gentle",
                "when": {"feature": 0, "op": ">", "value": 0},
                "low": [-1, None],
                "high": [1, 0.5],
            },
            {"name": "upper", "low": [None, -1.5], "high": [None, None]},
        ],
        "fallback_action": [0.0, 0.0],
    }
    safety = parse_safety(section, OBS, BOX_ACTIONS)
    low, high = np.full(2, -2, np.float32), np.full(2, 2, np.float32)
    fired = safety.action_bounds(observation(1, 0, 0, 0), low, high)
    assert fired.low.tolist() == [-1, -1.5] and fired.high.tolist() == [1, 0.5]
    assert [f.rule for f in fired.fired] == ["gentle", "upper"] and not fired.empty
    calm = safety.action_bounds(observation(-1, 0, 0, 0), low, high)
    assert calm.low.tolist() == [-2, -1.5] and calm.high.tolist() == [2, 2]
    assert safety.fallback_action == (0.0, 0.0)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"bounds": [{"name": "b", "low": [3, None]}]}, "dimension 0 has no action left"),
        ({"bounds": [{"name": "b", "low": [0]}]}, "needs 2 values"),
        ({"rules": [{"name": "r", "forbid": [0]}]}, "forbid rules need discrete actions"),
        ({"fallback_action": [0, 5]}, "lies outside the action space"),
        ({"fallback_action": 1}, "needs a list"),
    ],
)
def test_invalid_bounds(section: Any, message: str) -> None:
    with pytest.raises(ManifestError, match=message.replace("(", r"\(")):
        parse_safety(section, OBS, BOX_ACTIONS)


def test_combined_needs_both_and_keeps_names_unique() -> None:
    first = parse_safety(rules({"name": "a", "forbid": [0]}, fallback_action=2), OBS, ACTIONS)
    second = parse_safety(rules({"name": "b", "forbid": [1]}), OBS, ACTIONS)
    both = first.combined(second, "config")
    assert both.verdict(observation(0, 0, 0, 0), 3).allowed.tolist() == [False, False, True]
    assert both.fallback_action == 2
    assert first.combined(SafetyPolicy(), "config") is first
    with pytest.raises(ManifestError, match=r"config: rule names \['a'\] are defined twice"):
        first.combined(first, "config")


@given(
    st.lists(st.floats(-10, 10, width=32), min_size=4, max_size=4),
    st.floats(-10, 10, width=32),
)
def test_a_comparison_fires_exactly_where_it_holds(values: list[float], threshold: float) -> None:
    safety = parse_safety(
        rules({"name": "r", "when": {"feature": 3, "op": "<", "value": threshold}, "forbid": [1]}),
        OBS,
        ACTIONS,
    )
    obs = np.array(values, dtype=np.float32)
    verdict = safety.verdict(obs, 3)
    fires = float(obs[3]) < threshold
    assert bool(verdict.fired) == fires
    assert verdict.allowed[1] == (not fires) and verdict.allowed[[0, 2]].all()

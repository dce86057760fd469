"""agentserve.spaces: JSON round trips, parse errors and conversion from Gymnasium spaces."""

from __future__ import annotations

import json
import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentserve.errors import ManifestError
from agentserve.spaces import BoxSpec, DiscreteSpec, SpaceSpec, space_from_gym, space_from_json

INF = math.inf


def strict_json_round_trip(space: SpaceSpec) -> SpaceSpec:
    """to_json -> strict JSON text (no NaN/Infinity literals) -> space_from_json."""
    text = json.dumps(space.to_json(), allow_nan=False)
    return space_from_json(json.loads(text))


@pytest.mark.parametrize("n", [1, 2, 40, 10_000])
def test_discrete_round_trip(n: int) -> None:
    space = DiscreteSpec(n)
    assert space.to_json() == {"type": "discrete", "n": n}
    assert strict_json_round_trip(space) == space
    assert space.shape == ()
    assert space.flat_size == 1


def test_box_round_trip_with_infinite_bounds() -> None:
    space = BoxSpec((2, 2), (-INF, -1.5, 0.0, -INF), (INF, 1.5, 2.0, 3.0))
    data = space.to_json()
    assert data["low"] == ["-inf", -1.5, 0.0, "-inf"]
    assert data["high"] == ["inf", 1.5, 2.0, 3.0]
    assert data["shape"] == [2, 2]
    restored = strict_json_round_trip(space)
    assert restored == space
    assert isinstance(restored, BoxSpec)
    assert restored.flat_size == 4


def test_cartpole_box_round_trip() -> None:
    space = space_from_gym(gym.make("CartPole-v1").observation_space)
    assert strict_json_round_trip(space) == space


@given(
    st.lists(st.integers(1, 3), min_size=1, max_size=3).flatmap(
        lambda shape: st.tuples(
            st.just(tuple(shape)),
            st.lists(
                st.floats(allow_nan=False),
                min_size=math.prod(shape) * 2,
                max_size=math.prod(shape) * 2,
            ),
        )
    )
)
def test_box_round_trip_property(shape_and_bounds: tuple[tuple[int, ...], list[float]]) -> None:
    shape, bounds = shape_and_bounds
    size = math.prod(shape)
    space = BoxSpec(shape, tuple(bounds[:size]), tuple(bounds[size:]))
    assert strict_json_round_trip(space) == space


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("discrete", "JSON object"),
        ([{"type": "discrete", "n": 2}], "JSON object"),
        ({"type": "multidiscrete", "n": 2}, "unknown space type"),
        ({"n": 2}, "unknown space type"),
        ({"type": "discrete"}, "positive integer"),
        ({"type": "discrete", "n": 0}, "positive integer"),
        ({"type": "discrete", "n": -3}, "positive integer"),
        ({"type": "discrete", "n": 2.0}, "positive integer"),
        ({"type": "discrete", "n": "2"}, "positive integer"),
        ({"type": "discrete", "n": True}, "positive integer"),
        ({"type": "box", "shape": 4, "low": [0.0] * 4, "high": [1.0] * 4}, "dimensions"),
        ({"type": "box", "shape": [0], "low": [], "high": []}, "dimensions"),
        ({"type": "box", "shape": [2, -1], "low": [0.0], "high": [1.0]}, "dimensions"),
        ({"type": "box", "shape": [2.0], "low": [0.0] * 2, "high": [1.0] * 2}, "dimensions"),
        ({"type": "box", "shape": [True], "low": [0.0], "high": [1.0]}, "dimensions"),
        ({"type": "box", "low": [0.0], "high": [1.0]}, "dimensions"),
        ({"type": "box", "shape": [2], "low": [0.0], "high": [1.0, 1.0]}, "2 values"),
        ({"type": "box", "shape": [2], "low": [0.0] * 2, "high": [1.0] * 3}, "2 values"),
        ({"type": "box", "shape": [2, 2], "low": [0.0] * 2, "high": [1.0] * 2}, "4 values"),
        ({"type": "box", "shape": [1], "low": 0.0, "high": [1.0]}, "lists"),
        ({"type": "box", "shape": [1]}, "lists"),
        ({"type": "box", "shape": [1], "low": ["abc"], "high": [1.0]}, "not a number"),
        ({"type": "box", "shape": [1], "low": [None], "high": [1.0]}, "not a number"),
        ({"type": "box", "shape": [1], "low": [0.0], "high": [True]}, "not a number"),
        ({"type": "box", "shape": [1], "low": [0.0], "high": ["Infinity"]}, "not a number"),
    ],
)
def test_space_from_json_rejects(data: Any, fragment: str) -> None:
    with pytest.raises(ManifestError, match=fragment):
        space_from_json(data)


def test_space_from_gym_discrete() -> None:
    assert space_from_gym(gym.spaces.Discrete(7)) == DiscreteSpec(7)


def test_space_from_gym_discrete_must_start_at_zero() -> None:
    with pytest.raises(ManifestError, match="start at 0"):
        space_from_gym(gym.spaces.Discrete(3, start=1))


def test_space_from_gym_box() -> None:
    low = np.array([[-1.0, -INF, 0.0], [0.5, -2.0, -3.0]], dtype=np.float32)
    high = np.array([[1.0, INF, 1.0], [0.75, 2.0, INF]], dtype=np.float32)
    space = space_from_gym(gym.spaces.Box(low=low, high=high, dtype=np.float32))
    assert isinstance(space, BoxSpec)
    assert space.shape == (2, 3)
    assert space.flat_size == 6
    assert space.low == tuple(low.ravel().astype(np.float64))
    assert space.high == tuple(high.ravel().astype(np.float64))
    assert all(isinstance(v, float) for v in (*space.low, *space.high))


def test_space_from_gym_rejects_other_spaces() -> None:
    with pytest.raises(ManifestError, match="only Discrete and Box"):
        space_from_gym(gym.spaces.MultiDiscrete([2, 3]))

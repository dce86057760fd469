"""Observation and action spaces as plain JSON-able data (no pickle), shared by every part.

A space is either discrete (`n` choices, integer observations/actions in [0, n)) or a box (a
float32 array of fixed shape with per-element bounds). These mirror Gymnasium's `Discrete` and
`Box`, without importing Gymnasium, so the client and the manifest stay light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from agentserve.errors import ManifestError


@dataclass(frozen=True)
class DiscreteSpec:
    """`n` choices, 0 .. n-1."""

    n: int

    @property
    def shape(self) -> tuple[int, ...]:
        return ()

    @property
    def flat_size(self) -> int:
        """Floats an observation of this space takes on the wire."""
        return 1

    def to_json(self) -> dict[str, Any]:
        return {"type": "discrete", "n": self.n}


@dataclass(frozen=True)
class BoxSpec:
    """A float32 array of `shape`, bounded element-wise by `low` and `high` (flattened)."""

    shape: tuple[int, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    @property
    def flat_size(self) -> int:
        return math.prod(self.shape)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "box",
            "shape": list(self.shape),
            "low": [_json_float(v) for v in self.low],
            "high": [_json_float(v) for v in self.high],
        }


SpaceSpec = DiscreteSpec | BoxSpec


def _json_float(value: float) -> float | str:
    """JSON has no infinities: they travel as the strings "inf" / "-inf"."""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return float(value)


def _parse_float(value: object) -> float:
    if value in ("inf", "-inf"):
        return float(str(value))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ManifestError(f"bound {value!r} is not a number")


def space_from_json(data: object) -> SpaceSpec:
    """Parses a space written by `to_json`, with a clear error for anything else."""
    if not isinstance(data, dict):
        raise ManifestError("a space must be a JSON object")
    kind = data.get("type")
    if kind == "discrete":
        n = data.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ManifestError(f"discrete space needs a positive integer n, got {n!r}")
        return DiscreteSpec(n)
    if kind == "box":
        shape = data.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
        ):
            raise ManifestError(f"box space needs a list of positive dimensions, got {shape!r}")
        size = math.prod(shape)
        low, high = data.get("low"), data.get("high")
        if not isinstance(low, list) or not isinstance(high, list):
            raise ManifestError("box space needs `low` and `high` lists")
        if len(low) != size or len(high) != size:
            raise ManifestError(f"box bounds must have {size} values each")
        return BoxSpec(tuple(shape), tuple(map(_parse_float, low)), tuple(map(_parse_float, high)))
    raise ManifestError(f"unknown space type {kind!r} (expected 'discrete' or 'box')")


def space_from_gym(space: Any) -> SpaceSpec:
    """Converts a Gymnasium `Discrete` or `Box` (duck-typed, so Gymnasium stays optional)."""
    if hasattr(space, "n") and getattr(space, "shape", None) == ():
        if int(getattr(space, "start", 0)) != 0:
            raise ManifestError("Discrete spaces must start at 0")
        return DiscreteSpec(int(space.n))
    if hasattr(space, "low") and hasattr(space, "high"):
        low = np.asarray(space.low, dtype=np.float64).ravel()
        high = np.asarray(space.high, dtype=np.float64).ravel()
        return BoxSpec(tuple(int(d) for d in space.shape), tuple(low), tuple(high))
    raise ManifestError(f"unsupported space {space!r}: only Discrete and Box are served")

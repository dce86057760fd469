"""Declarative safety rules: conditions over observation features that forbid discrete actions or
narrow the bounds of continuous ones. Rules are data, never code: parsed and validated once (when
a policy loads), then evaluated with plain comparisons — nothing is ever passed to eval or exec.

JSON form (a manifest's `safety` section, or a policy's entry in the service's safety config)::

    {
      "feature_names": ["cart_position", "cart_velocity", "pole_angle", "pole_velocity"],
      "rules": [
        {"name": "left-edge", "when": {"feature": "cart_position", "op": "<", "value": -2.0},
         "forbid": [0]},
        {"name": "calm", "when": {"all": [{"feature": 2, "between": [-0.05, 0.05]},
                                          {"not": {"feature": 3, "op": ">", "value": 1.0}}]},
         "forbid": [1]}
      ],
      "bounds": [
        {"name": "gentle", "when": {"feature": 0, "op": ">", "value": 0.5},
         "low": [-1.0], "high": [1.0]}
      ],
      "fallback_action": 1
    }

- A condition is a comparison (`feature`, `op` one of < <= > >= == !=, finite `value`), a range
  (`feature`, `between: [low, high]`, both ends included), or `all` / `any` of conditions, or
  `not` of one. `feature` is an index into the flattened observation or a name from
  `feature_names`. A rule without `when` always applies.
- `rules` (discrete action spaces) forbid the listed actions in the states where `when` holds.
- `bounds` (continuous action spaces) clamp actions to tighter per-dimension bounds where `when`
  holds (`null` = the action space's own bound for that dimension).
- `fallback_action`: what to return when nothing is allowed (an action index, or a vector inside
  the action box). Without one, such a request fails (FAILED_PRECONDITION).

Every error names where it is (`safety.rules[1].when.all[0]: ...`).
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agentserve.errors import ConfigError, ManifestError
from agentserve.spaces import BoxSpec, DiscreteSpec, SpaceSpec

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
MAX_RULES = 1_000
MAX_DEPTH = 16
_RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Compare:
    feature: int
    op: str
    value: float

    def holds(self, observation: FloatArray) -> bool:
        return OPERATORS[self.op](float(observation[self.feature]), self.value)

    def to_json(self) -> dict[str, Any]:
        return {"feature": self.feature, "op": self.op, "value": self.value}


@dataclass(frozen=True)
class Between:
    feature: int
    low: float
    high: float

    def holds(self, observation: FloatArray) -> bool:
        return self.low <= float(observation[self.feature]) <= self.high

    def to_json(self) -> dict[str, Any]:
        return {"feature": self.feature, "between": [self.low, self.high]}


@dataclass(frozen=True)
class AllOf:
    conditions: tuple[Condition, ...]

    def holds(self, observation: FloatArray) -> bool:
        return all(c.holds(observation) for c in self.conditions)

    def to_json(self) -> dict[str, Any]:
        return {"all": [c.to_json() for c in self.conditions]}


@dataclass(frozen=True)
class AnyOf:
    conditions: tuple[Condition, ...]

    def holds(self, observation: FloatArray) -> bool:
        return any(c.holds(observation) for c in self.conditions)

    def to_json(self) -> dict[str, Any]:
        return {"any": [c.to_json() for c in self.conditions]}


@dataclass(frozen=True)
class Not:
    condition: Condition

    def holds(self, observation: FloatArray) -> bool:
        return not self.condition.holds(observation)

    def to_json(self) -> dict[str, Any]:
        return {"not": self.condition.to_json()}


@dataclass(frozen=True)
class Always:
    def holds(self, observation: FloatArray) -> bool:
        return True

    def to_json(self) -> None:
        return None


Condition = Compare | Between | AllOf | AnyOf | Not | Always


@dataclass(frozen=True)
class ForbidRule:
    name: str
    when: Condition
    forbid: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return _with_when(self.when, {"name": self.name, "forbid": list(self.forbid)})


@dataclass(frozen=True)
class BoundRule:
    name: str
    when: Condition
    low: tuple[float | None, ...]
    high: tuple[float | None, ...]

    def to_json(self) -> dict[str, Any]:
        return _with_when(
            self.when, {"name": self.name, "low": list(self.low), "high": list(self.high)}
        )


def _with_when(when: Condition, body: dict[str, Any]) -> dict[str, Any]:
    return body if isinstance(when, Always) else {**body, "when": when.to_json()}


@dataclass(frozen=True)
class Fired:
    """A rule whose condition held: the actions it forbade, or the bounds it imposed."""

    rule: str
    forbidden_actions: tuple[int, ...] = ()
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """The rules' verdict on one observation (discrete action spaces)."""

    allowed: BoolArray
    """[A] True where no fired rule forbids the action."""
    fired: tuple[Fired, ...]


@dataclass(frozen=True)
class Bounds:
    """The rules' bounds for one observation (continuous action spaces)."""

    low: FloatArray
    """[D] the action space's low, raised by every fired rule."""
    high: FloatArray
    fired: tuple[Fired, ...]

    @property
    def empty(self) -> bool:
        """Fired rules contradict each other: no action satisfies them all."""
        return bool(np.any(self.low > self.high))


@dataclass(frozen=True)
class SafetyPolicy:
    rules: tuple[ForbidRule, ...] = ()
    bounds: tuple[BoundRule, ...] = ()
    fallback_action: int | tuple[float, ...] | None = None
    feature_names: tuple[str, ...] = ()
    source: dict[str, Any] = field(default_factory=dict, compare=False)
    """The JSON it was parsed from (written back unchanged)."""

    @property
    def empty(self) -> bool:
        return not self.rules and not self.bounds and self.fallback_action is None

    @property
    def rule_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rules) + tuple(r.name for r in self.bounds)

    def verdict(self, observation: FloatArray, num_actions: int) -> Verdict:
        """Which actions the rules allow in this (flattened) observation."""
        allowed = np.ones(num_actions, dtype=np.bool_)
        fired: list[Fired] = []
        for rule in self.rules:
            if rule.when.holds(observation):
                allowed[list(rule.forbid)] = False
                fired.append(Fired(rule.name, forbidden_actions=rule.forbid))
        return Verdict(allowed, tuple(fired))

    def action_bounds(self, observation: FloatArray, low: FloatArray, high: FloatArray) -> Bounds:
        """The action box narrowed by every bound rule that fires in this observation."""
        low, high = low.astype(np.float32).copy(), high.astype(np.float32).copy()
        fired: list[Fired] = []
        for rule in self.bounds:
            if not rule.when.holds(observation):
                continue
            rule_low = np.array([-np.inf if v is None else v for v in rule.low], np.float32)
            rule_high = np.array([np.inf if v is None else v for v in rule.high], np.float32)
            np.maximum(low, rule_low, out=low)
            np.minimum(high, rule_high, out=high)
            fired.append(Fired(rule.name, low=tuple(rule_low), high=tuple(rule_high)))
        return Bounds(low, high, tuple(fired))

    def combined(self, other: SafetyPolicy, where: str) -> SafetyPolicy:
        """Both sets of rules (an action must pass both); `other`'s fallback wins if it has one.
        Rule names must stay unique."""
        if self.empty:
            return other
        if other.empty:
            return self
        clash = sorted(set(self.rule_names) & set(other.rule_names))
        if clash:
            raise ManifestError(f"{where}: rule names {clash} are defined twice")
        fallback = other.fallback_action
        return SafetyPolicy(
            self.rules + other.rules,
            self.bounds + other.bounds,
            self.fallback_action if fallback is None else fallback,
            self.feature_names,
            self.source,
        )

    def to_json(self) -> dict[str, Any]:
        return dict(self.source)


# --- Parsing ------------------------------------------------------------------------------------


def load_safety_file(path: Path) -> Any:
    """A safety section from a YAML or JSON file (validated later, against a policy's spaces)."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read safety file {path}: {error.strerror}") from None
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"safety file {path} is not valid YAML/JSON: {error}") from None


def parse_safety(
    data: object, observation_space: SpaceSpec, action_space: SpaceSpec, where: str = "safety"
) -> SafetyPolicy:
    """Validates `data` against the policy's spaces; raises ManifestError saying where and why."""
    if data is None:
        return SafetyPolicy()
    section = _object(data, where, {"feature_names", "rules", "bounds", "fallback_action"})
    size = 1 if isinstance(observation_space, DiscreteSpec) else observation_space.flat_size
    names = _feature_names(section.get("feature_names", []), size, f"{where}.feature_names")
    features = _FeatureIndex(names, size)
    rules_data = _list(section.get("rules", []), f"{where}.rules")
    bounds_data = _list(section.get("bounds", []), f"{where}.bounds")
    if len(rules_data) + len(bounds_data) > MAX_RULES:
        raise ManifestError(f"{where}: more than {MAX_RULES} rules")
    if rules_data and not isinstance(action_space, DiscreteSpec):
        raise ManifestError(f"{where}.rules: forbid rules need discrete actions (use bounds)")
    if bounds_data and not isinstance(action_space, BoxSpec):
        raise ManifestError(f"{where}.bounds: bounds need continuous actions (use rules)")
    rules = tuple(
        _forbid_rule(item, features, action_space, f"{where}.rules[{i}]")
        for i, item in enumerate(rules_data)
    )
    bounds = tuple(
        _bound_rule(item, features, action_space, f"{where}.bounds[{i}]")
        for i, item in enumerate(bounds_data)
    )
    all_names = [r.name for r in rules] + [r.name for r in bounds]
    duplicates = sorted({n for n in all_names if all_names.count(n) > 1})
    if duplicates:
        raise ManifestError(f"{where}: rule names must be unique; repeated: {duplicates}")
    fallback = _fallback(section.get("fallback_action"), action_space, f"{where}.fallback_action")
    return SafetyPolicy(rules, bounds, fallback, names, dict(section))


class _FeatureIndex:
    def __init__(self, names: tuple[str, ...], size: int) -> None:
        self.names = {name: i for i, name in enumerate(names)}
        self.size = size

    def resolve(self, value: object, where: str) -> int:
        if isinstance(value, str):
            if value not in self.names:
                known = ", ".join(self.names) or "none declared in feature_names"
                raise ManifestError(f"{where}: unknown feature name {value!r} (known: {known})")
            return self.names[value]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ManifestError(f"{where}: feature must be an index or a name, got {value!r}")
        if not 0 <= value < self.size:
            raise ManifestError(
                f"{where}: feature index {value} is outside the observation (size {self.size})"
            )
        return value


def _condition(data: object, features: _FeatureIndex, where: str, depth: int = 0) -> Condition:
    if depth > MAX_DEPTH:
        raise ManifestError(f"{where}: conditions nest deeper than {MAX_DEPTH}")
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: a condition must be an object, got {type(data).__name__}")
    for combinator, build in (("all", AllOf), ("any", AnyOf)):
        if combinator in data:
            _object(data, where, {combinator})
            items = _list(data[combinator], f"{where}.{combinator}")
            if not items:
                raise ManifestError(f"{where}.{combinator}: needs at least one condition")
            return build(
                tuple(
                    _condition(item, features, f"{where}.{combinator}[{i}]", depth + 1)
                    for i, item in enumerate(items)
                )
            )
    if "not" in data:
        _object(data, where, {"not"})
        return Not(_condition(data["not"], features, f"{where}.not", depth + 1))
    if "between" in data:
        _object(data, where, {"feature", "between"}, required={"feature"})
        pair = _list(data["between"], f"{where}.between")
        if len(pair) != 2:
            raise ManifestError(f"{where}.between: needs [low, high]")
        low, high = (_number(v, f"{where}.between") for v in pair)
        if low > high:
            raise ManifestError(f"{where}.between: low {low} is above high {high}")
        return Between(features.resolve(data["feature"], f"{where}.feature"), low, high)
    _object(data, where, {"feature", "op", "value"}, required={"feature", "op", "value"})
    op = data["op"]
    if op not in OPERATORS:
        raise ManifestError(f"{where}.op: unknown operator {op!r} (use {' '.join(OPERATORS)})")
    feature = features.resolve(data["feature"], f"{where}.feature")
    return Compare(feature, str(op), _number(data["value"], f"{where}.value"))


def _forbid_rule(
    data: object, features: _FeatureIndex, action_space: SpaceSpec, where: str
) -> ForbidRule:
    section = _object(data, where, {"name", "when", "forbid"}, required={"name", "forbid"})
    assert isinstance(action_space, DiscreteSpec)
    actions = _list(section["forbid"], f"{where}.forbid")
    if not actions:
        raise ManifestError(f"{where}.forbid: list at least one action")
    forbid: list[int] = []
    for action in actions:
        if isinstance(action, bool) or not isinstance(action, int):
            raise ManifestError(f"{where}.forbid: actions are integers, got {action!r}")
        if not 0 <= action < action_space.n:
            raise ManifestError(
                f"{where}.forbid: action {action} is outside the action space "
                f"(0..{action_space.n - 1})"
            )
        if action in forbid:
            raise ManifestError(f"{where}.forbid: action {action} is listed twice")
        forbid.append(action)
    return ForbidRule(_name(section["name"], where), _when(section, features, where), tuple(forbid))


def _bound_rule(
    data: object, features: _FeatureIndex, action_space: SpaceSpec, where: str
) -> BoundRule:
    section = _object(data, where, {"name", "when", "low", "high"}, required={"name"})
    assert isinstance(action_space, BoxSpec)
    size = action_space.flat_size
    space_low = np.asarray(action_space.low, dtype=np.float64).reshape(-1)
    space_high = np.asarray(action_space.high, dtype=np.float64).reshape(-1)
    sides: dict[str, tuple[float | None, ...]] = {}
    for side in ("low", "high"):
        values = _list(section.get(side, [None] * size), f"{where}.{side}")
        if len(values) != size:
            raise ManifestError(
                f"{where}.{side}: needs {size} values (one per action dimension, null = none)"
            )
        sides[side] = tuple(
            None if v is None else _number(v, f"{where}.{side}[{i}]") for i, v in enumerate(values)
        )
    for i, (low, high) in enumerate(zip(sides["low"], sides["high"], strict=True)):
        effective_low = space_low[i] if low is None else max(low, space_low[i])
        effective_high = space_high[i] if high is None else min(high, space_high[i])
        if effective_low > effective_high:
            raise ManifestError(
                f"{where}: dimension {i} has no action left between the rule's and the action "
                f"space's bounds ({effective_low} > {effective_high})"
            )
    return BoundRule(
        _name(section["name"], where), _when(section, features, where), sides["low"], sides["high"]
    )


def _when(section: dict[str, Any], features: _FeatureIndex, where: str) -> Condition:
    if "when" not in section or section["when"] is None:
        return Always()
    return _condition(section["when"], features, f"{where}.when")


def _fallback(value: object, action_space: SpaceSpec, where: str) -> int | tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(action_space, DiscreteSpec):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ManifestError(f"{where}: must be an action index, got {value!r}")
        if not 0 <= value < action_space.n:
            raise ManifestError(f"{where}: action {value} is outside 0..{action_space.n - 1}")
        return value
    assert isinstance(action_space, BoxSpec)
    values = tuple(_number(v, where) for v in _list(value, where))
    low = np.asarray(action_space.low, dtype=np.float64).reshape(-1)
    high = np.asarray(action_space.high, dtype=np.float64).reshape(-1)
    if len(values) != len(low):
        raise ManifestError(f"{where}: needs {len(low)} values, got {len(values)}")
    if np.any(np.asarray(values) < low) or np.any(np.asarray(values) > high):
        raise ManifestError(f"{where}: {list(values)} lies outside the action space")
    return values


def _feature_names(value: object, size: int, where: str) -> tuple[str, ...]:
    names = _list(value, where)
    if not names:
        return ()
    if len(names) != size or not all(isinstance(n, str) and n for n in names):
        raise ManifestError(f"{where}: needs {size} non-empty names, one per observation feature")
    if len(set(names)) != len(names):
        raise ManifestError(f"{where}: names must be unique")
    return tuple(str(n) for n in names)


def _name(value: object, where: str) -> str:
    if not isinstance(value, str) or not _RULE_NAME.fullmatch(value):
        raise ManifestError(
            f"{where}.name: {value!r} is not a rule name (1-64 letters, digits, '.', '_', '-')"
        )
    return value


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ManifestError(f"{where}: needs a finite number, got {value!r}")
    return float(value)


def _list(value: object, where: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise ManifestError(f"{where}: needs a list, got {type(value).__name__}")
    return value


def _object(
    value: object, where: str, allowed: set[str], required: set[str] | None = None
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: needs an object, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    missing = sorted((required or set()) - set(value))
    if missing:
        raise ManifestError(f"{where}: missing field(s) {missing}")
    return value

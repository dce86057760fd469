"""Typed algorithm configs, filled from YAML presets and `-p key=value` overrides.

Resolution order (later wins): the config dataclass's defaults, the preset's `default` section,
the preset's section for the env id, then command-line overrides. A preset section may also give
`timesteps` (the default budget), `env_kwargs` (passed to `gymnasium.make`) and `n_envs` (copies
of the env stepped in lockstep).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from agentserve.errors import ConfigError

RESERVED = ("timesteps", "env_kwargs", "n_envs")


@dataclass
class TrainSpec:
    """A resolved run: the algorithm config plus what the preset says about the run itself."""

    config: Any
    timesteps: int | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    n_envs: int = 1
    """Copies of the env stepped in lockstep by the offline loop."""


def load_preset(algorithm: str) -> dict[str, Any]:
    """The algorithm's preset file as a dict (empty if it has none)."""
    path = resources.files("trainer") / "presets" / f"{algorithm}.yaml"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"preset {algorithm}.yaml must be a mapping")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` with the value read as YAML (so 1e-3, true, [64, 64] work)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like key=value")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"override {text!r}: cannot read the value {raw!r}") from None
    return key.strip(), value


def _number(value: Any) -> float | None:
    """A float from a number or a numeric string (YAML 1.1 reads "1e-3" as a string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _coerce(name: str, annotation: Any, value: Any) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        number = _number(value)
        if number is not None and number.is_integer():
            return int(number)
    elif annotation is float:
        number = _number(value)
        if number is not None:
            return number
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin in (list, tuple):
        (item,) = set(typing.get_args(annotation)) - {Ellipsis}
        if isinstance(value, list | tuple):
            items = [_coerce(name, item, v) for v in value]
            return tuple(items) if origin is tuple else items
    elif origin in (types.UnionType, typing.Union) and value is None:
        return None
    elif origin in (types.UnionType, typing.Union):
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _coerce(name, inner, value)
    type_name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"{name}: expected {type_name}, got {value!r}")


def build_config(config_class: type[Any], values: dict[str, Any]) -> Any:
    """Instantiates the dataclass, checking names and types with clear messages."""
    hints = typing.get_type_hints(config_class)
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown hyperparameter(s) {', '.join(unknown)} for {config_class.__name__}; "
            f"known: {', '.join(sorted(known))}"
        )
    coerced = {k: _coerce(k, hints[k], v) for k, v in values.items()}
    config = config_class(**coerced)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config


def resolve(
    algorithm: str, config_class: type[Any], env_id: str, overrides: list[str]
) -> TrainSpec:
    preset = load_preset(algorithm)
    merged: dict[str, Any] = {}
    for section in (preset.get("default") or {}, preset.get(env_id) or {}):
        merged.update(section)
    merged.update(parse_override(o) for o in overrides)
    timesteps = merged.pop("timesteps", None)
    if timesteps is not None:
        timesteps = _coerce("timesteps", int, timesteps)
    n_envs = _coerce("n_envs", int, merged.pop("n_envs", 1))
    if n_envs < 1:
        raise ConfigError("n_envs must be >= 1")
    env_kwargs = merged.pop("env_kwargs", None) or {}
    if not isinstance(env_kwargs, dict):
        raise ConfigError("env_kwargs must be a mapping")
    return TrainSpec(
        config=build_config(config_class, merged),
        timesteps=timesteps,
        env_kwargs=env_kwargs,
        n_envs=n_envs,
    )


def config_to_json(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


@dataclass(frozen=True)
class FieldDoc:
    name: str
    type_name: str
    default: Any
    doc: str


def _field_docs(cls: type[Any]) -> dict[str, str]:
    """The docstrings written under the fields one class body declares."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for field_node, doc_node in itertools.pairwise(body):
        if (
            isinstance(field_node, ast.AnnAssign)
            and isinstance(field_node.target, ast.Name)
            and isinstance(doc_node, ast.Expr)
            and isinstance(doc_node.value, ast.Constant)
            and isinstance(doc_node.value.value, str)
        ):
            docs[field_node.target.id] = " ".join(doc_node.value.value.split())
    return docs


def describe(config_class: type[Any]) -> list[FieldDoc]:
    """Every hyperparameter with its type, default and the docstring written under it."""
    docs: dict[str, str] = {}
    # Base classes first, so a subclass's docstring for a field wins.
    for cls in reversed(config_class.__mro__):
        if dataclasses.is_dataclass(cls):
            docs.update(_field_docs(cls))
    hints = typing.get_type_hints(config_class)
    out = []
    for f in dataclasses.fields(config_class):
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        hint = hints[f.name]
        out.append(
            FieldDoc(f.name, getattr(hint, "__name__", str(hint)), default, docs.get(f.name, ""))
        )
    return out

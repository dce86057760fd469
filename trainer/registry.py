"""Algorithms registered by name: `@register` on a Learner subclass, `get("dqn")` to find it."""

from __future__ import annotations

from typing import TypeVar

from agentserve.errors import ConfigError
from trainer.learner import Learner

_REGISTRY: dict[str, type[Learner]] = {}
L = TypeVar("L", bound=type[Learner])


def register(cls: L) -> L:
    """Class decorator: makes the learner available under `cls.algorithm`."""
    name = cls.algorithm
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"algorithm {name!r} registered twice")
    _REGISTRY[name] = cls
    return cls


def _load_builtin() -> None:
    import trainer.algos  # noqa: F401  (registers every bundled algorithm)


def get(name: str) -> type[Learner]:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"unknown algorithm {name!r}; known: {known}") from None


def names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def learners() -> list[type[Learner]]:
    return [get(n) for n in names()]


__all__ = ["get", "learners", "names", "register"]

"""Schedules of a value over training progress."""

from __future__ import annotations


def linear(start: float, end: float, fraction: float, step: int, total_steps: int) -> float:
    """Moves from `start` to `end` over the first `fraction` of `total_steps`, then holds `end`."""
    if fraction <= 0 or total_steps <= 0:
        return end
    progress = min(1.0, step / (fraction * total_steps))
    return start + progress * (end - start)

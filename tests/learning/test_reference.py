"""Reference returns over several seeds (slow: `make learning`). The same rows as the reference
benchmark (`agentserve benchmark reference`), asserted instead of stored."""

from __future__ import annotations

import pytest

from trainer.reference import CHECKS, ReferenceCheck, run_check


def _timeout(check: ReferenceCheck) -> int:
    """A guard against hangs, not a speed bar: 30 minutes, more for the long budgets."""
    return max(1_800, check.timesteps // 50)


CASES = [
    pytest.param(
        check,
        seed,
        id=f"{check.label}-s{seed}".replace(" ", "-"),
        marks=pytest.mark.timeout(_timeout(check)),
    )
    for check in CHECKS
    for seed in check.seeds
]


@pytest.mark.slow
@pytest.mark.parametrize(("check", "seed"), CASES)
def test_reaches_reference(check: ReferenceCheck, seed: int) -> None:
    result = run_check(check, seed)
    assert result.passed, f"{check.label} seed {seed}: {result.score} < {check.bar}"

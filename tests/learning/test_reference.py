"""Reference returns over several seeds (slow: `make learning`)."""

from __future__ import annotations

import pytest

from trainer.reference import CHECKS, ReferenceCheck, run_check

CASES = [(check, seed) for check in CHECKS for seed in check.seeds]


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(
    ("check", "seed"), CASES, ids=[f"{c.label}-s{s}".replace(" ", "-") for c, s in CASES]
)
def test_reaches_reference(check: ReferenceCheck, seed: int) -> None:
    result = run_check(check, seed)
    assert result.passed, f"{check.label} seed {seed}: {result.score} < {check.bar}"

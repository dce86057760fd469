"""Test modules are imported by basename (pytest's default import mode, which the shared
helpers such as learner_cases rely on): two test files with one name in different folders would
stop the whole suite at collection. Keep them unique."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_names_are_unique() -> None:
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []

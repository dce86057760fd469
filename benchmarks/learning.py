"""Runs every reference learning check over its seeds; writes docs/learning-results.md and
docs/learning-curves.png.

    .venv/bin/python benchmarks/learning.py          (make bench-learning)
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from trainer.reference import CHECKS, ReferenceResult, run_check

DOCS = Path(__file__).resolve().parent.parent / "docs"


def fmt(values: list[float]) -> str:
    spread = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3g} ± {spread:.2g}"


def main() -> int:
    results: list[ReferenceResult] = []
    for check in CHECKS:
        for seed in check.seeds:
            result = run_check(check, seed)
            status = "ok" if result.passed else "MISSED"
            print(
                f"{check.label} seed {seed}: {result.score:.3f} (bar {check.bar:g}) {status} "
                f"in {result.run.wall_seconds:.0f} s",
                flush=True,
            )
            results.append(result)

    rows = [
        "| algorithm | env | metric | bar | seeds | best evaluation (mean ± std over seeds) "
        "| final evaluation | env steps | wall-clock per seed | passed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    figure, axes = plt.subplots(1, len(CHECKS), figsize=(5 * len(CHECKS), 3.6))
    for axis, check in zip(axes, CHECKS, strict=True):
        mine = [r for r in results if r.check is check]
        scores = [r.score for r in mine]
        finals = [
            (
                r.run.final_eval.success_rate
                if check.metric == "success_rate"
                else r.run.final_eval.mean
            )
            for r in mine
            if r.run.final_eval is not None
        ]
        rows.append(
            f"| {check.algorithm} | {check.env_id} | {check.metric} | {check.bar:g} "
            f"| {len(mine)} | {fmt(scores)} | {fmt(finals)} | {check.timesteps:,} "
            f"| {fmt([r.run.wall_seconds for r in mine])} s "
            f"| {sum(r.passed for r in mine)}/{len(mine)} |"
        )
        for r in mine:
            steps, means, _ = zip(*r.run.evaluations, strict=True)
            axis.plot(steps, means, label=f"seed {r.seed}")
        axis.axhline(
            check.bar if check.metric == "mean_return" else float("nan"), ls="--", c="gray"
        )
        axis.set_title(check.label, fontsize=10)
        axis.set_xlabel("environment steps")
        axis.set_ylabel("deterministic evaluation return")
        axis.legend(fontsize=8)
    figure.tight_layout()
    DOCS.mkdir(exist_ok=True)
    figure.savefig(DOCS / "learning-curves.png", dpi=110)
    text = [
        "# Learning results",
        "",
        "Written by `benchmarks/learning.py` (`make bench-learning`); do not edit by hand.",
        f"Run on {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, CPU only.",
        "",
        "Best evaluation = the best deterministic evaluation reached within the budget (the "
        "checkpoint that is exported); final = the evaluation at the end of the budget. "
        "success_rate = fraction of evaluation episodes that reach the goal.",
        "",
        *rows,
        "",
        "![evaluation curves](learning-curves.png)",
        "",
    ]
    (DOCS / "learning-results.md").write_text("\n".join(text), encoding="utf-8")
    print(f"wrote {DOCS / 'learning-results.md'}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Reproduces Sutton & Barto's figures 2.2 and 2.4 on the 10-armed testbed with the bandit
learners; checks the reference bars; writes docs/bandits.md, docs/bandits-average-reward.png,
docs/bandits-optimal-action.png and the numbers to docs/results/bandits.json, then re-renders
docs/benchmarks.md.

    .venv/bin/python benchmarks/bandits.py            (make bench-bandits)
    .venv/bin/python benchmarks/bandits.py --runs 500 --out /tmp/bandits   (a quicker look)

Exits 1 if a bar is missed (UCB c=2 and epsilon-greedy 0.1, mean reward over steps 500-1000).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from trainer import report as benchmarks_page
from trainer import results as store
from trainer.testbed import FIGURE_2_2, FIGURE_2_4, LATE_STEPS, METHODS, Curves, run_testbed

DOCS = Path(__file__).resolve().parent.parent / "docs"
COLORS = {"ε-greedy ε=0 (greedy)": "green", "ε-greedy ε=0.01": "red", "ε-greedy ε=0.1": "black"}


def plot(curves: dict[str, Curves], attribute: str, ylabel: str, path: Path) -> None:
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    panels = (("figure 2.2", FIGURE_2_2), ("figure 2.4", FIGURE_2_4))
    for axis, (title, methods) in zip(axes, panels, strict=True):
        for method in methods:
            values = getattr(curves[method.label], attribute)
            scale = 100.0 if attribute == "optimal_action" else 1.0
            steps = range(1, len(values) + 1)
            color = COLORS.get(method.label, "tab:blue")
            axis.plot(steps, values * scale, label=method.label, color=color, linewidth=0.9)
        axis.set_title(f"10-armed testbed, as Sutton & Barto {title}", fontsize=10)
        axis.set_xlabel("steps")
        axis.legend(fontsize=8)
    axes[0].set_ylabel(ylabel)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DOCS, help="folder for the report and PNGs")
    args = parser.parse_args()
    if args.steps < LATE_STEPS[1] or args.runs < 1:
        parser.error(f"need --runs >= 1 and --steps >= {LATE_STEPS[1]}")
    curves: dict[str, Curves] = {}
    started = time.monotonic()
    for method in METHODS:
        began = time.monotonic()
        result = run_testbed(method, runs=args.runs, steps=args.steps, seed=args.seed)
        curves[method.label] = result
        bar = (
            ""
            if method.bar is None
            else f" (bar {method.bar:g}: {'ok' if result.passed else 'MISSED'})"
        )
        print(
            f"{method.label}: mean reward over steps {LATE_STEPS[0]}-{LATE_STEPS[1]} "
            f"{result.late_reward:.3f}{bar}, {100 * result.optimal_action[-1]:.1f}% optimal at "
            f"step {args.steps}, {time.monotonic() - began:.1f} s",
            flush=True,
        )
    wall = time.monotonic() - started
    args.out.mkdir(parents=True, exist_ok=True)
    plot(curves, "average_reward", "average reward", args.out / "bandits-average-reward.png")
    plot(curves, "optimal_action", "% optimal action", args.out / "bandits-optimal-action.png")
    rows = [
        "| method | algorithm | hyperparameters "
        f"| mean reward, steps {LATE_STEPS[0]}-{LATE_STEPS[1]} "
        f"| % optimal action at step {args.steps} | bar | passed |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        result = curves[method.label]
        bar = "" if method.bar is None else f"≥ {method.bar:g}"
        passed = "" if method.bar is None else ("yes" if result.passed else "**no**")
        rows.append(
            f"| {method.label} | `{method.algorithm}` | `{' '.join(method.overrides)}` "
            f"| {result.late_reward:.3f} | {100 * result.optimal_action[-1]:.1f} | {bar} "
            f"| {passed} |"
        )
    text = [
        "# Bandits on the 10-armed testbed",
        "",
        "Written by `benchmarks/bandits.py` (`make bench-bandits`); do not edit by hand.",
        f"Run on {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, CPU only, {wall:.0f} s in all.",
        "",
        f"Sutton & Barto's testbed (section 2.3): {args.runs:,} independent runs of "
        f"{args.steps:,} steps, each on a fresh problem drawn by `agentserve/KArmedTestbed-v0` "
        "(q*(a) ~ N(0, 1), reward ~ N(q*(a), 1)), seed "
        f"{args.seed}. Each method is the registered learner with its update rules, acting on all "
        "runs at once (`trainer/testbed.py`). Estimates are sample averages starting at 0; ties "
        "are broken at the first arm for epsilon-greedy and at random for UCB. The bars are "
        "those of the reference check (`tests/learning/test_bandits_reference.py`).",
        "",
        *rows,
        "",
        f"Command: `.venv/bin/python benchmarks/bandits.py --runs {args.runs} "
        f"--steps {args.steps} --seed {args.seed}`",
        "",
        "Average reward per step (left: figure 2.2, right: figure 2.4):",
        "",
        "![average reward](bandits-average-reward.png)",
        "",
        "% optimal action per step:",
        "",
        "![optimal action](bandits-optimal-action.png)",
        "",
    ]
    (args.out / "bandits.md").write_text("\n".join(text), encoding="utf-8")
    print(f"wrote {args.out / 'bandits.md'}")
    command = (
        f".venv/bin/python benchmarks/bandits.py --runs {args.runs} --steps {args.steps} "
        f"--seed {args.seed}" + ("" if args.out == DOCS else f" --out {args.out}")
    )
    stored = {
        "part": store.BANDITS,
        "recorded": store.now(),
        "machine": store.machine_info(),
        "command": command,
        "runs": args.runs,
        "steps": args.steps,
        "seed": args.seed,
        "late_steps": list(LATE_STEPS),
        "seconds": round(wall, 1),
        "page": "bandits.md",
        "figures": ["bandits-average-reward.png", "bandits-optimal-action.png"],
        "methods": [
            {
                "label": method.label,
                "algorithm": method.algorithm,
                "overrides": list(method.overrides),
                "late_reward": curves[method.label].late_reward,
                "optimal_action_final": float(curves[method.label].optimal_action[-1]),
                "bar": method.bar,
                "passed": curves[method.label].passed,
            }
            for method in METHODS
        ],
    }
    store.write_json(store.part_path(args.out, store.BANDITS), stored)
    print(f"wrote {benchmarks_page.render(args.out)}")
    return 0 if all(c.passed for c in curves.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Reproduces Sutton & Barto's Example 6.6 (Figure 6.4), SARSA against Q-learning on the cliff
walk, with the registered learners; checks the example's claims; writes docs/cliff-walking.md,
docs/cliff-walking.png and the numbers to docs/results/cliff-walking.json, then re-renders
docs/benchmarks.md.

    .venv/bin/python benchmarks/cliff_walking.py                 (make bench-cliff)
    .venv/bin/python benchmarks/cliff_walking.py --runs 10 --out /tmp/cliff   (a quicker look)

Exits 1 if a claim does not hold.
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
import numpy as np
from matplotlib.axes import Axes

from trainer import report as benchmarks_page
from trainer import results as store
from trainer.cliff_walking import (
    COLUMNS,
    EPISODES,
    LATE_EPISODES,
    METHODS,
    ROWS,
    SAFETY_LIMIT,
    SETTINGS,
    Claim,
    GreedyPath,
    Result,
    claims,
    cli_overrides,
    run_method,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"
COLORS = {"sarsa": "tab:blue", "qlearning": "tab:red"}
SMOOTHING = 10
"""Episodes in the moving average of the plotted curves."""
ALPHA = "\N{GREEK SMALL LETTER ALPHA}"


def draw_path(axis: Axes, path: GreedyPath, color: str, label: str, offset: float) -> None:
    rows = [s // COLUMNS + offset for s in path.states]
    columns = [s % COLUMNS + offset for s in path.states]
    axis.plot(columns, rows, color=color, linewidth=2, label=label)


def plot(results: dict[str, Result], path: Path) -> None:
    figure, (grid, curves) = plt.subplots(
        2, 1, figsize=(7.5, 7.2), gridspec_kw={"height_ratios": [1, 1.6]}
    )
    cliff = np.zeros((ROWS, COLUMNS))
    cliff[ROWS - 1, 1 : COLUMNS - 1] = 1
    grid.imshow(cliff, cmap="Greys", vmin=0, vmax=2.5)
    grid.text(0, ROWS - 1, "S", ha="center", va="center", fontsize=12)
    grid.text(COLUMNS - 1, ROWS - 1, "G", ha="center", va="center", fontsize=12)
    grid.text(COLUMNS / 2 - 0.5, ROWS - 1, "The Cliff", ha="center", va="center", fontsize=11)
    for index, (algorithm, result) in enumerate(results.items()):
        average = result.average_path()
        label = f"{result.label} greedy path ({average.describe()})"
        draw_path(grid, average, COLORS[algorithm], label, 0.08 * (index * 2 - 1))
    grid.set_xticks(np.arange(-0.5, COLUMNS, 1), minor=True)
    grid.set_yticks(np.arange(-0.5, ROWS, 1), minor=True)
    grid.grid(which="minor", color="lightgray", linewidth=0.6)
    grid.tick_params(which="both", bottom=False, left=False, labelbottom=False, labelleft=False)
    grid.legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, fontsize=8, frameon=False)
    grid.set_title("Cliff walking: greedy paths of the run-averaged Q-tables", fontsize=10)

    for algorithm, result in results.items():
        episodes = np.arange(1, len(result.mean_returns) + 1)
        curves.plot(
            episodes,
            result.smoothed(SMOOTHING),
            color=COLORS[algorithm],
            label=result.label,
            linewidth=1.2,
        )
    runs = len(next(iter(results.values())).runs)
    curves.set_ylim(-100, -10)
    curves.set_xlabel("Episodes")
    curves.set_ylabel("Sum of rewards during episode")
    curves.set_title(
        f"ε-greedy, ε = {SETTINGS['exploration_final_eps']:g}, "
        f"{ALPHA} = {SETTINGS['learning_rate']:g}: "
        f"mean of {runs} runs,\nmoving average over {SMOOTHING} episodes "
        "(as Sutton & Barto, Figure 6.4)",
        fontsize=9,
    )
    curves.legend(loc="lower right")
    curves.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report(
    results: dict[str, Result], checked: list[Claim], runs: int, episodes: int, seconds: float
) -> str:
    rows = [
        f"| method | mean online return, last {LATE_EPISODES} episodes | greedy paths at the end "
        "(runs) | runs whose greedy path touches the row next to the cliff | runs with the "
        "optimal 13-step path | greedy path of the run-averaged Q-table | env steps per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results.values():
        kinds = ", ".join(f"{kind}: {count}" for kind, count in result.path_counts())
        average = result.average_path()
        touches = "touches" if average.touches_cliff_row else "keeps off"
        steps = np.mean([run.steps for run in result.runs])
        rows.append(
            f"| {result.label} | {result.late_return:.1f} | {kinds} "
            f"| {result.fraction('touches_cliff_row'):.0%} | {result.fraction('optimal'):.0%} "
            f"| {average.describe()}, {touches} the row next to the cliff | {steps:,.0f} |"
        )
    truncated = sum(run.truncated for result in results.values() for run in result.runs)
    settings = ", ".join(f"`{key}={value}`" for key, value in SETTINGS.items())
    paths = []
    for result in results.values():
        paths += [f"{result.label}:", "", "```", result.average_path().grid(), "```", ""]
    return "\n".join(
        [
            "# Cliff walking: SARSA against Q-learning (Sutton & Barto, Example 6.6)",
            "",
            "Written by `benchmarks/cliff_walking.py` (`make bench-cliff`); do not edit by hand.",
            f"Run on {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}, CPU only, in {seconds:.0f} s.",
            "",
            "Command: `.venv/bin/python benchmarks/cliff_walking.py "
            f"--runs {runs} --episodes {episodes}`",
            "",
            f"CliffWalking-v1 (no time limit), {runs} independent runs of {episodes} episodes per "
            "method, each run a fresh registered learner (`sarsa`, `qlearning`) with "
            f"{settings}: a fixed ε = 0.1, {ALPHA} = 0.5, no discounting, Q = 0 at the start. The "
            "learners are driven episode by episode as `trainer.loop` drives them (the action "
            "at s' is chosen before `observe`, so SARSA learns from the action it takes). "
            "The same settings with `agentserve train`: "
            f"`-p {' -p '.join(cli_overrides())}` (the presets' CliffWalking-v1 sections add a "
            f"200-step time limit). Episodes cut off by the {SAFETY_LIMIT:,}-step safety limit: "
            f"{truncated}.",
            "",
            "Online return = the sum of rewards of a training episode, exploration included. "
            "Greedy path = the path of the greedy policy from the start after the last episode "
            "(a path that has not reached the goal after 100 steps loops). The row next to the "
            "cliff is the second row from the bottom. With a constant step size of 0.5 every "
            "update moves a value halfway to one sample, and SARSA's samples include its "
            "exploratory next actions, so its table is noisy where the choices differ by a step "
            "or two (along the top row: right, or up against the wall); that is where the greedy "
            "paths of some SARSA runs loop, still away from the cliff. The run-averaged table "
            "shows the common tendency.",
            "",
            *rows,
            "",
            "## Claims",
            "",
            *[
                f"- {'Holds' if claim.holds else 'FAILS'}. {claim.text}: {claim.detail}."
                for claim in checked
            ],
            "",
            "## Greedy paths of the run-averaged Q-tables",
            "",
            "S start, G goal, C cliff, * path.",
            "",
            *paths,
            "![online returns and greedy paths](cliff-walking.png)",
            "",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="independent runs per method")
    parser.add_argument("--episodes", type=int, default=EPISODES, help="episodes per run")
    parser.add_argument("--out", type=Path, default=DOCS, help="folder for the .md and .png")
    args = parser.parse_args()
    if args.runs < 1 or args.episodes < LATE_EPISODES:
        parser.error(f"--runs must be >= 1 and --episodes >= {LATE_EPISODES}")
    started = time.monotonic()
    results: dict[str, Result] = {}
    for algorithm in METHODS:
        begun = time.monotonic()
        results[algorithm] = run_method(algorithm, args.runs, args.episodes)
        result = results[algorithm]
        print(
            f"{result.label}: mean online return over the last {LATE_EPISODES} episodes "
            f"{result.late_return:.1f}; greedy paths {result.path_counts()} "
            f"({time.monotonic() - begun:.0f} s)",
            flush=True,
        )
    checked = claims(results["sarsa"], results["qlearning"])
    for claim in checked:
        print(f"{'holds' if claim.holds else 'FAILS'}: {claim.text} ({claim.detail})")
    seconds = time.monotonic() - started
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.out / "cliff-walking.png")
    text = report(results, checked, args.runs, args.episodes, seconds)
    (args.out / "cliff-walking.md").write_text(text, encoding="utf-8")
    print(f"wrote {args.out / 'cliff-walking.md'} and {args.out / 'cliff-walking.png'}")
    command = (
        f".venv/bin/python benchmarks/cliff_walking.py --runs {args.runs} "
        f"--episodes {args.episodes}" + ("" if args.out == DOCS else f" --out {args.out}")
    )
    stored = {
        "part": store.CLIFF_WALKING,
        "recorded": store.now(),
        "machine": store.machine_info(),
        "command": command,
        "runs": args.runs,
        "episodes": args.episodes,
        "late_episodes": LATE_EPISODES,
        "seconds": round(seconds, 1),
        "page": "cliff-walking.md",
        "figures": ["cliff-walking.png"],
        "methods": [
            {
                "algorithm": algorithm,
                "label": result.label,
                "late_return": result.late_return,
                "optimal_fraction": result.fraction("optimal"),
                "touches_cliff_row_fraction": result.fraction("touches_cliff_row"),
                "average_path": result.average_path().describe(),
                "steps_per_run": float(np.mean([run.steps for run in result.runs])),
            }
            for algorithm, result in results.items()
        ],
        "claims": [
            {"text": claim.text, "holds": claim.holds, "detail": claim.detail} for claim in checked
        ],
    }
    store.write_json(store.part_path(args.out, store.CLIFF_WALKING), stored)
    print(f"wrote {benchmarks_page.render(args.out)}")
    return 0 if all(claim.holds for claim in checked) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Masked against unmasked PPO on the bundled maze: what the env's action mask is worth.

Both variants train PPO with its preset for `agentserve/MazeGridWorld-v0` through
`trainer.loop.train`, with the same seeds and step budget. "masked" is the ordinary run: the
learner is told the allowed moves (`info["action_mask"]`) when it acts and learns. "unmasked"
ignores the mask (`RunOptions.ignore_env_mask`, `agentserve train --ignore-env-mask`): every move
looks allowed, and one into a wall costs a step and leaves the agent where it was. Every
`EVAL_FREQ` steps the greedy policy plays one evaluation episode; the env and the greedy policy are
deterministic, so one episode is the policy's exact return.

Writes docs/masked-training.md and docs/masked-training.png (`make bench-masking`):

    .venv/bin/python -m trainer.masking_benchmark
    .venv/bin/python -m trainer.masking_benchmark --seeds 3 --out /tmp/masking   (a quicker look)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trainer import registry
from trainer.core.config import load_preset, resolve
from trainer.envs import MAZE_ID, MAZE_MAX_EPISODE_STEPS
from trainer.envs.gridworld import MAZE_LAYOUT, GridWorldEnv, optimal_return
from trainer.loop import RunOptions, train

ALGORITHM = "ppo"
EVAL_FREQ = 1_000
"""Env steps between evaluations (one deterministic episode each)."""
DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGE, FIGURE = "masked-training.md", "masked-training.png"


@dataclass(frozen=True)
class Variant:
    """One arm of the comparison: PPO told the env's masks, or not (`ignore_env_mask`)."""

    name: str
    ignore_env_mask: bool
    color: str
    """Its colour in the figure."""


VARIANTS = (Variant("masked", False, "tab:blue"), Variant("unmasked", True, "tab:red"))


@dataclass(frozen=True)
class Run:
    """One seed of one variant."""

    seed: int
    curve: tuple[tuple[int, float, float], ...]
    """(env steps, evaluation return, training seconds so far) of every evaluation, in order."""
    steps: int
    train_seconds: float
    """Wall-clock of the training, evaluations excluded."""
    invalid_actions: int
    """Training actions the env's mask did not allow."""

    @property
    def final_return(self) -> float:
        return self.curve[-1][1]

    def reached(self, threshold: float) -> tuple[int, float] | None:
        """(env steps, training seconds) at the first evaluation returning at least `threshold`
        (None: never)."""
        return next(((s, t) for s, value, t in self.curve if value >= threshold), None)


def maze_threshold() -> float:
    """The best return the maze allows within its time limit: the shortest path's."""
    return optimal_return(GridWorldEnv(MAZE_LAYOUT), MAZE_MAX_EPISODE_STEPS)


def preset_budget() -> int:
    """The step budget of the PPO preset for the maze."""
    spec = resolve(ALGORITHM, registry.get(ALGORITHM).config_class, MAZE_ID, [])
    assert spec.timesteps is not None, "the PPO preset gives the maze a budget"
    return spec.timesteps


def run_one(variant: Variant, seed: int, timesteps: int) -> Run:
    with tempfile.TemporaryDirectory() as folder:
        result = train(
            RunOptions(
                algorithm=ALGORITHM,
                env_id=MAZE_ID,
                seed=seed,
                timesteps=timesteps,
                run_dir=Path(folder),
                eval_freq=EVAL_FREQ,
                eval_episodes=1,
                progress=False,
                ignore_env_mask=variant.ignore_env_mask,
            )
        )
    # The evaluation after the loop repeats the step of the loop's last one; it wins.
    curve = {step: (step, value, seconds) for step, value, seconds in result.evaluations}
    return Run(
        seed,
        tuple(curve.values()),
        result.timesteps,
        result.train_seconds,
        result.invalid_actions,
    )


def mean_std(values: Sequence[float], digits: int = 1) -> str:
    spread = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):,.{digits}f} ± {spread:,.{digits}f}"


def plot(runs: dict[str, list[Run]], threshold: float, path: Path) -> None:
    """Evaluation return against env steps: per variant the mean across seeds and a ± std band,
    the band clipped to the returns the maze allows (a return is either -200, the time limit
    without reaching G, or at most the shortest path's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.2))
    for variant in VARIANTS:
        curves = [{step: value for step, value, _ in run.curve} for run in runs[variant.name]]
        steps = sorted(set.intersection(*(set(curve) for curve in curves)))
        means = [statistics.fmean(curve[s] for curve in curves) for s in steps]
        spreads = [statistics.pstdev([curve[s] for curve in curves]) for s in steps]
        axis.plot(steps, means, color=variant.color, label=f"{variant.name} PPO", linewidth=1.4)
        axis.fill_between(
            steps,
            [max(m - s, -MAZE_MAX_EPISODE_STEPS) for m, s in zip(means, spreads, strict=True)],
            [min(m + s, threshold) for m, s in zip(means, spreads, strict=True)],
            color=variant.color,
            alpha=0.2,
            linewidth=0,
        )
    axis.axhline(threshold, linestyle="--", color="gray", linewidth=1, label="shortest path")
    seeds = len(next(iter(runs.values())))
    axis.set_title(
        f"{MAZE_ID}: deterministic evaluation return,\nmean ± std over {seeds} seeds "
        "(clipped to the possible returns)",
        fontsize=10,
    )
    axis.set_xlabel("environment steps")
    axis.set_ylabel("evaluation return")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=9, loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _reached(runs: int, values: Sequence[float], digits: int) -> str:
    """`values` (one per run that reached the threshold) as mean ± std, with the count."""
    reached = f"{len(values)} of {runs} runs"
    return f"{mean_std(values, digits)} ({reached})" if values else f"never ({reached})"


def report(
    runs: dict[str, list[Run]], threshold: float, timesteps: int, seconds: float, command: str
) -> str:
    rows = [
        "| variant | final evaluation return | env steps per run | training wall-clock per run, "
        f"s | env steps to return ≥ {threshold:g} | training wall-clock to return ≥ "
        f"{threshold:g}, s | invalid actions attempted in training, per run |",
        "|---|---|---|---|---|---|---|",
    ]
    reach: dict[str, list[tuple[int, float]]] = {}
    for variant in VARIANTS:
        group = runs[variant.name]
        reached = [hit for hit in (run.reached(threshold) for run in group) if hit is not None]
        reach[variant.name] = reached
        invalid = mean_std([run.invalid_actions for run in group], 0)
        rows.append(
            f"| {variant.name} | {mean_std([run.final_return for run in group])} "
            f"| {statistics.fmean(run.steps for run in group):,.0f} "
            f"| {mean_std([run.train_seconds for run in group])} "
            f"| {_reached(len(group), [step for step, _ in reached], 0)} "
            f"| {_reached(len(group), [seconds for _, seconds in reached], 1)} | {invalid} |"
        )
    masked, unmasked = reach["masked"], reach["unmasked"]
    seeds = len(runs["masked"])
    if len(masked) == len(unmasked) == seeds:
        steps_ratio, seconds_ratio = (
            statistics.fmean(u[i] for u in unmasked) / statistics.fmean(m[i] for m in masked)
            for i in (0, 1)
        )
        summary = (
            "Every run of both variants found the shortest path; unmasked PPO needed "
            f"{steps_ratio:.1f} times the env steps of masked PPO to get there, and "
            f"{seconds_ratio:.1f} times the training wall-clock (means over the seeds; a masked "
            "step costs a little more, the masks travel through acting and the PPO update)."
        )
    else:
        summary = (
            f"Runs that found the shortest path within {timesteps:,} steps: masked {len(masked)} "
            f"of {seeds}, unmasked {len(unmasked)} of {seeds}."
        )
    preset = load_preset(ALGORITHM).get(MAZE_ID, {})
    settings = ", ".join(f"`{key}={value}`" for key, value in preset.items() if key != "timesteps")
    return "\n".join(
        [
            "# Masked against unmasked training (PPO on the bundled maze)",
            "",
            "Written by `trainer/masking_benchmark.py` (`make bench-masking`); do not edit by "
            "hand.",
            f"Run on {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}, CPU only (one torch thread), in "
            f"{seconds:.0f} s.",
            "",
            f"Command: `{command}`",
            "",
            f"`{MAZE_ID}` is the bundled grid world with the maze below: one-hot observations, "
            "-1 per step, +20 at G, a 200-step time limit. The shortest path takes 18 steps "
            f"(return {threshold:g}); about half of all moves bump into a wall, and those moves "
            'are the ones `info["action_mask"]` rules out. Both variants train PPO with its '
            f"preset for the maze ({settings}) for {timesteps:,} env steps per run, over seeds "
            f"0 to {seeds - 1}. **masked**: the learner is told the allowed moves, as in any run. "
            "**unmasked**: `--ignore-env-mask` (`RunOptions.ignore_env_mask`), the learner is "
            "never told; a move into a wall costs a step and leaves the agent in place. Every "
            f"{EVAL_FREQ:,} steps the greedy policy plays one evaluation episode (env and policy "
            "are deterministic, so that is its exact return; with masks for the masked variant, "
            "without for the unmasked). Final evaluation return = that of the policy at the end "
            "of the budget. Training wall-clock excludes the evaluations. Invalid actions = "
            "training actions the env's mask did not allow (counted by the collector).",
            "",
            "```",
            *MAZE_LAYOUT,
            "```",
            "",
            *rows,
            "",
            summary,
            "",
            f"![learning curves of masked and unmasked PPO]({FIGURE})",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0 .. N-1 per variant")
    parser.add_argument("--timesteps", type=int, help="env steps per run (default: the preset's)")
    parser.add_argument("--out", type=Path, default=DOCS, help="folder for the .md and .png")
    args = parser.parse_args(argv)
    if args.seeds < 1 or (args.timesteps is not None and args.timesteps < EVAL_FREQ):
        parser.error(f"--seeds must be >= 1 and --timesteps >= {EVAL_FREQ}")
    timesteps = args.timesteps or preset_budget()
    threshold = maze_threshold()
    started = time.monotonic()
    runs: dict[str, list[Run]] = {variant.name: [] for variant in VARIANTS}
    for seed in range(args.seeds):  # the variants interleaved, so both see the same machine load
        for variant in VARIANTS:
            run = run_one(variant, seed, timesteps)
            runs[variant.name].append(run)
            hit = run.reached(threshold)
            print(
                f"{variant.name} seed {seed}: final return {run.final_return:g}, return >= "
                f"{threshold:g} {'never' if hit is None else f'at {hit[0]:,} steps'}, "
                f"{run.invalid_actions:,} invalid actions, {run.train_seconds:.1f} s training",
                flush=True,
            )
    seconds = time.monotonic() - started
    command = f".venv/bin/python -m trainer.masking_benchmark --seeds {args.seeds}"
    if args.timesteps is not None:
        command += f" --timesteps {args.timesteps}"
    if args.out != DOCS:
        command += f" --out {args.out}"
    args.out.mkdir(parents=True, exist_ok=True)
    plot(runs, threshold, args.out / FIGURE)
    (args.out / PAGE).write_text(
        report(runs, threshold, timesteps, seconds, command), encoding="utf-8"
    )
    print(f"wrote {args.out / PAGE} and {args.out / FIGURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Renders `docs/benchmarks.md` from the stored results in `docs/results/*.json`, and nothing else.

No training happens here: every number on the page comes from a results file written by a
benchmark command (`trainer/results.py`), a row or case without results reads "not run yet", and
entries recorded under another definition of their row (another budget, bar or threshold) are
listed as left out instead of being mixed in. The page holds the summary table of issue 3, the
reference rows in detail with one learning-curve PNG per env (mean ± std band across seeds, one
line per algorithm and option, the bar dashed), the bandit and cliff-walking results with their
figures, the Stable-Baselines3 comparison with ratios and the verdict on each target, the
machines the results were measured on, and the commands that reproduce each part.

    agentserve benchmark report [--out docs]          (make bench-report)
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer import results
from trainer.reference import CHECKS, ReferenceCheck, resolved_setup
from trainer.speed import CASES, EVAL_EPISODES, LIBRARIES, SpeedSummary, matches, summarize

PAGE = "benchmarks.md"
FIGURES = "figures"
NOT_RUN = "not run yet"

COMMANDS = (
    (
        "Reference returns",
        "agentserve benchmark reference [--only TEXT ...] [--seeds 0 1 2] [--jobs N]",
        "make bench-learning",
        "reference.json",
    ),
    (
        "Speed against Stable-Baselines3",
        "agentserve benchmark speed [--only TEXT ...] [--seeds 3]",
        "make bench-sb3",
        "speed.json",
    ),
    (
        "Bandits (10-armed testbed)",
        ".venv/bin/python benchmarks/bandits.py",
        "make bench-bandits",
        "bandits.json",
    ),
    (
        "Cliff walking (Example 6.6)",
        ".venv/bin/python benchmarks/cliff_walking.py",
        "make bench-cliff",
        "cliff-walking.json",
    ),
    ("This page, from the stored results", "agentserve benchmark report", "make bench-report", ""),
)


# --- Formatting -----------------------------------------------------------------------------


def _num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "not reached"
    return f"{value:.{digits}g}"


def _steps(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "not reached"
    return f"{value:,.0f}"


def _mean_std(values: Sequence[float], digits: int = 4) -> str:
    if not values:
        return "—"
    spread = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}g} ± {spread:.2g}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7_200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3_600:.1f} h"


def _slug(env_id: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", env_id.lower()).strip("-")


def _plain(value: Any) -> str:
    """A stored number as it was given (475.0 -> 475); anything else as is."""
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def _ratio(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "∞ (ours not reached)"
    return f"{value:.2f}"


# --- Reference rows -------------------------------------------------------------------------


@dataclass(frozen=True)
class RowResults:
    check: ReferenceCheck
    entries: dict[int, results.Entry]
    """seed -> entry, only entries recorded with the row's current definition."""
    stale: dict[int, results.Entry]

    @property
    def run(self) -> bool:
        return bool(self.entries)

    def values(self, key: str) -> list[float]:
        return [float(e[key]) for _, e in sorted(self.entries.items()) if e.get(key) is not None]

    @property
    def passed(self) -> int:
        """Seeds whose own best evaluation reaches the bar."""
        return sum(bool(e["passed"]) for e in self.entries.values())

    @property
    def mean_passed(self) -> bool:
        """The row's verdict as issue 3 defines it: the mean over the seeds of the best
        evaluation reaches the bar."""
        return bool(self.entries) and statistics.fmean(self.values("best")) >= self.check.bar

    @property
    def bar_step(self) -> float | None:
        """Median env steps to the bar over the seeds (inf: the median seed did not reach it)."""
        if self.check.metric != "mean_return" or not self.entries:
            return None
        steps = [
            math.inf if e.get("bar_step") is None else float(e["bar_step"])
            for e in self.entries.values()
        ]
        return statistics.median(steps)


def _setup_changes(check: ReferenceCheck, entry: results.Entry) -> list[str]:
    """How the row's current preset differs from what a stored run trained with ("name: stored ->
    now"); empty when they agree or the entry predates recording it."""
    stored = entry.get("setup")
    if not isinstance(stored, dict):
        return []
    now = _setups.get(check.label)
    if now is None:
        now = _setups[check.label] = resolved_setup(check)
    changes = []
    for group in ("hyperparameters", "n_envs", "env_kwargs"):
        old, new = stored.get(group), now.get(group)
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    changes.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
        elif old != new:
            changes.append(f"{group}: {old!r} -> {new!r}")
    return changes


_setups: dict[str, dict[str, Any]] = {}


def _current(check: ReferenceCheck, entry: results.Entry) -> bool:
    return _same_definition(check, entry) and not _setup_changes(check, entry)


def _same_definition(check: ReferenceCheck, entry: results.Entry) -> bool:
    return (
        entry.get("budget") == check.timesteps
        and entry.get("eval_freq") == check.eval_freq
        and entry.get("metric") == check.metric
        and entry.get("eval_episodes") == check.eval_episodes
        and isinstance(entry.get("bar"), int | float)
        and math.isclose(float(entry["bar"]), check.bar, rel_tol=1e-9, abs_tol=1e-9)
    )


def reference_rows(entries: results.Entries) -> list[RowResults]:
    rows = []
    for check in CHECKS:
        stored = {int(seed): entry for seed, entry in entries.get(check.label, {}).items()}
        rows.append(
            RowResults(
                check,
                {s: e for s, e in stored.items() if _current(check, e)},
                {s: e for s, e in stored.items() if not _current(check, e)},
            )
        )
    return rows


def _seeds_cell(row: RowResults) -> str:
    wanted = row.check.seeds
    have = sorted(row.entries)
    if not have:
        return f"0 of {len(wanted)}"
    listed = ", ".join(str(s) for s in have)
    if set(have) <= set(wanted):
        return f"{len(have)} of {len(wanted)} ({listed})"
    return f"{len(have)} ({listed})"


def _reference_table(rows: list[RowResults]) -> list[str]:
    lines = [
        "| row | env | metric | bar | budget (env steps) | evaluation | seeds | best evaluation "
        "| final evaluation | env steps to the bar (median) | wall-clock per seed | passed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        check = row.check
        options = " ".join(check.overrides)
        name = f"`{check.algorithm}`" + (f" `{options}`" if options else "")
        head = (
            f"| {name} | {check.env_id} | {check.metric} | {check.bar:g} | {check.timesteps:,} "
            f"| {check.eval_episodes:,} episodes every {check.eval_freq:,} steps "
            f"| {_seeds_cell(row)} "
        )
        if not row.run:
            lines.append(head + f"| {NOT_RUN} | | | | |")
            continue
        finals = row.values("final")
        stopped = sum(bool(e.get("stopped_at_bar")) for e in row.entries.values())
        final = _mean_std(finals) if finals else "—"
        if stopped:
            final += f" ({stopped} stopped at the bar)"
        passed = f"{row.passed}/{len(row.entries)}"
        if row.passed < len(row.entries):
            passed = f"**{passed}**"
        lines.append(
            head + f"| {_mean_std(row.values('best'))} | {final} | {_steps(row.bar_step)} "
            f"| {_duration(statistics.fmean(row.values('wall_seconds')))} | {passed} |"
        )
    return lines


def _left_out(rows: list[RowResults], entries: results.Entries) -> list[str]:
    lines = []
    for row in rows:
        for seed, entry in sorted(row.stale.items()):
            changes = _setup_changes(row.check, entry)
            if changes and _same_definition(row.check, entry):
                lines.append(
                    f"- `{row.check.label}` seed {seed}: trained with other hyperparameters than "
                    f"the preset has now ({'; '.join(changes)})."
                )
                continue
            lines.append(
                f"- `{row.check.label}` seed {seed}: recorded with budget "
                f"{entry.get('budget')}, bar {_plain(entry.get('bar'))}, "
                f"metric {entry.get('metric')}, evaluations every {entry.get('eval_freq')} "
                f"steps of {entry.get('eval_episodes')} episodes; the row is now "
                f"{row.check.timesteps}, {row.check.bar:g}, {row.check.metric}, "
                f"{row.check.eval_freq}, {row.check.eval_episodes}."
            )
    labels = {c.label for c in CHECKS}
    for label in sorted(set(entries) - labels):
        lines.append(f"- `{label}`: stored, but no longer a reference row.")
    return lines


def _curve_points(entry: results.Entry, eval_freq: int) -> dict[int, float]:
    """The entry's evaluations by step, rounded to the evaluation grid (lockstep envs cross
    a multiple of eval_freq a few steps late); the last evaluation at a grid point wins."""
    points: dict[int, float] = {}
    for step, mean, _ in entry.get("curve", []):
        points[round(step / eval_freq) * eval_freq] = float(mean)
    return points


def draw_curves(env_id: str, rows: list[RowResults], path: Path) -> None:
    """One env's learning curves: for each row, the mean evaluation return across seeds with a
    ± std band, against env steps; each bar dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.2))
    bars: dict[float, list[str]] = {}
    for row in rows:
        per_seed = [_curve_points(e, row.check.eval_freq) for e in row.entries.values()]
        grid = sorted({step for points in per_seed for step in points})
        if not grid:
            continue
        means, spreads = [], []
        for step in grid:
            values = [points[step] for points in per_seed if step in points]
            means.append(statistics.fmean(values))
            spreads.append(statistics.pstdev(values) if len(values) > 1 else 0.0)
        options = "".join(f" {o}" for o in row.check.overrides)
        label = f"{row.check.algorithm}{options} ({len(per_seed)} seeds)"
        (line,) = axis.plot(grid, means, label=label, linewidth=1.4)
        low = [m - s for m, s in zip(means, spreads, strict=True)]
        high = [m + s for m, s in zip(means, spreads, strict=True)]
        axis.fill_between(grid, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        bars.setdefault(row.check.bar, []).append(row.check.metric)
    for bar, metrics in bars.items():
        kind = "success rate" if "success_rate" in metrics else "return"
        axis.axhline(bar, linestyle="--", color="gray", linewidth=1, label=f"bar {bar:g} ({kind})")
    axis.set_title(f"{env_id}: deterministic evaluation, mean ± std across seeds", fontsize=10)
    axis.set_xlabel("environment steps")
    axis.set_ylabel("mean evaluation return")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="best")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _curves_section(rows: list[RowResults], docs: Path) -> list[str]:
    envs: dict[str, list[RowResults]] = {}
    for row in rows:
        envs.setdefault(row.check.env_id, []).append(row)
    figures = docs / FIGURES
    drawn: set[Path] = set()
    lines: list[str] = []
    missing = []
    for env_id, env_rows in envs.items():
        with_results = [r for r in env_rows if r.run]
        if not with_results:
            missing.append(env_id)
            continue
        path = figures / f"curves-{_slug(env_id)}.png"
        draw_curves(env_id, with_results, path)
        drawn.add(path)
        lines += [f"![{env_id} learning curves]({FIGURES}/{path.name})", ""]
    for stale in figures.glob("curves-*.png"):
        if stale not in drawn:
            stale.unlink()
    if missing:
        lines.append(f"No curves yet ({NOT_RUN}): {', '.join(missing)}.")
        lines.append("")
    return lines


# --- Bandits and cliff walking --------------------------------------------------------------


def _figures(data: dict[str, Any], docs: Path) -> list[str]:
    lines = []
    for name in data.get("figures", []):
        if (docs / name).is_file():
            lines += [f"![{name}]({name})", ""]
        else:
            lines += [f"(figure `{name}` is missing: rerun the command above)", ""]
    return lines


def _bandits_section(data: dict[str, Any] | None, docs: Path) -> list[str]:
    command = "`.venv/bin/python benchmarks/bandits.py` (`make bench-bandits`)"
    if data is None:
        return [f"{NOT_RUN.capitalize()}: {command}.", ""]
    late = data.get("late_steps", ["?", "?"])
    lines = [
        f"Sutton & Barto's 10-armed testbed, {data['runs']:,} runs of {data['steps']:,} steps, "
        f"seed {data['seed']}, recorded {data['recorded']} with "
        f"`{data.get('command', '')}`; details in [bandits.md]({data.get('page', 'bandits.md')}).",
        "",
        f"| method | algorithm | mean reward, steps {late[0]}-{late[1]} "
        f"| % optimal action at step {data['steps']:,} | bar | passed |",
        "|---|---|---|---|---|---|",
    ]
    for method in data.get("methods", []):
        bar = method.get("bar")
        lines.append(
            f"| {method['label']} | `{method['algorithm']}` `{' '.join(method['overrides'])}` "
            f"| {method['late_reward']:.3f} | {100 * method['optimal_action_final']:.1f} "
            f"| {'' if bar is None else f'≥ {bar:g}'} "
            f"| {'' if bar is None else ('yes' if method['passed'] else '**no**')} |"
        )
    return [*lines, "", *_figures(data, docs)]


def _cliff_section(data: dict[str, Any] | None, docs: Path) -> list[str]:
    command = "`.venv/bin/python benchmarks/cliff_walking.py` (`make bench-cliff`)"
    if data is None:
        return [f"{NOT_RUN.capitalize()}: {command}.", ""]
    lines = [
        f"SARSA against Q-learning on CliffWalking-v1, {data['runs']} runs of "
        f"{data['episodes']} episodes each, recorded {data['recorded']} with "
        f"`{data.get('command', '')}`; details in "
        f"[cliff-walking.md]({data.get('page', 'cliff-walking.md')}).",
        "",
        "| method | mean online return, last episodes | runs with the optimal 13-step path "
        "| runs whose greedy path touches the row next to the cliff "
        "| greedy path of the run-averaged Q-table |",
        "|---|---|---|---|---|",
    ]
    for method in data.get("methods", []):
        lines.append(
            f"| {method['label']} | {method['late_return']:.1f} "
            f"| {method['optimal_fraction']:.0%} | {method['touches_cliff_row_fraction']:.0%} "
            f"| {method['average_path']} |"
        )
    lines += ["", "Claims of the example:", ""]
    lines += [
        f"- {'Holds' if c['holds'] else '**Fails**'}. {c['text']}: {c['detail']}."
        for c in data.get("claims", [])
    ]
    return [*lines, "", *_figures(data, docs)]


# --- Speed ----------------------------------------------------------------------------------


def _speed_section(entries: results.Entries) -> tuple[list[str], list[SpeedSummary]]:
    summaries = [summarize(case, entries.get(case.label, {})) for case in CASES]
    lines = [
        "| case | threshold | budget | evaluated every | seeds "
        "| env steps to threshold (ours / SB3) "
        "| seconds to threshold (ours / SB3) | env steps/s (ours / SB3) | time ratio "
        "| steps ratio | seeds with fewer / equal / more steps than SB3 | steps/s ratio "
        "| target | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        case = s.case
        target = (
            "—"
            if case.target_time_ratio is None
            else f"time ratio ≤ {case.target_time_ratio:g}, steps ratio ≤ 1"
        )
        head = (
            f"| {case.label} | {case.threshold:g} | {case.budget:,} | {case.eval_freq:,} steps "
            f"| {len(s.seeds)} "
        )
        if not s.seeds:
            lines.append(head + f"| {NOT_RUN} | | | | | | | {target} | {NOT_RUN} |")
            continue
        verdict = "**met**" if s.met else s.verdict
        lines.append(
            head + f"| {_steps(s.steps['agentserve'])} / {_steps(s.steps['sb3'])} "
            f"| {_num(s.seconds['agentserve'], 3)} / {_num(s.seconds['sb3'], 3)} "
            f"| {_steps(s.rate['agentserve'])} / {_steps(s.rate['sb3'])} "
            f"| {_ratio(s.time_ratio)} | {_ratio(s.steps_ratio)} "
            f"| {' / '.join(map(str, s.steps_signs))} | {_ratio(s.rate_ratio)} "
            f"| {target} | {verdict} |"
        )
    per_seed = [
        "",
        "Per seed (the library named first in *order* ran first):",
        "",
        "| case | seed | order | library | env steps to threshold | seconds to threshold "
        "| env steps | env steps/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    stale = []
    for case in CASES:
        for seed, entry in sorted(entries.get(case.label, {}).items(), key=lambda i: int(i[0])):
            if not matches(case, entry):
                stale.append(
                    f"- `{case.label}` seed {seed}: recorded with threshold "
                    f"{_plain(entry.get('threshold'))}, budget {entry.get('budget')}, eval_freq "
                    f"{entry.get('eval_freq')}."
                )
                continue
            order = " → ".join(entry.get("order", LIBRARIES))
            for library in LIBRARIES:
                outcome = entry[library]
                steps = outcome["steps_to_threshold"]
                seconds = outcome["seconds_to_threshold"]
                per_seed.append(
                    f"| {case.label} | {seed} | {order} | {library} "
                    f"| {'not reached' if steps is None else f'{steps:,}'} "
                    f"| {'not reached' if seconds is None else f'{seconds:.3g}'} "
                    f"| {outcome['steps']:,} | {outcome['steps_per_second']:,.0f} |"
                )
    if any(s.seeds for s in summaries):
        lines += per_seed
    if stale:
        lines += ["", "Left out (measured under another definition of the case):", "", *stale]
    mapped = []
    for case in CASES:
        stored = {s: e for s, e in entries.get(case.label, {}).items() if matches(case, e)}
        if stored:
            latest = stored[max(stored, key=int)]
            mapped += [
                f"<details><summary>{case.label}: our preset and the SB3 arguments it maps to"
                "</summary>",
                "",
                "```",
                f"ours: {latest.get('hyperparameters')}",
                f"n_envs: {latest.get('n_envs')}",
                f"SB3 {latest.get('sb3_class')}: {latest.get('sb3_kwargs')}",
                "```",
                "",
                "</details>",
                "",
            ]
    if mapped:
        lines += ["", *mapped]
    return lines, summaries


# --- Summary, machines, commands ------------------------------------------------------------


def _summary_table(
    rows: list[RowResults],
    bandits: dict[str, Any] | None,
    cliff: dict[str, Any] | None,
    speed: list[SpeedSummary],
) -> list[str]:
    lines = [
        "| row | bar | measured | passed |",
        "|---|---|---|---|",
    ]
    if bandits is None:
        lines.append(
            f"| 10-armed testbed: UCB and ε-greedy ([bandits](#bandits)) | | {NOT_RUN} | |"
        )
    else:
        for method in bandits.get("methods", []):
            if method.get("bar") is None:
                continue
            lines.append(
                f"| 10-armed testbed: {method['label']} ([bandits](#bandits)) "
                f"| mean reward ≥ {method['bar']:g} | {method['late_reward']:.3f} "
                f"| {'yes' if method['passed'] else '**no**'} |"
            )
    for row in rows:
        check = row.check
        metric = "success rate" if check.metric == "success_rate" else "return"
        bar = f"best {metric} ≥ {check.bar:g} in {check.timesteps:,} steps"
        if not row.run:
            lines.append(f"| {check.label} | {bar} | {NOT_RUN} | |")
            continue
        best = statistics.fmean(row.values("best"))
        seeds = f"{row.passed}/{len(row.entries)} seeds"
        if row.passed == len(row.entries):
            passed = f"yes, {seeds}"
        elif row.mean_passed:
            passed = f"yes (the mean of the seeds); **{seeds}** on their own"
        else:
            passed = f"**no**, {seeds}"
        lines.append(
            f"| {check.label} | {bar} | {best:.4g} (mean of {len(row.entries)}) | {passed} |"
        )
    example = "CliffWalking: Sutton & Barto Example 6.6 ([cliff walking](#cliff-walking))"
    if cliff is None:
        lines.append(f"| {example} | | {NOT_RUN} | |")
    else:
        claims = cliff.get("claims", [])
        holding = sum(bool(c["holds"]) for c in claims)
        verdict = "yes" if holding == len(claims) else "**no**"
        lines.append(
            f"| {example} | the example's claims | {holding}/{len(claims)} hold | {verdict} |"
        )
    for s in speed:
        if s.case.target_time_ratio is None:
            continue
        bar = (
            f"wall-clock to {s.case.threshold:g} ≤ {s.case.target_time_ratio:g} times SB3's, "
            "env steps no more"
        )
        measured = (
            NOT_RUN
            if not s.seeds
            else f"time ratio {_ratio(s.time_ratio)}, steps ratio {_ratio(s.steps_ratio)}"
        )
        passed = "" if not s.seeds else ("yes" if s.met else f"**no** ({s.verdict})")
        lines.append(
            f"| speed: {s.case.label} ([speed](#speed-against-stable-baselines3)) | {bar} "
            f"| {measured} | {passed} |"
        )
    return lines


def _all_entries(*parts: results.Entries) -> list[results.Entry]:
    return [entry for part in parts for seeds in part.values() for entry in seeds.values()]


def _machines(entries: list[results.Entry], singles: list[dict[str, Any] | None]) -> list[str]:
    seen: dict[str, list[str]] = {}
    for item in [*entries, *[s for s in singles if s is not None]]:
        machine = item.get("machine")
        if isinstance(machine, dict):
            seen.setdefault(results.describe_machine(machine), []).append(str(item["recorded"]))
    if not seen:
        return [f"No results stored yet ({NOT_RUN})."]
    return [
        f"- {description}: {len(dates)} result(s), recorded {min(dates)[:10]} to {max(dates)[:10]}"
        for description, dates in seen.items()
    ]


def _recorded_commands(
    entries: list[results.Entry], singles: list[dict[str, Any] | None]
) -> list[str]:
    commands = {str(e.get("command")) for e in entries if e.get("command")}
    commands |= {str(s.get("command")) for s in singles if s is not None and s.get("command")}
    return [f"- `{command}`" for command in sorted(commands)]


def render(docs: Path) -> Path:
    """Writes `<docs>/benchmarks.md` (and its PNGs under `<docs>/figures/`) from
    `<docs>/results/*.json`; returns the page's path."""
    reference = results.load_entries(results.part_path(docs, results.REFERENCE))
    speed_entries = results.load_entries(results.part_path(docs, results.SPEED))
    bandits = results.read_json(results.part_path(docs, results.BANDITS))
    cliff = results.read_json(results.part_path(docs, results.CLIFF_WALKING))
    rows = reference_rows(reference)
    speed_lines, summaries = _speed_section(speed_entries)
    stored = _all_entries(reference, speed_entries)
    left_out = _left_out(rows, reference)
    lines = [
        "# Benchmarks",
        "",
        f"Written by `agentserve benchmark report` (`make bench-report`) on {results.now()[:10]} "
        "from the results stored in `results/` next to it; do not edit by hand. Every "
        "benchmark command stores its results there and re-renders this page; a row without "
        f"results reads *{NOT_RUN}*.",
        "",
        "## Summary",
        "",
        *_summary_table(rows, bandits, cliff, summaries),
        "",
        "## Reference returns",
        "",
        "Each row trains the registered algorithm with its preset (plus the options shown) for "
        "the budget, evaluating the greedy policy deterministically as the *evaluation* column "
        "says (off the clock). "
        "*Best evaluation* is the best evaluation within the budget, the checkpoint that gets "
        "exported, as rl-baselines3-zoo reports it; *final* is the evaluation at the end of the "
        "budget. Rows marked to stop at the bar (the long Box2D ones) end at the first "
        "evaluation that reaches it, so their best evaluation is that one and they have no "
        "final evaluation. *Env steps to the bar* is the median over seeds of the first "
        "evaluation at or above the bar (a seed that never reaches it counts as never). Values "
        "are mean ± standard deviation across the seeds run. A row is met when the mean over its "
        "seeds of the best evaluation reaches the bar (issue 3's table: mean over 3 seeds); the "
        "*passed* column counts the seeds whose own best evaluation reaches it.",
        "",
        *_reference_table(rows),
        "",
    ]
    if left_out:
        lines += ["Left out (recorded under another definition of the row):", "", *left_out, ""]
    lines += [
        "### Learning curves",
        "",
        "Mean evaluation return against env steps, one figure per env, one line per row: the "
        "mean across seeds with a ± one standard deviation band; dashed: the bars. The "
        "FrozenLake curve is the mean return, which is its success rate (reward 1 at the goal, "
        "0 elsewhere).",
        "",
        *_curves_section(rows, docs),
        "## Bandits",
        "",
        *_bandits_section(bandits, docs),
        "## Cliff walking",
        "",
        *_cliff_section(cliff, docs),
        "## Speed against Stable-Baselines3",
        "",
        "Both libraries train the same preset (mapped field by field onto SB3's arguments, "
        "`trainer/speed.py`), with the same seeds, one torch thread each, on the same machine, "
        "interleaved seed by seed. Every `eval_freq` env steps the greedy policy is evaluated "
        f"({EVAL_EPISODES} episodes, the same seeds and code for both; off the clock), and a "
        "run ends at the "
        "first evaluation that reaches the threshold. Columns are medians over seeds; the "
        "ratios are ours / SB3 per seed, then the median. A run that never reaches the "
        "threshold counts as infinitely slow (a ratio of ∞ when only ours missed, 0 when only "
        "SB3's did; a seed where both missed carries no ratio). A target is met when the time "
        "ratio is at most the target and the steps ratio at most 1.",
        "",
        *speed_lines,
        "",
        "## Machines",
        "",
        *_machines(stored, [bandits, cliff]),
        "",
        "## Reproduce",
        "",
        "From the repository root, with the development install (`make install`, then "
        "`source .venv/bin/activate`). Each command merges its results into `docs/results/` "
        "(rerunning a row for one seed replaces only that entry) and re-renders this page.",
        "",
        "| part | command | make target | results file |",
        "|---|---|---|---|",
        *[
            f"| {part} | `{command}` | `{target}` | {f'`results/{where}`' if where else ''} |"
            for part, command, target, where in COMMANDS
        ],
        "",
        "For example, one row for one seed: `agentserve benchmark reference --only "
        '"ppo on LunarLander-v3" --seeds 0`. `agentserve benchmark reference --list` prints '
        "the rows.",
        "",
    ]
    recorded = _recorded_commands(stored, [bandits, cliff])
    if recorded:
        lines += ["Commands recorded with the stored results:", "", *recorded, ""]
    page = docs / PAGE
    results.write_text(page, "\n".join(lines))
    return page


__all__ = ["NOT_RUN", "RowResults", "draw_curves", "reference_rows", "render"]

"""Benchmark results and docs/benchmarks.md: the JSON store merges entry by entry and writes
atomically, the page is rendered from stored results only (missing rows read "not run yet",
entries of another row definition are left out), and the `benchmark` subcommands parse."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from agentserve.cli import build_parser, main
from agentserve.errors import ConfigError
from trainer import reference, report, results
from trainer.reference import CHECKS, ReferenceCheck
from trainer.speed import CASES, Outcome

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check(label: str) -> ReferenceCheck:
    return next(c for c in CHECKS if c.label == label)


# --- Store ------------------------------------------------------------------------------------


def test_merge_replaces_only_the_one_entry(tmp_path: Path) -> None:
    path = results.part_path(tmp_path, results.REFERENCE)
    results.merge_entry(path, results.REFERENCE, "a", 0, {"best": 1.0})
    results.merge_entry(path, results.REFERENCE, "a", 1, {"best": 2.0})
    results.merge_entry(path, results.REFERENCE, "b", 0, {"best": 3.0})
    results.merge_entry(path, results.REFERENCE, "a", 0, {"best": 4.0})
    assert results.load_entries(path) == {
        "a": {"0": {"best": 4.0}, "1": {"best": 2.0}},
        "b": {"0": {"best": 3.0}},
    }
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert stored["schema"] == results.SCHEMA and stored["part"] == results.REFERENCE


def test_seeds_are_kept_in_numeric_order(tmp_path: Path) -> None:
    path = tmp_path / "part.json"
    for seed in (10, 2, 0):
        results.merge_entry(path, "part", "row", seed, {})
    assert list(results.load_entries(path)["row"]) == ["0", "2", "10"]


def test_a_failed_write_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "part.json"
    results.write_json(path, {"entries": {"old": {}}})
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        results.write_json(path, {"entries": {"new": {}}})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.json"]  # no temp file left


def test_concurrent_merges_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "results" / "part.json"
    threads = [
        threading.Thread(target=results.merge_entry, args=(path, "part", "row", seed, {"s": seed}))
        for seed in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(int(s) for s in results.load_entries(path)["row"]) == list(range(8))


def test_unreadable_results_are_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "part.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        results.load_entries(path)
    assert results.read_json(tmp_path / "absent.json") is None


# --- Report -----------------------------------------------------------------------------------


def _reference_entry(
    check: ReferenceCheck, best: float, curve: list[tuple[int, float]], **changes: Any
) -> dict[str, Any]:
    entry = {
        "algorithm": check.algorithm,
        "env_id": check.env_id,
        "overrides": list(check.overrides),
        "metric": check.metric,
        "bar": check.bar,
        "budget": check.timesteps,
        "eval_freq": check.eval_freq,
        "eval_episodes": check.eval_episodes,
        "stop_at_bar": False,
        "stopped_at_bar": False,
        "best": best,
        "final": curve[-1][1],
        "bar_step": next((s for s, m in curve if m >= check.bar), None),
        "passed": best >= check.bar,
        "env_steps": check.timesteps,
        "wall_seconds": 300.0,
        "train_seconds": 280.0,
        "curve": [[step, mean, step / 100] for step, mean in curve],
        "recorded": "2026-01-02T03:04:05+00:00",
        "machine": {"cpu": "Test CPU", "cores": 2, "system": "Linux", "python": "3.11"},
        "command": "agentserve benchmark reference --only dqn",
    }
    entry.update(changes)
    return entry


def _store_reference(docs: Path) -> None:
    path = results.part_path(docs, results.REFERENCE)
    dqn = _check("dqn on CartPole-v1")
    curve_0 = [(5_000, 20.0), (10_000, 480.0), (100_000, 200.0)]
    curve_1 = [(5_000, 30.0), (10_000, 400.0), (100_000, 500.0)]
    results.merge_entry(path, "reference", dqn.label, 0, _reference_entry(dqn, 480.0, curve_0))
    results.merge_entry(path, "reference", dqn.label, 1, _reference_entry(dqn, 500.0, curve_1))
    stale = _reference_entry(dqn, 9.0, [(500, 9.0)], budget=1_000)
    results.merge_entry(path, "reference", dqn.label, 2, stale)
    # A stop-at-bar row that reached its bar, for two seeds.
    lunar = _check("ppo on LunarLander-v3")
    for seed, step in ((0, 300_000), (1, 500_000)):
        entry = _reference_entry(
            lunar, 210.0, [(step - 20_000, 150.0), (step, 210.0)], final=None, stopped_at_bar=True
        )
        results.merge_entry(path, "reference", lunar.label, seed, entry)


def _row(page: str, start: str) -> str:
    return next(line for line in page.splitlines() if line.startswith(start))


def test_report_renders_stored_rows_and_marks_the_rest_not_run(tmp_path: Path) -> None:
    _store_reference(tmp_path)
    figures = tmp_path / report.FIGURES
    figures.mkdir()
    (figures / "curves-taxi-v4.png").write_bytes(PNG_MAGIC)  # from an earlier render
    page = report.render(tmp_path).read_text(encoding="utf-8")

    row = _row(page, "| `dqn` | CartPole-v1 |")
    assert "| 2 of 3 (0, 1) |" in row
    assert "490 ± 10" in row  # best evaluation: mean ± std over the two current seeds
    assert "350 ± 1.5e+02" in row  # final evaluation
    assert "| 55,000 |" in row  # env steps to the bar: median of 10,000 and 100,000
    assert row.endswith("| 2/2 |")
    assert "`dqn on CartPole-v1` seed 2: recorded with budget 1000" in page  # stale, left out
    lunar = _row(page, "| `ppo` | LunarLander-v3 |")
    assert "(2 stopped at the bar)" in lunar and "400,000" in lunar
    assert (
        "| `dqn` `double_q=true` | CartPole-v1 | mean_return | 475 | 100,000 "
        "| 10 episodes every 5,000 steps | 0 of 3 | not run yet |"
    ) in page
    assert _row(page, "| `sac` | Pendulum-v1 |").count(report.NOT_RUN) == 1
    for check in CHECKS:  # every row appears, in the summary and in the detailed table
        assert f"| {check.label} |" in page
    assert "Test CPU, 2 cores, Linux, Python 3.11: 5 result(s)" in page
    assert "`agentserve benchmark reference --only dqn`" in page

    cartpole = figures / "curves-cartpole-v1.png"
    assert cartpole.read_bytes().startswith(PNG_MAGIC)
    assert "](figures/curves-cartpole-v1.png)" in page
    assert (figures / "curves-lunarlander-v3.png").is_file()
    assert not (figures / "curves-taxi-v4.png").exists()  # no results for Taxi any more
    assert "Taxi-v4" in _row(page, "No curves yet")


@pytest.mark.parametrize(
    ("bests", "verdict"),
    [
        ((230.0, 240.0, 205.0), "| yes, 3/3 seeds |"),
        ((230.0, 236.0, 173.0), "| yes (the mean of the seeds); **2/3 seeds** on their own |"),
        ((210.0, 150.0, 160.0), "| **no**, 1/3 seeds |"),
    ],
)
def test_a_row_is_met_when_the_mean_over_its_seeds_reaches_the_bar(
    tmp_path: Path, bests: tuple[float, ...], verdict: str
) -> None:
    path = results.part_path(tmp_path, results.REFERENCE)
    check = _check("sac on LunarLanderContinuous-v3")
    for seed, best in enumerate(bests):
        entry = _reference_entry(check, best, [(10_000, best)])
        results.merge_entry(path, "reference", check.label, seed, entry)
    page = report.render(tmp_path).read_text(encoding="utf-8")
    summary = _row(page, f"| {check.label} |")
    assert f"| {sum(bests) / 3:.4g} (mean of 3) " in summary
    assert summary.endswith(verdict)


def _speed_entry(ours: Outcome, sb3: Outcome) -> dict[str, Any]:
    case = CASES[0]
    return {
        "threshold": case.threshold,
        "budget": case.budget,
        "eval_freq": case.eval_freq,
        "order": ["agentserve", "sb3"],
        "agentserve": ours.to_json(),
        "sb3": sb3.to_json(),
        "sb3_class": case.sb3_class,
        "n_envs": 1,
        "hyperparameters": {"learning_rate": 0.0023},
        "sb3_kwargs": {"learning_rate": 0.0023},
        "recorded": "2026-01-02T03:04:05+00:00",
        "machine": {"cpu": "Test CPU", "cores": 2, "system": "Linux", "python": "3.11"},
        "command": "agentserve benchmark speed --seeds 2",
    }


def test_report_speed_table_ratios_and_verdicts(tmp_path: Path) -> None:
    path = results.part_path(tmp_path, results.SPEED)
    fast = _speed_entry(Outcome(20_000, 10.0, 20_000, 10.0), Outcome(25_000, 30.0, 25_000, 30.0))
    missed = _speed_entry(Outcome(None, None, 100_000, 50.0), Outcome(25_000, 30.0, 25_000, 30.0))
    results.merge_entry(path, "speed", CASES[0].label, 0, fast)
    results.merge_entry(path, "speed", CASES[0].label, 1, fast)
    results.merge_entry(path, "speed", CASES[1].label, 0, missed)
    page = report.render(tmp_path).read_text(encoding="utf-8")

    dqn = _row(page, f"| {CASES[0].label} | 475 |")
    assert "| 20,000 / 25,000 | 10 / 30 | 2,000 / 833 | 0.33 | 0.80 | 2 / 0 / 0 | 2.40 |" in dqn
    assert dqn.endswith("| **met** |")
    ppo = _row(page, f"| {CASES[1].label} | 475 |")
    assert "not reached / 25,000" in ppo and "∞ (ours not reached)" in ppo
    assert ppo.endswith("| missed: time ratio above 0.5 |")
    sac = _row(page, f"| {CASES[2].label} | -200 |")
    assert sac.endswith(f"| {report.NOT_RUN} |")
    summary = _row(page, f"| speed: {CASES[0].label}")
    assert summary.endswith("| yes |")
    assert "| dqn on CartPole-v1 | 1 | agentserve → sb3 | sb3 | 25,000 | 30 |" in page


def test_report_bandits_and_cliff_from_their_results(tmp_path: Path) -> None:
    assert "Not run yet: `.venv/bin/python benchmarks/bandits.py`" in report.render(
        tmp_path
    ).read_text(encoding="utf-8")
    results.write_json(
        results.part_path(tmp_path, results.BANDITS),
        {
            "part": "bandits",
            "recorded": "2026-01-02T03:04:05+00:00",
            "command": ".venv/bin/python benchmarks/bandits.py --runs 2000",
            "runs": 2000,
            "steps": 1000,
            "seed": 0,
            "late_steps": [500, 1000],
            "figures": ["bandits-average-reward.png"],
            "methods": [
                {
                    "label": "UCB c=2",
                    "algorithm": "ucb1",
                    "overrides": ["c=2"],
                    "late_reward": 1.5,
                    "optimal_action_final": 0.8,
                    "bar": 1.45,
                    "passed": True,
                }
            ],
        },
    )
    (tmp_path / "bandits-average-reward.png").write_bytes(PNG_MAGIC)
    results.write_json(
        results.part_path(tmp_path, results.CLIFF_WALKING),
        {
            "part": "cliff-walking",
            "recorded": "2026-01-02T03:04:05+00:00",
            "runs": 50,
            "episodes": 500,
            "figures": ["cliff-walking.png"],
            "methods": [
                {
                    "label": "SARSA",
                    "late_return": -26.25,
                    "optimal_fraction": 0.0,
                    "touches_cliff_row_fraction": 0.14,
                    "average_path": "17 steps",
                }
            ],
            "claims": [{"text": "SARSA is safer", "holds": True, "detail": "86%"}],
        },
    )
    page = report.render(tmp_path).read_text(encoding="utf-8")
    assert "| UCB c=2 | `ucb1` `c=2` | 1.500 | 80.0 | ≥ 1.45 | yes |" in page
    assert "![bandits-average-reward.png](bandits-average-reward.png)" in page
    assert "| SARSA | -26.2 | 0% | 14% | 17 steps |" in page
    assert "- Holds. SARSA is safer: 86%." in page
    assert "(figure `cliff-walking.png` is missing" in page
    assert "| 1/1 hold | yes |" in page


# --- Reference rows ---------------------------------------------------------------------------


def test_issue_rows_exist_without_looking_algorithms_up() -> None:
    rows = {(c.algorithm, c.env_id, c.timesteps, c.bar) for c in CHECKS}
    for row in (
        ("ppo", "LunarLander-v3", 1_000_000, 200),
        ("sac", "Pendulum-v1", 20_000, -200),
        ("ppo", "Pendulum-v1", 200_000, -250),
        ("sac", "LunarLanderContinuous-v3", 500_000, 200),
    ):
        assert row in rows
    assert len({c.label for c in CHECKS}) == len(CHECKS)  # labels key the results


def test_select_rows_by_substring() -> None:
    assert [c.label for c in reference.select(["LunarLander"])] == [
        "ppo on LunarLander-v3",
        "sac on LunarLanderContinuous-v3",
    ]
    with pytest.raises(ConfigError, match="matches no reference row"):
        reference.select(["no such row"])


def test_a_tiny_run_is_stored_and_then_left_out_as_another_definition(tmp_path: Path) -> None:
    row = _check("qlearning on agentserve/GridWorld-v0")
    tiny = dataclasses.replace(row, timesteps=2_000, eval_freq=1_000, seeds=(0,))
    assert reference.run_benchmark([tiny], tmp_path, command="test") in (True, False)
    entry = results.load_entries(results.part_path(tmp_path, results.REFERENCE))[row.label]["0"]
    assert entry["budget"] == 2_000 and entry["env_steps"] == 2_000
    assert [point[0] for point in entry["curve"]][:2] == [1_000, 2_000]
    assert entry["command"] == "test" and entry["machine"]["cores"] >= 1
    page = report.render(tmp_path).read_text(encoding="utf-8")
    assert "seed 0: recorded with budget 2000" in page
    assert report.NOT_RUN in _row(page, "| `qlearning` | agentserve/GridWorld-v0 |")


def test_runs_record_their_setup_and_a_changed_preset_leaves_them_out(tmp_path: Path) -> None:
    row = _check("qlearning on agentserve/GridWorld-v0")
    tiny = dataclasses.replace(row, timesteps=2_000, eval_freq=1_000, seeds=(0,))
    reference.run_benchmark([tiny], tmp_path, command="test")
    path = results.part_path(tmp_path, results.REFERENCE)
    entry = results.load_entries(path)[row.label]["0"]
    assert entry["setup"] == reference.resolved_setup(tiny)
    # The same run stored under the real row's budget counts, until the preset changes.
    agreeing = {**entry, "budget": row.timesteps, "eval_freq": row.eval_freq}
    agreeing["setup"] = reference.resolved_setup(row)
    results.merge_entry(path, results.REFERENCE, row.label, 0, agreeing)
    page = report.render(tmp_path).read_text(encoding="utf-8")
    assert report.NOT_RUN not in _row(page, "| `qlearning` | agentserve/GridWorld-v0 |")
    changed = json.loads(json.dumps(agreeing))
    changed["setup"]["hyperparameters"]["learning_rate"] = 0.123
    results.merge_entry(path, results.REFERENCE, row.label, 0, changed)
    page = report.render(tmp_path).read_text(encoding="utf-8")
    assert report.NOT_RUN in _row(page, "| `qlearning` | agentserve/GridWorld-v0 |")
    assert "trained with other hyperparameters than the preset has now" in page
    assert "learning_rate: 0.123 ->" in page


@pytest.mark.slow
def test_parallel_jobs_store_every_run(tmp_path: Path) -> None:
    row = _check("qlearning on agentserve/GridWorld-v0")
    tiny = dataclasses.replace(row, timesteps=1_000, eval_freq=500, seeds=(0, 1))
    reference.run_benchmark([tiny], tmp_path, jobs=2)
    stored = results.load_entries(results.part_path(tmp_path, results.REFERENCE))
    assert sorted(stored[row.label]) == ["0", "1"]


# --- Command line -----------------------------------------------------------------------------


def test_benchmark_subcommands_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["benchmark", "reference", "--only", "dqn", "ppo on", "--only", "sac", "--seeds", "0", "2"]
    )
    assert (args.part, args.only, args.seeds, args.jobs) == (
        "reference",
        ["dqn", "ppo on", "sac"],
        [0, 2],
        1,
    )
    assert args.stop_at_bar is None and args.out == Path("docs")
    args = parser.parse_args(["benchmark", "reference", "--jobs", "3", "--no-stop-at-bar"])
    assert (args.jobs, args.stop_at_bar, args.seeds) == (3, False, None)
    args = parser.parse_args(["benchmark", "speed", "--seeds", "2", "--only", "sac"])
    assert (args.part, args.seeds, args.only) == ("speed", 2, ["sac"])
    args = parser.parse_args(["benchmark", "report", "--out", "elsewhere"])
    assert (args.part, args.out) == ("report", Path("elsewhere"))
    args = parser.parse_args(["benchmark", "--seeds", "3"])  # the bare form: speed
    assert (args.part, args.bare_seeds) == (None, 3)
    with pytest.raises(SystemExit):
        parser.parse_args(["benchmark", "speed", "--seeds", "0"])


def test_report_command_writes_the_page(tmp_path: Path) -> None:
    assert main(["benchmark", "report", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "benchmarks.md").is_file()
    assert not (tmp_path / "results").exists()  # rendering stores nothing


def test_bare_benchmark_is_the_speed_comparison(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("stable_baselines3")
    import trainer.speed

    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(trainer.speed, "run_benchmark", lambda *a: calls.append(a))
    assert main(["benchmark", "--seeds", "2", "--out", str(tmp_path)]) == 0
    (cases, seeds, out, command) = calls[0]
    assert list(cases) == list(CASES) and list(seeds) == [0, 1] and out == tmp_path
    assert command == f"agentserve benchmark speed --seeds 2 --out {tmp_path}"
    assert (tmp_path / "benchmarks.md").is_file()
    assert main(["benchmark", "--seeds", "2", "report"]) == 2  # options go after the part

"""Side by side with Stable-Baselines3: the same algorithm, hyperparameters, seeds and evaluation,
run interleaved on one torch thread each (`agentserve benchmark speed`).

For each run: env steps and training seconds until a deterministic evaluation (10 episodes, the
same seeds and the same evaluation code for both libraries, every `eval_freq` env steps) first
reaches the threshold, and env steps per second. Evaluation time is excluded from both clocks,
and a run ends at the first evaluation that reaches the threshold. The two libraries alternate
which goes first from one seed to the next.

Our preset is translated into SB3's arguments by a table per algorithm (`MAPPINGS`): every field
of the algorithm's config must have a rule (passed under an SB3 name, required to keep a value
SB3 has no counterpart for, or unused for a stated reason), so a new hyperparameter cannot
silently make the comparison unequal. Results are merged per case and seed into
`docs/results/speed.json`; `summarize` turns them into medians, our/SB3 ratios and the verdict on
issue 3's targets, which `trainer/report.py` renders.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agentserve.errors import ConfigError
from trainer import results
from trainer.evaluation import evaluate


@dataclass(frozen=True)
class SpeedCase:
    algorithm: str
    env_id: str
    threshold: float
    budget: int
    eval_freq: int
    sb3_class: str
    target_time_ratio: float | None = 0.5
    """Issue 3's target: the median our/SB3 wall-clock ratio to threshold is at most this, and the
    median steps ratio at most 1 (None: compared, no target)."""

    @property
    def label(self) -> str:
        return f"{self.algorithm} on {self.env_id}"


CASES = (
    SpeedCase("dqn", "CartPole-v1", 475.0, 100_000, 2_500, "DQN"),
    SpeedCase("ppo", "CartPole-v1", 475.0, 100_000, 2_500, "PPO"),
    SpeedCase("sac", "Pendulum-v1", -200.0, 20_000, 1_000, "SAC"),
)

EVAL_EPISODES = 10


def select(only: Sequence[str] = (), cases: Sequence[SpeedCase] = CASES) -> list[SpeedCase]:
    """The cases whose label contains any of `only` (case-insensitive); all if empty."""
    if not only:
        return list(cases)
    for needle in only:
        if not any(needle.lower() in c.label.lower() for c in cases):
            labels = ", ".join(c.label for c in cases)
            raise ConfigError(f"--only {needle!r} matches no speed case; cases: {labels}")
    return [c for c in cases if any(n.lower() in c.label.lower() for n in only)]


# --- Our config -> Stable-Baselines3 arguments ------------------------------------------------

OMIT = object()
"""A converter's answer for "pass nothing" (e.g. an RMSprop setting while Adam is used)."""


def _same(value: Any, config: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value


@dataclass(frozen=True)
class LinearSchedule:
    """SB3's form of our "linear" schedules: progress_remaining (1 at the start, 0 at the end of
    the budget) times the initial value."""

    start: float

    def __call__(self, progress_remaining: float) -> float:
        return progress_remaining * self.start


def _scheduled(schedule_field: str) -> Callable[[Any, Any], Any]:
    def convert(value: Any, config: Any) -> Any:
        schedule = getattr(config, schedule_field)
        if schedule == "linear":
            return LinearSchedule(float(value))
        if schedule == "constant":
            return value
        raise ConfigError(f"{schedule_field}={schedule!r} has no Stable-Baselines3 counterpart")

    return convert


@dataclass(frozen=True)
class To:
    """Passed to SB3 at `path` (dotted: "policy_kwargs.net_arch"), through `convert`."""

    path: str
    convert: Callable[[Any, Any], Any] = _same


@dataclass(frozen=True)
class Requires:
    """SB3 has no counterpart: the comparison needs this value."""

    value: Any
    why: str


@dataclass(frozen=True)
class Unused:
    """Not passed, for the reason given (set by the loop, folded into another field, ...)."""

    why: str


Rule = To | Requires | Unused

_BUDGET = Unused("set by the loop to the budget; SB3 gets it from learn(total_timesteps)")


def _optimizer(value: Any, config: Any) -> Any:
    return {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}[value]


def _rmsprop_only(value: Any, config: Any) -> Any:
    return value if config.optimizer == "rmsprop" else OMIT


def _actor_critic_arch(value: Any, config: Any) -> Any:
    return {"pi": list(value), "vf": list(value)}


def _sac_ent_coef(value: Any, config: Any) -> Any:
    if value is not None:
        return float(value)
    initial = getattr(config, "ent_coef_init", None)
    return "auto" if initial is None else f"auto_{float(initial)}"


def _auto_if_none(value: Any, config: Any) -> Any:
    return "auto" if value is None else float(value)


MAPPINGS: dict[str, dict[str, Rule]] = {
    "dqn": {
        "learning_rate": To("learning_rate"),
        "batch_size": To("batch_size"),
        "buffer_size": To("buffer_size"),
        "learning_starts": To("learning_starts"),
        "gamma": To("gamma"),
        "train_freq": To("train_freq"),
        "gradient_steps": To("gradient_steps"),
        "target_update_interval": To("target_update_interval"),
        "exploration_initial_eps": To("exploration_initial_eps"),
        "exploration_final_eps": To("exploration_final_eps"),
        "exploration_fraction": To("exploration_fraction"),
        "max_grad_norm": To("max_grad_norm"),
        "net_arch": To("policy_kwargs.net_arch"),
        "n_step": To("n_steps"),
        "total_timesteps": _BUDGET,
        "double_q": Requires(False, "SB3's DQN has no Double DQN targets"),
        "dueling": Requires(False, "SB3's DQN has no dueling network"),
        "prioritized_replay": Requires(False, "SB3's DQN has no prioritized replay"),
        "per_alpha": Unused("only with prioritized_replay"),
        "per_beta0": Unused("only with prioritized_replay"),
        "per_eps": Unused("only with prioritized_replay"),
        "normalize_observations": Requires(
            False, "SB3 normalises observations in a VecNormalize wrapper, not in the policy"
        ),
        "normalize_clip": Unused("only with normalize_observations"),
    },
    "ppo": {
        "learning_rate": To("learning_rate", _scheduled("learning_rate_schedule")),
        "learning_rate_schedule": Unused("folded into learning_rate (a callable when linear)"),
        "optimizer": To("policy_kwargs.optimizer_class", _optimizer),
        "rmsprop_alpha": To("policy_kwargs.optimizer_kwargs.alpha", _rmsprop_only),
        "optimizer_eps": To("policy_kwargs.optimizer_kwargs.eps"),
        "n_steps": To("n_steps"),
        "batch_size": To("batch_size"),
        "n_epochs": To("n_epochs"),
        "gamma": To("gamma"),
        "gae_lambda": To("gae_lambda"),
        "clip_range": To("clip_range", _scheduled("clip_range_schedule")),
        "clip_range_schedule": Unused("folded into clip_range (a callable when linear)"),
        "clip_range_vf": To("clip_range_vf"),
        "normalize_advantage": To("normalize_advantage"),
        "vf_coef": To("vf_coef"),
        "ent_coef": To("ent_coef"),
        "max_grad_norm": To("max_grad_norm"),
        "net_arch": To("policy_kwargs.net_arch", _actor_critic_arch),
        "log_std_init": To("policy_kwargs.log_std_init"),
        "normalize_observations": Requires(
            False, "SB3 normalises observations in a VecNormalize wrapper, not in the policy"
        ),
        "normalize_clip": Unused("only with normalize_observations"),
        "kl_penalty": Requires(False, "SB3's PPO has only the clipped surrogate"),
        "kl_beta0": Unused("only with kl_penalty"),
        "target_kl": Unused("only with kl_penalty (SB3's target_kl is an early stop, not this)"),
        "total_timesteps": _BUDGET,
    },
    "sac": {
        "learning_rate": To("learning_rate", _scheduled("learning_rate_schedule")),
        "learning_rate_schedule": Unused("folded into learning_rate (a callable when linear)"),
        "buffer_size": To("buffer_size"),
        "learning_starts": To("learning_starts"),
        "batch_size": To("batch_size"),
        "tau": To("tau"),
        "gamma": To("gamma"),
        "train_freq": To("train_freq"),
        "gradient_steps": To("gradient_steps"),
        "ent_coef": To("ent_coef", _sac_ent_coef),
        "ent_coef_init": Unused('folded into ent_coef ("auto_<init>" when ent_coef is learned)'),
        "target_entropy": To("target_entropy", _auto_if_none),
        "target_update_interval": To("target_update_interval"),
        "net_arch": To("policy_kwargs.net_arch"),
        "log_std_min": Requires(-20.0, "SB3's SAC clamps the log standard deviation at -20"),
        "log_std_max": Requires(2.0, "SB3's SAC clamps the log standard deviation at 2"),
        "normalize_observations": Requires(
            False, "SB3 normalises observations in a VecNormalize wrapper, not in the policy"
        ),
        "normalize_clip": Unused("only with normalize_observations"),
        "total_timesteps": _BUDGET,
    },
}
"""Per algorithm, a rule for every config field. Fields listed here that a config does not have
(yet) are skipped; a config field without a rule is an error."""

FIXED: dict[str, dict[str, Any]] = {
    "ppo": {"policy_kwargs.activation_fn": torch.nn.Tanh},
}
"""SB3 arguments that hold for every config of the algorithm (our actor-critic MLPs are tanh)."""


def _put(target: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        target = target.setdefault(name, {})
    target[leaf] = value


def map_config(algorithm: str, config: Any) -> dict[str, Any]:
    """Our config (a dataclass) as keyword arguments of SB3's class for `algorithm`."""
    table = MAPPINGS.get(algorithm)
    if table is None:
        known = ", ".join(sorted(MAPPINGS))
        raise ConfigError(
            f"no Stable-Baselines3 mapping for {algorithm!r} (mapped: {known}); "
            "add a table to trainer/speed.py MAPPINGS"
        )
    kwargs: dict[str, Any] = {}
    for name, value in FIXED.get(algorithm, {}).items():
        _put(kwargs, name, value)
    for config_field in dataclasses.fields(config):
        name = config_field.name
        value = getattr(config, name)
        rule = table.get(name)
        if rule is None:
            raise ConfigError(
                f"{algorithm} hyperparameter {name!r} has no Stable-Baselines3 mapping; "
                "add a rule to trainer/speed.py MAPPINGS"
            )
        if isinstance(rule, Requires) and value != rule.value:
            raise ConfigError(
                f"{algorithm}: {name}={value!r} cannot be compared with Stable-Baselines3 "
                f"({rule.why}); the comparison needs {name}={rule.value!r}"
            )
        if isinstance(rule, To):
            converted = rule.convert(value, config)
            if converted is not OMIT:
                _put(kwargs, rule.path, converted)
    return kwargs


@dataclass(frozen=True)
class Sb3Setup:
    kwargs: dict[str, Any]
    """Keyword arguments of SB3's algorithm class."""
    n_envs: int
    """Copies of the env (SB3: make_vec_env with DummyVecEnv; ours: the lockstep collector)."""
    env_kwargs: dict[str, Any]
    hyperparameters: dict[str, Any]
    """Our resolved config, as stored with the result."""


def sb3_setup(case: SpeedCase) -> Sb3Setup:
    """Our preset for the case, in Stable-Baselines3's terms."""
    from trainer import registry
    from trainer.core.config import config_to_json, resolve

    learner = registry.get(case.algorithm)
    spec = resolve(case.algorithm, learner.config_class, case.env_id, [])
    if hasattr(spec.config, "total_timesteps"):
        spec.config.total_timesteps = case.budget
    return Sb3Setup(
        map_config(case.algorithm, spec.config),
        spec.n_envs,
        dict(spec.env_kwargs),
        config_to_json(spec.config),
    )


def sb3_kwargs(case: SpeedCase) -> dict[str, Any]:
    """Our preset for the case, in Stable-Baselines3's argument names."""
    return sb3_setup(case).kwargs


def printable(value: Any) -> Any:
    """SB3 arguments as JSON: classes by name, schedules by their repr."""
    if isinstance(value, dict):
        return {key: printable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [printable(item) for item in value]
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, LinearSchedule):
        return f"linear from {value.start:g}"
    return value


# --- Running --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    steps_to_threshold: int | None
    seconds_to_threshold: float | None
    steps: int
    train_seconds: float
    curve: tuple[tuple[int, float, float], ...] = ()
    """(step, mean evaluation return, training seconds so far) of every evaluation."""

    @property
    def steps_per_second(self) -> float:
        return self.steps / max(self.train_seconds, 1e-9)

    def to_json(self) -> dict[str, Any]:
        return {
            "steps_to_threshold": self.steps_to_threshold,
            "seconds_to_threshold": self.seconds_to_threshold,
            "steps": self.steps,
            "train_seconds": self.train_seconds,
            "steps_per_second": self.steps_per_second,
            "curve": [list(point) for point in self.curve],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        return cls(
            data["steps_to_threshold"],
            data["seconds_to_threshold"],
            int(data["steps"]),
            float(data["train_seconds"]),
            tuple((int(s), float(m), float(t)) for s, m, t in data.get("curve", [])),
        )


def eval_seed(seed: int, step: int) -> int:
    """The evaluation seed our loop uses at `step` of run `seed`; SB3's runs use the same."""
    return 10_000 + seed * 1_000 + step


def run_ours(case: SpeedCase, seed: int) -> Outcome:
    from trainer.loop import RunOptions, train

    with tempfile.TemporaryDirectory() as tmp:
        result = train(
            RunOptions(
                algorithm=case.algorithm,
                env_id=case.env_id,
                seed=seed,
                timesteps=case.budget,
                run_dir=Path(tmp),
                eval_freq=case.eval_freq,
                eval_episodes=EVAL_EPISODES,
                progress=False,
                target_return=case.threshold,
                threads=1,
            )
        )
    hit = next((e for e in result.evaluations if e[1] >= case.threshold), None)
    return Outcome(
        None if hit is None else hit[0],
        None if hit is None else hit[2],
        result.timesteps,
        result.train_seconds,
        result.evaluations,
    )


def run_sb3(case: SpeedCase, seed: int) -> Outcome:
    import numpy as np
    import stable_baselines3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    import trainer.envs  # noqa: F401  (registers the bundled env ids with Gymnasium)

    setup = sb3_setup(case)
    torch.set_num_threads(1)
    env = make_vec_env(
        case.env_id,
        n_envs=setup.n_envs,
        seed=seed,
        env_kwargs=setup.env_kwargs,
        vec_env_cls=DummyVecEnv,
    )
    model = getattr(stable_baselines3, case.sb3_class)(
        "MlpPolicy", env, seed=seed, verbose=0, device="cpu", **setup.kwargs
    )
    discrete = hasattr(env.action_space, "n")

    def act(observation: Any, mask: Any) -> Any:
        action = model.predict(observation, deterministic=True)[0]
        return int(action) if discrete else np.asarray(action, dtype=np.float32)

    class TimeToThreshold(BaseCallback):
        """Evaluates as our loop does (whenever the step count crosses a multiple of
        eval_freq), off the clock, and stops training at the first evaluation over the
        threshold."""

        def __init__(self) -> None:
            super().__init__()
            self.started = time.monotonic()
            self.overhead = 0.0
            self.evaluated = 0
            self.curve: list[tuple[int, float, float]] = []
            self.hit: tuple[int, float] | None = None

        def _on_training_start(self) -> None:
            self.started = time.monotonic()

        def _on_step(self) -> bool:
            bucket = self.num_timesteps // case.eval_freq
            if bucket == self.evaluated:
                return True
            self.evaluated = bucket
            paused = time.monotonic()
            elapsed = paused - self.started - self.overhead
            result = evaluate(
                act,
                case.env_id,
                EVAL_EPISODES,
                seed=eval_seed(seed, self.num_timesteps),
                env_kwargs=setup.env_kwargs,
            )
            self.curve.append((self.num_timesteps, result.mean, elapsed))
            if result.mean >= case.threshold and self.hit is None:
                self.hit = (self.num_timesteps, elapsed)
            self.overhead += time.monotonic() - paused
            return self.hit is None

    callback = TimeToThreshold()
    try:
        model.learn(total_timesteps=case.budget, callback=callback)
        train_seconds = time.monotonic() - callback.started - callback.overhead
    finally:
        env.close()
    return Outcome(
        None if callback.hit is None else callback.hit[0],
        None if callback.hit is None else callback.hit[1],
        int(model.num_timesteps),
        train_seconds,
        tuple(callback.curve),
    )


LIBRARIES = ("agentserve", "sb3")
RUNNERS: dict[str, Callable[[SpeedCase, int], Outcome]] = {
    "agentserve": run_ours,
    "sb3": run_sb3,
}


def _describe(outcome: Outcome) -> str:
    reached = (
        "not reached"
        if outcome.steps_to_threshold is None or outcome.seconds_to_threshold is None
        else f"{outcome.steps_to_threshold:,} steps / {outcome.seconds_to_threshold:.1f} s"
    )
    return f"threshold {reached}, {outcome.steps_per_second:.0f} env steps/s"


def run_benchmark(
    cases: Sequence[SpeedCase], seeds: Sequence[int], docs: Path, command: str = ""
) -> None:
    """Runs every case for every seed with both libraries (alternating which goes first) and
    merges each seed's pair into `<docs>/results/speed.json` as soon as both are done."""
    path = results.part_path(docs, results.SPEED)
    setups = {case.label: sb3_setup(case) for case in cases}  # an unmapped case fails first
    for case in cases:
        setup = setups[case.label]
        for seed in seeds:
            order = LIBRARIES if seed % 2 == 0 else LIBRARIES[::-1]
            outcomes: dict[str, Outcome] = {}
            for library in order:
                print(f"{case.label} seed {seed} {library}: training ...", flush=True)
                outcomes[library] = RUNNERS[library](case, seed)
                print(
                    f"{case.label} seed {seed} {library}: {_describe(outcomes[library])}",
                    flush=True,
                )
            entry: results.Entry = {
                "algorithm": case.algorithm,
                "env_id": case.env_id,
                "threshold": case.threshold,
                "budget": case.budget,
                "eval_freq": case.eval_freq,
                "eval_episodes": EVAL_EPISODES,
                "sb3_class": case.sb3_class,
                "n_envs": setup.n_envs,
                "order": list(order),
                **{library: outcomes[library].to_json() for library in LIBRARIES},
                "hyperparameters": setup.hyperparameters,
                "sb3_kwargs": printable(setup.kwargs),
                "recorded": results.now(),
                "machine": results.machine_info(("torch", "gymnasium", "stable_baselines3")),
                "command": command,
            }
            results.merge_entry(path, results.SPEED, case.label, seed, entry)
    print(f"results merged into {path}", flush=True)


# --- Summaries ------------------------------------------------------------------------------


def matches(case: SpeedCase, entry: results.Entry) -> bool:
    """Whether a stored entry was measured with the case as it is defined now."""
    return (
        entry.get("threshold") == case.threshold
        and entry.get("budget") == case.budget
        and entry.get("eval_freq") == case.eval_freq
    )


def _or_inf(value: float | None) -> float:
    return math.inf if value is None else float(value)


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs, where None (threshold not reached) counts as infinitely many steps or
    seconds: not reached by us only -> inf, by SB3 only -> 0, by neither -> None (no
    information)."""
    a, b = _or_inf(ours), _or_inf(theirs)
    if math.isinf(a) and math.isinf(b):
        return None
    if math.isinf(b):
        return 0.0
    return a / b if b > 0 else math.inf


def median(values: Sequence[float | None]) -> float | None:
    """Median of the known values (None = unknown); None if there are none."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


@dataclass(frozen=True)
class SpeedSummary:
    case: SpeedCase
    seeds: tuple[int, ...]
    steps: dict[str, float | None]
    """Median env steps to threshold per library (inf: the median run did not reach it)."""
    seconds: dict[str, float | None]
    rate: dict[str, float | None]
    """Median env steps per second per library."""
    time_ratio: float | None
    """Median over seeds of our/SB3 seconds to threshold."""
    steps_ratio: float | None
    rate_ratio: float | None
    verdict: str
    """"met", "missed: ...", "undecided: ...", "no target" or "not run yet"."""
    steps_signs: tuple[int, int, int] = (0, 0, 0)
    """Seeds where our env steps to threshold were fewer than, equal to, more than SB3's (a
    threshold not reached counts as infinitely many steps; seeds where both missed: none)."""

    @property
    def met(self) -> bool:
        return self.verdict == "met"


def summarize(case: SpeedCase, entries: dict[str, results.Entry]) -> SpeedSummary:
    """Medians, ratios and the verdict from the stored entries (seed -> entry) that match the
    case's current definition."""
    usable = {int(seed): entry for seed, entry in entries.items() if matches(case, entry)}
    outcomes = {
        library: [Outcome.from_json(entry[library]) for _, entry in sorted(usable.items())]
        for library in LIBRARIES
    }
    steps = {
        library: median([_or_inf(o.steps_to_threshold) for o in outcomes[library]])
        for library in LIBRARIES
    }
    seconds = {
        library: median([_or_inf(o.seconds_to_threshold) for o in outcomes[library]])
        for library in LIBRARIES
    }
    rate = {
        library: median([o.steps_per_second for o in outcomes[library]]) for library in LIBRARIES
    }
    pairs = list(zip(outcomes["agentserve"], outcomes["sb3"], strict=True))
    time_ratio = median([ratio(a.seconds_to_threshold, b.seconds_to_threshold) for a, b in pairs])
    step_ratios = [ratio(a.steps_to_threshold, b.steps_to_threshold) for a, b in pairs]
    steps_ratio = median(step_ratios)
    known = [r for r in step_ratios if r is not None]
    signs = (sum(r < 1 for r in known), sum(r == 1 for r in known), sum(r > 1 for r in known))
    rate_ratio = median([a.steps_per_second / max(b.steps_per_second, 1e-9) for a, b in pairs])
    if not usable:
        verdict = "not run yet"
    elif case.target_time_ratio is None:
        verdict = "no target"
    elif time_ratio is None or steps_ratio is None:
        verdict = "undecided: neither library reached the threshold"
    elif time_ratio > case.target_time_ratio:
        verdict = f"missed: time ratio above {case.target_time_ratio:g}"
    elif steps_ratio > 1.0:
        verdict = "missed: more env steps than SB3"
    else:
        verdict = "met"
    return SpeedSummary(
        case,
        tuple(sorted(usable)),
        steps,
        seconds,
        rate,
        time_ratio,
        steps_ratio,
        rate_ratio,
        verdict,
        signs,
    )


__all__ = [
    "CASES",
    "MAPPINGS",
    "LinearSchedule",
    "Outcome",
    "SpeedCase",
    "SpeedSummary",
    "map_config",
    "ratio",
    "run_benchmark",
    "run_ours",
    "run_sb3",
    "sb3_kwargs",
    "sb3_setup",
    "select",
    "summarize",
]

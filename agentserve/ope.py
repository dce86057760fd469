"""Off-policy evaluation (OPE) of a discrete target policy from a decision log.

The log is what `agentserve serve --decision-log DIR` writes (one JSON object per line,
`RECORD_FIELDS`; docs/online-learning.md): every decision the online learner made that a feedback
completed, with the probability the learner gave the action it took (its propensity mu(a|s)).
Given the target policy's probability pi(a|s) of each logged action, with weights
w = pi(a|s) / mu(a|s):

- IPS (inverse propensity scoring): V = mean(w r), with a 95% normal-approximation interval
  from the sample standard error of w r. Unbiased when mu > 0 wherever pi > 0.
- SNIPS (self-normalised IPS): V = sum(w r) / sum(w), with the delta-method standard error
  sqrt(sum(w^2 (r - V)^2)) / sum(w). Slightly biased (consistent), far lower variance.
- ESS, the effective sample size (sum w)^2 / sum(w^2): how many on-policy samples the weighted
  ones are worth. Far below n means the estimates rest on a few decisions.
- PDWIS, per-decision weighted importance sampling, for multi-step episodes: the value of an
  episode's discounted return sum_t gamma^t r_t, estimated per step t as a weighted average over
  episodes with the cumulative ratios rho_{i,t} = prod_{k<=t} pi(a_k|s_k) / mu(a_k|s_k):
  V = sum_t gamma^t (sum_i rho_{i,t} r_{i,t}) / (sum_i rho_{i,t}); an episode that ended before
  t keeps its last rho with reward 0 (so the step-t average is not conditioned on survival).
  Caveat: the cumulative ratio is a product over the steps so far, and its variance grows
  exponentially with the horizon whenever pi and mu differ: after a few dozen steps a handful of
  episodes carry all the weight (watch the ESS, computed from the episodes' final rho), and the
  weighting trades that variance for a bias that vanishes only as episodes grow numerous. Its 95%
  interval is a percentile bootstrap over episodes (`BOOTSTRAP` resamples, fixed seed), which
  understates the uncertainty when the ESS is small.

Every estimator assumes the logged propensities are the probabilities the logging policy really
used (the online learner records them exactly, exploration included) and that the logging policy
gave every action the target might take a positive probability: a deterministic logging policy
(propensity 1) says nothing about actions it never takes. IPS and SNIPS treat each decision as a
contextual-bandit decision (its own reward, its observed state); for multi-step episodes, where
the target would also change which states are visited, use PDWIS.

Why `agentserve.ope` rather than `trainer`: the estimators and the log reader need numpy only, so
they are part of the base (client) install and can analyse logs on any machine; only
`target_probabilities` uses a `service.policy.ServedPolicy` (the serve install), imported lazily.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from agentserve.errors import AgentserveError

if TYPE_CHECKING:
    from service.policy import ServedPolicy

FloatArray = npt.NDArray[np.float64]
Z95 = 1.959963984540054
"""The standard normal's 97.5% quantile (two-sided 95% intervals)."""
BOOTSTRAP = 500
"""Resamples of the PDWIS percentile bootstrap."""
RECORD_FIELDS = (
    "time",
    "policy",
    "version",
    "episode_id",
    "event_id",
    "observation",
    "action_mask",
    "action",
    "propensity",
    "reward",
    "terminated",
    "truncated",
    "step",
)
"""The keys of one decision-log line (service.online.decision_log writes them)."""
LOG_PATTERN = re.compile(r"decisions-(\d+)\.jsonl")


class DecisionLogError(AgentserveError):
    """A decision log is missing or malformed, or does not fit the target policy."""


# --- Estimators ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    estimator: str
    value: float
    low: float
    """The 95% interval (NaN where it cannot be computed, e.g. a single sample)."""
    high: float
    n: int
    """Decisions (or episodes, for the per-episode estimators)."""
    ess: float
    """Effective sample size."""

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high


def importance_weights(
    target_probabilities: npt.ArrayLike, propensities: npt.ArrayLike
) -> FloatArray:
    """w = pi(a|s) / mu(a|s); every propensity must lie in (0, 1]."""
    pi = np.asarray(target_probabilities, np.float64)
    mu = np.asarray(propensities, np.float64)
    if pi.shape != mu.shape:
        raise ValueError(f"{pi.shape} target probabilities for {mu.shape} propensities")
    if not ((mu > 0) & (mu <= 1)).all():
        raise ValueError("every logged propensity must lie in (0, 1]")
    if not ((pi >= 0) & (pi <= 1 + 1e-6)).all():
        raise ValueError("every target probability must lie in [0, 1]")
    return np.asarray(pi / mu, np.float64)


def effective_sample_size(weights: npt.ArrayLike) -> float:
    """(sum w)^2 / sum(w^2); 0 when every weight is 0."""
    w = np.asarray(weights, np.float64)
    squares = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / squares if squares > 0 else 0.0


def _pair(weights: npt.ArrayLike, rewards: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    w = np.asarray(weights, np.float64).reshape(-1)
    r = np.asarray(rewards, np.float64).reshape(-1)
    if w.shape != r.shape or w.size == 0:
        raise ValueError(f"need as many weights as rewards (at least one): {w.size}, {r.size}")
    return w, r


def _normal(estimator: str, samples: FloatArray, ess: float) -> Estimate:
    n = samples.size
    mean = float(samples.mean())
    half = Z95 * float(samples.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    return Estimate(estimator, mean, mean - half, mean + half, n, ess)


def on_policy(rewards: npt.ArrayLike, estimator: str = "logged") -> Estimate:
    """The plain mean (the logging policy's own value), with its normal 95% interval."""
    r = np.asarray(rewards, np.float64).reshape(-1)
    if r.size == 0:
        raise ValueError("no rewards")
    return _normal(estimator, r, float(r.size))


def ips(weights: npt.ArrayLike, rewards: npt.ArrayLike) -> Estimate:
    """mean(w r) +- z * std(w r) / sqrt(n)."""
    w, r = _pair(weights, rewards)
    return _normal("IPS", w * r, effective_sample_size(w))


def snips(weights: npt.ArrayLike, rewards: npt.ArrayLike) -> Estimate:
    """sum(w r) / sum(w) +- z * sqrt(sum(w^2 (r - V)^2)) / sum(w); NaN when sum(w) = 0."""
    w, r = _pair(weights, rewards)
    total = float(w.sum())
    if total <= 0:
        return Estimate("SNIPS", math.nan, math.nan, math.nan, w.size, 0.0)
    value = float(np.dot(w, r)) / total
    half = Z95 * math.sqrt(float(np.sum(w * w * (r - value) ** 2))) / total
    return Estimate("SNIPS", value, value - half, value + half, w.size, effective_sample_size(w))


@dataclass(frozen=True)
class _Flat:
    """Episodes flattened: per step its episode, its index in the episode, rho and reward."""

    episode: npt.NDArray[np.int64]
    step: npt.NDArray[np.int64]
    rho: FloatArray
    reward: FloatArray
    length: npt.NDArray[np.int64]
    final_rho: FloatArray
    horizon: int


def _flatten(episodes: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]]) -> _Flat:
    if not episodes:
        raise ValueError("no episodes")
    index, steps, rhos, rewards, lengths, finals = [], [], [], [], [], []
    for i, (ratios, episode_rewards) in enumerate(episodes):
        c, r = _pair(ratios, episode_rewards)
        if (c < 0).any():
            raise ValueError("importance ratios must be >= 0")
        rho = np.cumprod(c)
        index.append(np.full(c.size, i, np.int64))
        steps.append(np.arange(c.size, dtype=np.int64))
        rhos.append(rho)
        rewards.append(r)
        lengths.append(c.size)
        finals.append(rho[-1])
    length = np.asarray(lengths, np.int64)
    return _Flat(
        np.concatenate(index),
        np.concatenate(steps),
        np.concatenate(rhos),
        np.concatenate(rewards),
        length,
        np.asarray(finals, np.float64),
        int(length.max()),
    )


def _pdwis_value(flat: _Flat, counts: FloatArray, discounts: FloatArray) -> float:
    """The PDWIS value with episode i counted counts[i] times (1 = the sample itself)."""
    horizon = flat.horizon
    weight = flat.rho * counts[flat.episode]
    numerator = np.bincount(flat.step, weights=weight * flat.reward, minlength=horizon)
    alive = np.bincount(flat.step, weights=weight, minlength=horizon)
    ended = np.cumsum(
        np.bincount(flat.length, weights=flat.final_rho * counts, minlength=horizon + 1)
    )[:horizon]
    denominator = alive + ended
    positive = denominator > 0
    terms = np.zeros(horizon)
    terms[positive] = numerator[positive] / denominator[positive]
    return float(np.dot(discounts, terms))


def per_decision_wis(
    episodes: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]],
    gamma: float = 1.0,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
) -> Estimate:
    """Per-decision weighted importance sampling of the discounted episode return.

    `episodes`: per episode, (the per-step ratios pi(a_t|s_t) / mu(a_t|s_t), the rewards r_t), in
    step order. See the module docstring for the formula and its variance caveat. The interval is
    a percentile bootstrap over episodes; ESS is that of the episodes' final cumulative ratios."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    flat = _flatten(episodes)
    m = flat.length.size
    discounts = gamma ** np.arange(flat.horizon, dtype=np.float64)
    value = _pdwis_value(flat, np.ones(m), discounts)
    low = high = math.nan
    if bootstrap > 0 and m > 1:
        rng = np.random.default_rng(seed)
        values = [
            _pdwis_value(
                flat, np.bincount(rng.integers(0, m, m), minlength=m).astype(float), discounts
            )
            for _ in range(bootstrap)
        ]
        low, high = (float(q) for q in np.quantile(values, [0.025, 0.975]))
    return Estimate("PDWIS", value, low, high, m, effective_sample_size(flat.final_rho))


def discounted_returns(episode_rewards: Iterable[npt.ArrayLike], gamma: float) -> FloatArray:
    """Each episode's sum_t gamma^t r_t."""
    returns = []
    for rewards in episode_rewards:
        r = np.asarray(rewards, np.float64).reshape(-1)
        returns.append(float(np.dot(gamma ** np.arange(r.size, dtype=np.float64), r)))
    return np.asarray(returns, np.float64)


# --- The decision log ------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedDecision:
    """One line of a decision log (`source` = "path:line", for messages)."""

    policy: str
    version: int
    episode_id: str
    event_id: str
    observation: list[float]
    action_mask: list[bool] | None
    action: int
    propensity: float
    reward: float
    terminated: bool
    truncated: bool
    step: int
    time: float
    source: str


def log_files(paths: Sequence[Path]) -> list[Path]:
    """Files as given; a directory stands for every decisions-<n>.jsonl under it, in order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():

            def order(p: Path) -> tuple[str, int]:
                match = LOG_PATTERN.fullmatch(p.name)
                return str(p.parent), int(match.group(1)) if match else 0

            found = sorted(
                (p for p in path.rglob("decisions-*.jsonl") if LOG_PATTERN.fullmatch(p.name)),
                key=order,
            )
            if not found:
                raise DecisionLogError(f"{path}: no decisions-<n>.jsonl files in this directory")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DecisionLogError(f"{path}: no such file or directory")
    return files


def _field(raw: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in raw:
        raise DecisionLogError(f"{where}: malformed decision record: no {key!r}")
    value = raw[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise DecisionLogError(f"{where}: malformed decision record: {key!r} is {value!r}")
    return value


def parse_record(line: str, where: str) -> LoggedDecision:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as error:
        raise DecisionLogError(f"{where}: malformed decision record: {error.msg}") from None
    if not isinstance(raw, dict):
        raise DecisionLogError(f"{where}: malformed decision record: not a JSON object")
    number = (int, float)
    observation = _field(raw, "observation", list, where)
    if not all(isinstance(v, number) and not isinstance(v, bool) for v in observation):
        raise DecisionLogError(f"{where}: malformed decision record: 'observation' not numbers")
    mask = raw.get("action_mask")
    if mask is not None and not (isinstance(mask, list) and all(isinstance(v, bool) for v in mask)):
        raise DecisionLogError(f"{where}: malformed decision record: 'action_mask' is {mask!r}")
    action = raw.get("action")
    if isinstance(action, list):
        raise DecisionLogError(
            f"{where}: a continuous action: off-policy evaluation covers discrete actions only"
        )
    action = _field(raw, "action", int, where)
    propensity = float(_field(raw, "propensity", number, where))
    if not 0.0 < propensity <= 1.0:
        raise DecisionLogError(
            f"{where}: malformed decision record: propensity {propensity!r} is not in (0, 1]"
        )
    reward = float(_field(raw, "reward", number, where))
    if not math.isfinite(reward):
        raise DecisionLogError(f"{where}: malformed decision record: reward {reward!r}")
    return LoggedDecision(
        policy=str(_field(raw, "policy", str, where)),
        version=int(_field(raw, "version", int, where)),
        episode_id=str(_field(raw, "episode_id", str, where)),
        event_id=str(raw.get("event_id", "")),
        observation=[float(v) for v in observation],
        action_mask=mask,
        action=action,
        propensity=propensity,
        reward=reward,
        terminated=bool(_field(raw, "terminated", bool, where)),
        truncated=bool(_field(raw, "truncated", bool, where)),
        step=int(_field(raw, "step", int, where)),
        time=float(raw.get("time", 0.0)),
        source=where,
    )


def read_decision_log(paths: Sequence[Path]) -> list[LoggedDecision]:
    """Every record of the files (or directories) in order; blank lines are skipped."""
    records: list[LoggedDecision] = []
    for path in log_files(paths):
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    records.append(parse_record(line, f"{path}:{number}"))
    if not records:
        raise DecisionLogError(f"no decision records in {', '.join(str(p) for p in paths)}")
    return records


def episodes_of(records: Sequence[LoggedDecision]) -> list[list[int]]:
    """Record indices grouped into episodes, in log order: by (policy, episode_id), an episode
    ending at a terminated or truncated record (a later record with that id starts another)."""
    episodes: list[list[int]] = []
    open_: dict[tuple[str, str], int] = {}
    for i, record in enumerate(records):
        key = (record.policy, record.episode_id)
        if key not in open_:
            open_[key] = len(episodes)
            episodes.append([])
        episodes[open_[key]].append(i)
        if record.terminated or record.truncated:
            del open_[key]
    return episodes


def target_probabilities(
    policy: ServedPolicy, records: Sequence[LoggedDecision], chunk: int = 1024
) -> FloatArray:
    """pi(a|s) of each logged action: the target's served stochastic distribution (its own
    safety rules included) under the logged mask, computed in batches of `chunk`."""
    from service.errors import ServiceError

    if not policy.discrete:
        raise DecisionLogError(
            f"target {policy.name}/{policy.version} has continuous actions: off-policy "
            "evaluation needs a discrete policy (its probability of each logged action)"
        )
    rng = np.random.default_rng(0)
    out = np.zeros(len(records), np.float64)
    for start in range(0, len(records), chunk):
        part = records[start : start + chunk]
        items = []
        for record in part:
            if len(record.observation) != policy.flat_size:
                raise DecisionLogError(
                    f"{record.source}: the observation has {len(record.observation)} values; "
                    f"target {policy.name}/{policy.version} expects {policy.flat_size}"
                )
            if not 0 <= record.action < policy.num_actions:
                raise DecisionLogError(
                    f"{record.source}: action {record.action} is not one of the target's "
                    f"{policy.num_actions} actions"
                )
            try:
                items.append(policy.prepare(record.observation, record.action_mask or []))
            except ServiceError as error:
                raise DecisionLogError(f"{record.source}: {error}") from None
        pending = [i for i, item in enumerate(items) if item.ready is None]
        result = policy.infer([items[i] for i in pending]) if pending else None
        rows = {i: row for row, i in enumerate(pending)}
        for i, (record, item) in enumerate(zip(part, items, strict=True)):
            decision = item.ready
            if decision is None:
                assert result is not None
                decision = policy.finish(item, result, rows[i], False, rng)
            out[start + i] = float(decision.probabilities[record.action])
    return out


# --- One report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    estimates: tuple[Estimate, ...]
    decisions: int
    episodes: int
    multi_step: bool
    warnings: tuple[str, ...]

    def get(self, estimator: str) -> Estimate:
        return next(e for e in self.estimates if e.estimator == estimator)


def evaluate(
    records: Sequence[LoggedDecision],
    target: npt.ArrayLike,
    gamma: float = 1.0,
    bootstrap: int = BOOTSTRAP,
) -> Report:
    """Every estimate for one target, given its probability of each logged action (`target`).
    Per decision: "logged" (the logging policy's mean reward), IPS, SNIPS. With multi-step
    episodes also, per episode: "logged return" (mean discounted return) and PDWIS."""
    if not 0.0 <= gamma <= 1.0:
        raise DecisionLogError(f"gamma must lie in [0, 1], got {gamma}")
    pi = np.asarray(target, np.float64)
    mu = np.asarray([r.propensity for r in records], np.float64)
    rewards = np.asarray([r.reward for r in records], np.float64)
    weights = importance_weights(pi, mu)
    estimates = [on_policy(rewards), ips(weights, rewards), snips(weights, rewards)]
    episodes = episodes_of(records)
    multi_step = any(len(e) > 1 for e in episodes)
    if multi_step:
        returns = discounted_returns((rewards[e] for e in episodes), gamma)
        estimates.append(on_policy(returns, "logged return"))
        estimates.append(
            per_decision_wis([(weights[e], rewards[e]) for e in episodes], gamma, bootstrap)
        )
    warnings = []
    if (mu == 1.0).all():
        warnings.append(
            "every logged propensity is 1 (a deterministic logging policy): the log says "
            "nothing about actions it never took, so the estimates are biased for a target "
            "that takes them"
        )
    ess = effective_sample_size(weights)
    if ess < 0.1 * len(records):
        warnings.append(
            f"the effective sample size {ess:.1f} is under 10% of the {len(records)} decisions: "
            "the target differs much from the logging policy, and the estimates rest on few "
            "decisions"
        )
    return Report(tuple(estimates), len(records), len(episodes), multi_step, tuple(warnings))


def format_report(report: Report) -> str:
    header = f"{'estimator':<14} {'estimate':>10}  {'95% CI':<23} {'n':>8} {'ESS':>10}"
    lines = [header]
    for e in report.estimates:
        interval = f"[{e.low:.4f}, {e.high:.4f}]"
        lines.append(f"{e.estimator:<14} {e.value:>10.4f}  {interval:<23} {e.n:>8} {e.ess:>10.1f}")
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)

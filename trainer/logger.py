"""What a run writes while it trains: monitor.csv, TensorBoard scalars, a progress bar.

TensorBoard tags follow Stable-Baselines3's names (`rollout/ep_rew_mean`, `eval/mean_reward`,
`train/loss`, ...) so existing dashboards and habits carry over.
"""

from __future__ import annotations

import csv
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from tqdm import tqdm


class RunLogger:
    def __init__(
        self, run_dir: Path, total_steps: int, progress: bool, flush_every: int = 1000
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.start = time.monotonic()
        self.flush_every = flush_every
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self._monitor_file = (run_dir / "monitor.csv").open("a", newline="", encoding="utf-8")
        self._monitor = csv.writer(self._monitor_file)
        if self._monitor_file.tell() == 0:
            self._monitor.writerow(["r", "l", "t"])
        self.recent_returns: deque[float] = deque(maxlen=100)
        self._pending: dict[str, list[float]] = defaultdict(list)
        self._last_flush = 0
        # disable=None: a bar on a terminal, none in logs and pipes.
        self.bar = tqdm(
            total=total_steps, disable=None if progress else True, unit="step", dynamic_ncols=True
        )
        self._postfix: dict[str, str] = {}

    def advance(self, step: int) -> None:
        self.bar.update(step - self.bar.n)

    def episode(self, step: int, episode_return: float, length: int) -> None:
        self._monitor.writerow([f"{episode_return:.6g}", length, f"{self.elapsed:.3f}"])
        self.recent_returns.append(episode_return)
        mean = sum(self.recent_returns) / len(self.recent_returns)
        self._pending["rollout/ep_rew_mean"].append(mean)
        self._pending["rollout/ep_len_mean"].append(float(length))
        self._postfix["ep_rew_mean"] = f"{mean:.3g}"

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Buffers scalars; writes their means every `flush_every` steps."""
        for tag, value in values.items():
            self._pending[tag].append(value)
        if step - self._last_flush >= self.flush_every:
            self.flush(step)

    def flush(self, step: int) -> None:
        for tag, values in self._pending.items():
            if values:
                self.writer.add_scalar(tag, sum(values) / len(values), step)
        self.writer.add_scalar("time/fps", step / max(self.elapsed, 1e-9), step)
        self._monitor_file.flush()
        self._pending.clear()
        self._last_flush = step
        self.bar.set_postfix(self._postfix, refresh=False)

    def evaluation(self, step: int, result: Any) -> None:
        self.writer.add_scalar("eval/mean_reward", result.mean, step)
        self.writer.add_scalar(
            "eval/mean_ep_length", sum(result.lengths) / len(result.lengths), step
        )
        self._postfix["eval"] = f"{result.mean:.3g}"
        self.bar.set_postfix(self._postfix)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def close(self, step: int) -> None:
        self.flush(step)
        self.bar.close()
        self.writer.close()
        self._monitor_file.close()

"""The benchmark's scenarios: which RPC, how many callers in flight, over how many processes.

Every caller is closed-loop: it sends a call, waits for its answer, and sends the next one, so
`callers` is the number of calls in flight. An ActStream caller is one simulator: one long-lived
stream, one request in flight on it (send, wait for the answer, send).

A reload scenario (`reload=True`, ActStream only) is measured against our server alone: in the
middle of its measured window a new version of the benchmark policy is published into the
server's model repository, and every simulator records the version of each answer and every
failed call (the echo server has no versions to reload).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agentserve.errors import ConfigError

ACT, STREAM, BATCH = "Act", "ActStream", "ActBatch"
METHODS = (ACT, STREAM, BATCH)


@dataclass(frozen=True)
class Scenario:
    name: str
    """Short id, used by --only and as the key of the stored results."""
    method: str
    """"Act", "ActStream" or "ActBatch"."""
    callers: int
    """Calls (ActStream: streams) in flight at once, over all client processes."""
    processes: int
    """Client processes the callers are spread over (one grpc.aio channel each)."""
    batch_size: int = 1
    """Observations per call (ActBatch only)."""
    reload: bool = False
    """A new policy version is published mid-window (ActStream, our server only)."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; expected one of {METHODS}")
        if self.callers < 1 or self.processes < 1 or self.batch_size < 1:
            raise ConfigError(f"{self.name}: callers, processes and batch_size must be >= 1")
        if self.processes > self.callers:
            raise ConfigError(f"{self.name}: more client processes than callers")
        if self.method != BATCH and self.batch_size != 1:
            raise ConfigError(f"{self.name}: only ActBatch carries more than one observation")
        if self.reload and self.method != STREAM:
            raise ConfigError(f"{self.name}: only an ActStream scenario can reload a policy")

    @property
    def ours_only(self) -> bool:
        """Measured against our server only (no echo counterpart, no ratios)."""
        return self.reload

    @property
    def title(self) -> str:
        if self.method == STREAM:
            noun = "simulator" if self.callers == 1 else "simulators"
            what = f"ActStream, {self.callers} {noun} (one stream each, one request in flight)"
        elif self.method == BATCH:
            what = f"ActBatch of {self.batch_size} observations, concurrency {self.callers}"
        else:
            what = f"unary Act, concurrency {self.callers}"
        if self.reload:
            what += ", a new policy version published mid-window"
        return f"{what}; {self.processes} client process{'es' if self.processes > 1 else ''}"

    @property
    def rate_unit(self) -> str:
        """What the throughput counts: stream messages or calls."""
        return "messages/s" if self.method == STREAM else "calls/s"

    def split(self) -> list[int]:
        """Callers per client process, as even as possible."""
        base, extra = divmod(self.callers, self.processes)
        return [base + (1 if i < extra else 0) for i in range(self.processes)]


BATCH_SIZE = 64
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("act-c1", ACT, callers=1, processes=1),
    Scenario("act-c32", ACT, callers=32, processes=2),
    Scenario("stream-s1", STREAM, callers=1, processes=1),
    Scenario("stream-s32", STREAM, callers=32, processes=2),
    Scenario("batch64-c1", BATCH, callers=1, processes=1, batch_size=BATCH_SIZE),
    Scenario("batch64-c4", BATCH, callers=4, processes=2, batch_size=BATCH_SIZE),
    Scenario("reload-s32", STREAM, callers=32, processes=2, reload=True),
)


def select(names: Sequence[str]) -> list[Scenario]:
    """The scenarios named (all of them when `names` is empty), in the standard order."""
    known = {s.name for s in SCENARIOS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"unknown scenario {', '.join(unknown)}; expected some of {', '.join(sorted(known))}"
        )
    return [s for s in SCENARIOS if not names or s.name in names]

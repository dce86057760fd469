"""Our server cut short after a stage of its Act path: the servers of the latency breakdown
(`agentserve bench --breakdown`, agentserve.bench.breakdown).

A stage server is `agentserve serve` itself (same options, repository, gRPC services, metrics,
watcher), run in a child process whose `AgentServicer._act` (the decision behind `Act` and each
`ActStream` message) is replaced before the server starts:

- `answer`: every call gets the answer the full server gave to the first call for that policy
  and version; nothing else of the decision runs. What is left is our gRPC wiring: the method
  wrapper (in-flight gauge, status counter, latency histogram), the registered services, the
  event loop's other tasks.
- `validate`: `answer`, after the request's policy lookup and validation
  (`PolicyRepository.get`, `ServedPolicy.prepare`: observation parsing and finiteness, the action
  mask, the safety rules). Bad requests still fail as they do on the full server.
- `infer`: `validate`, then the runtime's inference of the request alone
  (`ServedPolicy.infer`, e.g. one onnxruntime run), its result unused.

    python -m agentserve.bench.stages STAGE serve [agentserve serve options]

Diagnostic only: these servers answer without deciding and must never serve simulators.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agentserve.errors import ConfigError
from agentserve.local_server import LocalServer
from agentserve.v1 import agent_pb2

ANSWER, VALIDATE, INFER = "answer", "validate", "infer"
STAGES = (ANSWER, VALIDATE, INFER)

Act = Callable[[Any, agent_pb2.ActRequest, Any], Awaitable[agent_pb2.ActResponse]]


def checked(stage: str) -> str:
    """`stage` if it is one of STAGES; ConfigError otherwise."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    return stage


def cut_act(stage: str, full: Act) -> Act:
    """An `AgentServicer._act` that stops after `stage`; `full` is the original, used once per
    policy version to obtain the answer that is replayed."""
    checked(stage)
    answers: dict[tuple[str, int], agent_pb2.ActResponse] = {}

    async def act(
        servicer: Any, request: agent_pb2.ActRequest, context: Any
    ) -> agent_pb2.ActResponse:
        key = (request.policy, request.version)
        answer = answers.get(key)
        if answer is None:
            answer = answers[key] = await full(servicer, request, context)
        elif stage != ANSWER:
            policy = servicer.repository.get(request.policy, request.version)
            item = policy.prepare(request.observation, request.action_mask)
            if stage == INFER and item.ready is None:
                policy.infer([item])
        return answer

    return act


def install(stage: str) -> None:
    """Replaces `AgentServicer._act` in this process by the cut of `stage`."""
    from service.servicer import AgentServicer

    AgentServicer._act = cut_act(stage, AgentServicer._act)  # type: ignore[method-assign,assignment]


class StageServer(LocalServer):
    """A stage server on free ports (`LocalServer`'s options and lifecycle)."""

    def __init__(self, stage: str, model_repo: Path | None = None, **options: Any) -> None:
        super().__init__(model_repo, **options)
        self.stage = checked(stage)
        self.name = f"{stage} stage server"

    def command(self, ready_file: Path) -> list[str]:
        serve = super().command(ready_file)
        cli = serve.index("agentserve.cli")
        return [*serve[: cli - 1], "-m", "agentserve.bench.stages", self.stage, *serve[cli + 1 :]]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in STAGES:
        print(f"usage: python -m agentserve.bench.stages {{{','.join(STAGES)}}} serve [options]")
        return 2
    install(args[0])
    from agentserve.cli import main as cli_main

    return cli_main(args[1:])


if __name__ == "__main__":
    sys.exit(main())

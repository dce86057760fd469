"""A bare gRPC echo server of `agentserve.v1.AgentService`: the benchmark's baseline.

It answers every call with a prebuilt response of the same shape as the bundled `cartpole-dqn`
policy's (a discrete action, the probability and the Q-value of each action, a propensity and a
version; ActBatch: one action and one propensity per observation), and does nothing else: no
validation, no inference, no metrics. It runs on grpc.aio with the same server options as ours,
in its own process, so what separates the two servers is the work our server does per call.

    python -m agentserve.bench.echo --port 0 --ready-file F [--actions 2] [--observation-size 4]

`EchoServer` starts it as a child process, like `agentserve.local_server.LocalServer` does ours.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from agentserve.errors import AgentserveError, ConfigError
from agentserve.local_server import ChildServer
from agentserve.v1 import agent_pb2, agent_pb2_grpc

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""The same limit as `service.server.MAX_MESSAGE_BYTES` (a unit test keeps them equal)."""
MAX_CONNECTION_AGE_S = 300.0
GRACE_S = 10.0
"""`agentserve serve`'s defaults for --max-connection-age and --grace."""


def server_options() -> list[tuple[str, int]]:
    """The channel options `service.server.AgentServer` gives its grpc.aio server by default."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
        ("grpc.max_connection_age_ms", int(MAX_CONNECTION_AGE_S * 1000)),
        ("grpc.max_connection_age_grace_ms", int(GRACE_S * 1000)),
    ]


class EchoServicer(agent_pb2_grpc.AgentServiceServicer):
    """Fixed answers: `Act` one prebuilt response, `ActStream` that response once per request,
    `ActBatch` one action per observation (responses cached by batch size)."""

    def __init__(self, actions: int = 2, observation_size: int = 4) -> None:
        if actions < 1 or observation_size < 1:
            raise ConfigError("actions and observation_size must be >= 1")
        self.observation_size = observation_size
        probability = 1.0 / actions
        self.response = agent_pb2.ActResponse(
            discrete_action=1,
            policy_version=1,
            probabilities=[probability] * actions,
            propensity=1.0,
            values=[float(a) for a in range(actions)],
        )
        self._batches: dict[int, agent_pb2.ActBatchResponse] = {}

    async def Act(self, request: agent_pb2.ActRequest, context: Any) -> agent_pb2.ActResponse:
        return self.response

    async def ActStream(
        self, request_iterator: AsyncIterator[agent_pb2.ActRequest], context: Any
    ) -> AsyncIterator[agent_pb2.ActResponse]:
        async for _ in request_iterator:
            yield self.response

    async def ActBatch(
        self, request: agent_pb2.ActBatchRequest, context: Any
    ) -> agent_pb2.ActBatchResponse:
        count = len(request.observations) // self.observation_size
        response = self._batches.get(count)
        if response is None:
            response = agent_pb2.ActBatchResponse(
                discrete_actions=[1] * count, propensities=[1.0] * count, policy_version=1
            )
            self._batches[count] = response
        return response


async def serve(host: str, port: int, ready_file: Path | None, servicer: EchoServicer) -> None:
    """Serves until SIGTERM or SIGINT; writes {"pid", "port"} to `ready_file` once listening."""
    server = grpc.aio.server(options=server_options())
    agent_pb2_grpc.add_AgentServiceServicer_to_server(  # type: ignore[no-untyped-call]
        servicer, server
    )
    address = f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise ConfigError(f"cannot listen on {address}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if ready_file is not None:
        tmp = ready_file.with_name(f".{ready_file.name}.tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "port": bound}), encoding="utf-8")
        os.replace(tmp, ready_file)
    await stop.wait()
    await server.stop(GRACE_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentserve.bench.echo",
        description="A bare gRPC echo server of agentserve.v1.AgentService (the baseline).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--ready-file", type=Path, help="write pid and port here once serving")
    parser.add_argument("--actions", type=int, default=2, help="discrete actions per response")
    parser.add_argument("--observation-size", type=int, default=4, help="floats per observation")
    args = parser.parse_args(argv)
    try:
        servicer = EchoServicer(args.actions, args.observation_size)
        asyncio.run(serve(args.host, args.port, args.ready_file, servicer))
    except AgentserveError as error:
        print(f"echo server: error: {error}", file=sys.stderr)
        return 2
    return 0


class EchoServer(ChildServer):
    """`python -m agentserve.bench.echo` as a child process on a free port.

    with EchoServer() as echo:
        stub = AgentServiceStub(grpc.insecure_channel(echo.target))
    """

    name = "echo server"

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        actions: int = 2,
        observation_size: int = 4,
        start_timeout: float = 60.0,
    ) -> None:
        super().__init__(host, start_timeout)
        self.actions = actions
        self.observation_size = observation_size

    def command(self, ready_file: Path) -> list[str]:
        command = [sys.executable, "-m", "agentserve.bench.echo", "--host", self.host]
        command += ["--port", "0", "--ready-file", str(ready_file), "--actions", str(self.actions)]
        return [*command, "--observation-size", str(self.observation_size)]


if __name__ == "__main__":
    sys.exit(main())

"""The load generator: client processes that drive one server with grpc.aio callers.

`WorkerPool` keeps a few spawned client processes alive for the whole benchmark (so every
measurement starts with warm processes) and hands each a `Job`: a target, a method, how many
callers to run in that process, and an absolute schedule. Every job of one measurement gets the
same schedule: callers start at `start_at` (wall-clock), warm up for `warmup` seconds, and the
calls that complete inside the following `seconds` are timed. Each process uses one grpc.aio
channel (one HTTP/2 connection) for its callers, and cycles through prebuilt requests with
random CartPole-like observations, so the client does the same work whatever server it drives.

A reload scenario's simulators (`_reload_caller`) are the same closed-loop ActStream callers
that also keep a `SimulatorLog`: the policy version of every answer and every failed call (an RPC
error, which ends the stream and makes the simulator open a new one, or an ActResponse carrying
`error`); they count failures instead of stopping at the first one.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from agentserve.bench.echo import MAX_MESSAGE_BYTES
from agentserve.bench.scenarios import ACT, BATCH, STREAM, Scenario
from agentserve.errors import AgentserveError
from agentserve.v1 import agent_pb2, agent_pb2_grpc

CARTPOLE_SCALE = (2.4, 3.0, 0.2095, 3.5)
"""Observations are uniform in +- these: cart position, velocity, pole angle, angular velocity."""
DISTINCT_REQUESTS = 256
"""Prebuilt requests per caller process (ActBatch: a quarter as many), used in turn."""
CALL_TIMEOUT_S = 10.0
MAX_ERRORS_KEPT = 5
"""Failures described per simulator of a reload scenario (all of them are counted)."""
REOPEN_PAUSE_S = 0.05
"""A reload simulator whose stream failed waits this long before it opens a new one."""
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


class LoadError(AgentserveError):
    """A call failed or answered with something other than what the scenario expects."""


@dataclass(frozen=True)
class Job:
    """One client process's share of one measurement."""

    target: str
    scenario: Scenario
    callers: int
    """Callers in this process."""
    policy: str
    observation_size: int
    start_at: float
    """time.time() at which the callers start (and the warm-up begins)."""
    warmup: float
    seconds: float
    seed: int


@dataclass
class VersionRun:
    """Consecutive answers of one simulator that carried the same policy version."""

    version: int
    first_at: float
    """Seconds from the start of the measured window to the first of these answers."""
    answers: int


@dataclass
class SimulatorLog:
    """What one simulator of a reload scenario saw over its whole run (warm-up included)."""

    versions: list[VersionRun] = field(default_factory=list)
    """The policy version of every answer, in order, run-length encoded."""
    failures: int = 0
    """Failed calls: RPC errors, ActResponses carrying `error` or without a discrete action."""
    errors: list[str] = field(default_factory=list)
    """The first few failures (at most MAX_ERRORS_KEPT), described."""

    def answer(self, version: int, at: float) -> None:
        """Records an answer carrying `version`, `at` seconds from the window's start."""
        if self.versions and self.versions[-1].version == version:
            self.versions[-1].answers += 1
        else:
            self.versions.append(VersionRun(version, at, 1))

    def fail(self, at: float, what: str) -> None:
        """Records a failed call, `at` seconds from the window's start."""
        self.failures += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(f"{at:+.3f} s: {what}")


@dataclass
class WorkerResult:
    latencies: list[float] = field(default_factory=list)
    """Seconds, of each call (stream message) that completed inside the measured window."""
    cpu_seconds: float = 0.0
    """This client process's CPU time (user + system) during the measured window."""
    error: str | None = None
    completions: list[float] = field(default_factory=list)
    """Reload scenarios: when each timed call completed, in seconds from the window's start (in
    the order of `latencies`)."""
    simulators: list[SimulatorLog] = field(default_factory=list)
    """Reload scenarios: one log per simulator of this process."""


@dataclass(frozen=True)
class _Window:
    begin: float
    end: float
    """time.perf_counter() bounds of the measured window."""


def observations(rng: np.random.Generator, count: int, size: int) -> npt.NDArray[np.float32]:
    """`count` x `size` float32 observations; CartPole-like ranges when `size` is 4."""
    scale = np.asarray(CARTPOLE_SCALE if size == len(CARTPOLE_SCALE) else (1.0,) * size)
    rows: npt.NDArray[np.float32] = (rng.uniform(-1.0, 1.0, size=(count, size)) * scale).astype(
        np.float32
    )
    return rows


def build_requests(job: Job) -> list[Any]:
    """The prebuilt requests of one process: ActRequests, or ActBatchRequests for ActBatch."""
    rng = np.random.default_rng(job.seed)
    if job.scenario.method == BATCH:
        count = max(1, DISTINCT_REQUESTS // 4)
        rows = observations(rng, count * job.scenario.batch_size, job.observation_size)
        per_call = rows.reshape(count, -1)
        return [
            agent_pb2.ActBatchRequest(
                policy=job.policy, observations=row.tolist(), deterministic=True
            )
            for row in per_call
        ]
    rows = observations(rng, DISTINCT_REQUESTS, job.observation_size)
    return [
        agent_pb2.ActRequest(policy=job.policy, observation=row.tolist(), deterministic=True)
        for row in rows
    ]


def _check_act(response: agent_pb2.ActResponse) -> None:
    if response.HasField("error"):
        raise LoadError(f"the server answered {response.error.code}: {response.error.message}")
    if response.WhichOneof("action") != "discrete_action":
        raise LoadError("the server answered without a discrete action")


async def _act_caller(
    stub: Any, job: Job, requests: Sequence[Any], offset: int, window: _Window, sink: list[float]
) -> None:
    clock, count, index = time.perf_counter, len(requests), offset
    _check_act(await stub.Act(requests[index % count], timeout=CALL_TIMEOUT_S))
    while (started := clock()) < window.end:
        await stub.Act(requests[index % count], timeout=CALL_TIMEOUT_S)
        done = clock()
        if window.begin <= done <= window.end:
            sink.append(done - started)
        index += 1


async def _stream_caller(
    stub: Any, job: Job, requests: Sequence[Any], offset: int, window: _Window, sink: list[float]
) -> None:
    clock, count, index = time.perf_counter, len(requests), offset
    call = stub.ActStream(timeout=window.end - clock() + CALL_TIMEOUT_S)
    try:
        await call.write(requests[index % count])
        first = await call.read()
        if first is grpc.aio.EOF:
            raise LoadError("the server ended the stream without an answer")
        _check_act(first)
        while (started := clock()) < window.end:
            await call.write(requests[index % count])
            response = await call.read()
            done = clock()
            if response is grpc.aio.EOF:
                raise LoadError("the server ended the stream early")
            if response.HasField("error"):
                _check_act(response)
            if window.begin <= done <= window.end:
                sink.append(done - started)
            index += 1
        await call.done_writing()
        if await call.read() is not grpc.aio.EOF:
            raise LoadError("the server answered a request that was not sent")
    finally:
        call.cancel()


async def _batch_caller(
    stub: Any, job: Job, requests: Sequence[Any], offset: int, window: _Window, sink: list[float]
) -> None:
    clock, count, index = time.perf_counter, len(requests), offset
    first = await stub.ActBatch(requests[index % count], timeout=CALL_TIMEOUT_S)
    if len(first.discrete_actions) != job.scenario.batch_size:
        raise LoadError(
            f"an ActBatch of {job.scenario.batch_size} observations was answered with "
            f"{len(first.discrete_actions)} discrete actions"
        )
    while (started := clock()) < window.end:
        await stub.ActBatch(requests[index % count], timeout=CALL_TIMEOUT_S)
        done = clock()
        if window.begin <= done <= window.end:
            sink.append(done - started)
        index += 1


CALLERS = {ACT: _act_caller, STREAM: _stream_caller, BATCH: _batch_caller}


async def _reload_caller(
    stub: Any,
    requests: Sequence[Any],
    offset: int,
    window: _Window,
    sink: list[float],
    times: list[float],
    log: SimulatorLog,
) -> None:
    """A simulator of a reload scenario: `_stream_caller`'s closed loop, which records the
    version of every answer and every failed call in `log`, and the completion time of every
    timed call in `times`. A failed stream is replaced by a new one."""
    clock, index = time.perf_counter, offset
    while clock() < window.end:
        call = stub.ActStream(timeout=window.end - clock() + CALL_TIMEOUT_S)
        try:
            if await _reload_stream(call, requests, index, window, sink, times, log):
                return
        except grpc.aio.AioRpcError as error:
            log.fail(clock() - window.begin, f"{error.code().name}: {error.details()}")
        finally:
            call.cancel()
        index += 1
        await asyncio.sleep(REOPEN_PAUSE_S)


async def _reload_stream(
    call: Any,
    requests: Sequence[Any],
    index: int,
    window: _Window,
    sink: list[float],
    times: list[float],
    log: SimulatorLog,
) -> bool:
    """One stream of `_reload_caller` until the window's end (True) or until the server ended
    it early (False); RPC errors propagate."""
    clock, count = time.perf_counter, len(requests)
    while (started := clock()) < window.end:
        await call.write(requests[index % count])
        response = await call.read()
        done = clock()
        index += 1
        if response is grpc.aio.EOF:
            log.fail(done - window.begin, "the server ended the stream early")
            return False
        if response.HasField("error"):
            log.fail(
                done - window.begin,
                f"the server answered {response.error.code}: {response.error.message}",
            )
            continue
        if response.WhichOneof("action") != "discrete_action":
            log.fail(done - window.begin, "the server answered without a discrete action")
            continue
        log.answer(response.policy_version, done - window.begin)
        if window.begin <= done <= window.end:
            sink.append(done - started)
            times.append(done - window.begin)
    await call.done_writing()
    if await call.read() is not grpc.aio.EOF:
        log.fail(clock() - window.begin, "the server answered a request that was not sent")
    return True


async def _cpu_during(window: _Window) -> float:
    """This process's CPU seconds between the window's bounds."""
    await asyncio.sleep(max(0.0, window.begin - time.perf_counter()))
    before = time.process_time()
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    return time.process_time() - before


async def run_job(job: Job) -> WorkerResult:
    """Runs one job to its end: connect, wait for the start, warm up, measure, return."""
    requests = build_requests(job)
    caller = CALLERS[job.scenario.method]
    async with grpc.aio.insecure_channel(job.target, options=CHANNEL_OPTIONS) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), CALL_TIMEOUT_S)
        except TimeoutError:
            raise LoadError(f"no server answered at {job.target}") from None
        stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        start = time.perf_counter() + (job.start_at - time.time())
        window = _Window(start + job.warmup, start + job.warmup + job.seconds)
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        sinks: list[list[float]] = [[] for _ in range(job.callers)]
        times: list[list[float]] = [[] for _ in range(job.callers)]
        logs = [SimulatorLog() for _ in range(job.callers)] if job.scenario.reload else []
        try:
            async with asyncio.TaskGroup() as group:
                cpu = group.create_task(_cpu_during(window))
                for i, sink in enumerate(sinks):
                    offset = i * len(requests) // job.callers
                    if job.scenario.reload:
                        group.create_task(
                            _reload_caller(stub, requests, offset, window, sink, times[i], logs[i])
                        )
                    else:
                        group.create_task(caller(stub, job, requests, offset, window, sink))
        except ExceptionGroup as failed:  # the first caller's failure; the others were cancelled
            raise _first(failed) from None
    return WorkerResult(
        [x for sink in sinks for x in sink],
        cpu.result(),
        completions=[t for caller_times in times for t in caller_times],
        simulators=logs,
    )


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _describe(error: BaseException, job: Job) -> str:
    where = f"{job.scenario.method} against {job.target}"
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{where}: {error.code().name}: {error.details()}"
    if isinstance(error, AgentserveError):
        return f"{where}: {error}"
    return f"{where}: {''.join(traceback.format_exception(error))}"


def _worker_main(conn: Connection) -> None:
    """A client process: runs the jobs it is sent, one at a time, until it is sent None."""
    conn.send("ready")
    with asyncio.Runner() as runner:
        while (job := conn.recv()) is not None:
            try:
                result = runner.run(run_job(job))
            except Exception as error:
                result = WorkerResult(error=_describe(error, job))
            conn.send(result)


class WorkerPool:
    """`size` spawned client processes; `run` gives job i to process i and waits for them all."""

    def __init__(self, size: int, start_timeout: float = 60.0) -> None:
        context = multiprocessing.get_context("spawn")
        self._workers: list[tuple[Any, Connection]] = []
        for i in range(size):
            parent, child = context.Pipe()
            process = context.Process(
                target=_worker_main, args=(child,), name=f"bench-client-{i}", daemon=True
            )
            process.start()
            child.close()
            self._workers.append((process, parent))
        try:
            for process, conn in self._workers:
                self._receive(process, conn, time.monotonic() + start_timeout)
        except BaseException:
            self.close()
            raise

    @property
    def size(self) -> int:
        return len(self._workers)

    @property
    def pids(self) -> list[int]:
        return [int(process.pid) for process, _ in self._workers]

    @staticmethod
    def _receive(process: Any, conn: Connection, deadline: float) -> Any:
        while not conn.poll(0.1):
            if not process.is_alive():
                raise AgentserveError(f"client process {process.name} died")
            if time.monotonic() > deadline:
                raise AgentserveError(f"client process {process.name} did not answer in time")
        try:
            return conn.recv()
        except EOFError:
            raise AgentserveError(f"client process {process.name} died") from None

    def submit(self, jobs: Sequence[Job]) -> None:
        """Hands job i to process i; `collect` waits for their results."""
        if len(jobs) > len(self._workers):
            raise AgentserveError(f"{len(jobs)} jobs for {len(self._workers)} client processes")
        for job, (_, conn) in zip(jobs, self._workers, strict=False):
            conn.send(job)

    def collect(self, count: int, timeout: float) -> list[WorkerResult]:
        """The results of the first `count` processes' jobs; raises LoadError if any failed."""
        deadline = time.monotonic() + timeout
        results: list[WorkerResult] = [
            self._receive(process, conn, deadline) for process, conn in self._workers[:count]
        ]
        errors = [r.error for r in results if r.error is not None]
        if errors:
            raise LoadError(errors[0])
        return results

    def run(self, jobs: Sequence[Job], timeout: float) -> list[WorkerResult]:
        """Runs the jobs at once (one per process) and returns their results."""
        self.submit(jobs)
        return self.collect(len(jobs), timeout)

    def close(self) -> None:
        for process, conn in self._workers:
            if process.is_alive():
                with contextlib.suppress(OSError):
                    conn.send(None)
        for process, conn in self._workers:
            process.join(5.0)
            if process.is_alive():
                process.terminate()
                process.join()
            conn.close()
        self._workers = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and all its threads (Linux /proc); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

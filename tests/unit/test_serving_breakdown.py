"""The latency breakdown of `agentserve bench --breakdown`: the cut stage servers and the page."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from agentserve.bench import breakdown, stats
from agentserve.bench.stages import ANSWER, INFER, STAGES, VALIDATE, StageServer, cut_act
from agentserve.cli import main
from agentserve.errors import ConfigError
from agentserve.v1 import agent_pb2, agent_pb2_grpc


class _Item:
    def __init__(self, observation: list[float]) -> None:
        self.observation = observation
        self.ready = None


class _Policy:
    def __init__(self) -> None:
        self.prepared: list[list[float]] = []
        self.inferred: list[list[float]] = []

    def prepare(self, observation: Any, action_mask: Any) -> _Item:
        if any(v != v for v in observation):  # NaN
            raise ValueError("bad observation")
        self.prepared.append(list(observation))
        return _Item(list(observation))

    def infer(self, items: list[_Item]) -> None:
        self.inferred += [item.observation for item in items]


class _Repository:
    def __init__(self) -> None:
        self.policy = _Policy()

    def get(self, name: str, version: int) -> _Policy:
        return self.policy


class _Servicer:
    def __init__(self) -> None:
        self.repository = _Repository()
        self.full_calls = 0


async def _full(servicer: Any, request: agent_pb2.ActRequest, context: Any) -> Any:
    servicer.full_calls += 1
    return agent_pb2.ActResponse(discrete_action=servicer.full_calls, policy_version=1)


def _request(*observation: float, version: int = 0) -> agent_pb2.ActRequest:
    return agent_pb2.ActRequest(policy="p", version=version, observation=list(observation))


@pytest.mark.parametrize("stage", STAGES)
def test_a_cut_act_decides_once_per_policy_version_then_replays(stage: str) -> None:
    servicer, act = _Servicer(), cut_act(stage, _full)

    async def calls() -> list[int]:
        answers = [await act(servicer, _request(0.5, 0.25), None) for _ in range(3)]
        answers.append(await act(servicer, _request(0.75, 1.5, version=2), None))
        return [a.discrete_action for a in answers]

    assert asyncio.run(calls()) == [1, 1, 1, 2]
    assert servicer.full_calls == 2
    policy = servicer.repository.policy
    assert policy.prepared == ([] if stage == ANSWER else [[0.5, 0.25]] * 2)
    assert policy.inferred == ([[0.5, 0.25]] * 2 if stage == INFER else [])


def test_the_validate_cut_still_rejects_a_bad_request() -> None:
    servicer, act = _Servicer(), cut_act(VALIDATE, _full)
    asyncio.run(act(servicer, _request(0.1), None))
    with pytest.raises(ValueError, match="bad observation"):
        asyncio.run(act(servicer, _request(float("nan")), None))


def test_unknown_stages_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown stage"):
        cut_act("decide", _full)
    with pytest.raises(ConfigError, match="unknown stage"):
        StageServer("decide")


def test_a_stage_server_runs_agentserve_serve_through_the_stage_module(tmp_path: Path) -> None:
    command = StageServer(ANSWER, tmp_path).command(tmp_path / "ready.json")
    assert command[1:5] == ["-m", "agentserve.bench.stages", ANSWER, "serve"]
    assert command[command.index("--model-repo") + 1] == str(tmp_path)
    assert "agentserve.cli" not in command


def test_a_validate_stage_server_replays_its_first_answer_and_rejects_bad_input() -> None:
    with StageServer(VALIDATE) as server, grpc.insecure_channel(server.target) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        first = stub.Act(agent_pb2.ActRequest(policy="cartpole-dqn", observation=[0.0] * 4))
        again = stub.Act(agent_pb2.ActRequest(policy="cartpole-dqn", observation=[2.0] * 4))
        assert again == first and first.policy_version >= 1
        with pytest.raises(grpc.RpcError) as error:
            stub.Act(agent_pb2.ActRequest(policy="cartpole-dqn", observation=[0.0] * 3))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _run(scenario: str, target: str, repeat: int, p50: float) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "target": target,
        "repeat": repeat,
        "p50_ms": p50,
        "rate": 1000.0 / p50,
        "server_cpu_per_call_us": 100.0 * p50,
    }


def test_the_summary_takes_medians_and_what_each_stage_adds() -> None:
    p50s = {stats.ECHO: 0.5, ANSWER: 0.52, VALIDATE: 0.6, INFER: 0.7, stats.OURS: 0.9}
    runs = [
        _run("act-c1", target, repeat, p50 + 0.1 * repeat)
        for repeat in range(3)
        for target, p50 in p50s.items()
    ]
    rows = breakdown.summarize(runs)["act-c1"]
    assert [r["target"] for r in rows] == [stats.ECHO, ANSWER, VALIDATE, INFER, stats.OURS]
    assert [r["p50_ms"] for r in rows] == pytest.approx([0.6, 0.62, 0.7, 0.8, 1.0])
    assert [r["p50_ratio"] for r in rows] == pytest.approx(
        [1.0, 0.62 / 0.6, 0.7 / 0.6, 0.8 / 0.6, 1.0 / 0.6]
    )
    assert rows[0]["added_us"] is None
    assert [r["added_us"] for r in rows[1:]] == pytest.approx([20.0, 80.0, 100.0, 200.0])


def test_breakdown_refuses_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--breakdown", "--only", "act-c1"]) == 2
    assert "--breakdown measures its own scenarios" in capsys.readouterr().err


@pytest.mark.slow
def test_a_short_breakdown_writes_the_page_and_the_results(tmp_path: Path) -> None:
    argv = ["bench", "--breakdown", "--seconds", "0.3", "--warmup", "0.1", "--repeats", "1"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / breakdown.RESULTS_FILE).read_text(encoding="utf-8"))
    assert data["command"].startswith("agentserve bench --breakdown --seconds 0.3")
    assert sorted(data["summary"]) == ["act-c1", "stream-s1"]
    assert len(data["runs"]) == 10 and all(r["calls"] > 0 for r in data["runs"])
    page = (tmp_path / breakdown.PAGE).read_text(encoding="utf-8")
    assert page == breakdown.render(data) and "| `validate`: " in page
    (tmp_path / breakdown.PAGE).unlink()
    assert main(["bench", "--breakdown", "--report-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / breakdown.PAGE).read_text(encoding="utf-8") == page


def test_report_only_breakdown_names_what_is_wrong_with_the_stored_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--breakdown", "--report-only", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "cannot read" in capsys.readouterr().err
    stored = tmp_path / breakdown.RESULTS_FILE
    stored.parent.mkdir(parents=True)
    stored.write_text("{not json", encoding="utf-8")
    assert main(argv) == 2
    assert "is not JSON" in capsys.readouterr().err
    stored.write_text(json.dumps({"format": "agentserve.serving-benchmark/1"}), encoding="utf-8")
    assert main(argv) == 2
    assert "is not a agentserve.serving-breakdown/1 file" in capsys.readouterr().err

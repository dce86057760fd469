"""The admin service and the feedback token over real gRPC, against `agentserve serve` in its own
process: exact status codes without, with a wrong and with the right bearer token; load, unload,
pin, unpin and checkpoint end to end on a copy of the bundled repository; names that try to be
paths refused; the admin port on its own listener, where configured, and never without a token."""

from __future__ import annotations

import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from artifact_cases import publish_copy, untrained_policy

from agentserve import Client, RemoteError
from agentserve.local_server import LocalServer
from agentserve.manifest import MANIFEST_FILE
from agentserve.v1 import admin_pb2, admin_pb2_grpc, agent_pb2, agent_pb2_grpc

CARTPOLE = "cartpole-dqn"
GRIDWORLD = "gridworld-qlearning"  # one version only
BANDIT_ENV = "agentserve/BernoulliBandit-v0"
OBSERVATION = [0.01, 0.0, 0.02, 0.0]


def write_token(path: Path) -> str:
    token = secrets.token_urlsafe(32)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


class Setup:
    def __init__(self, server: LocalServer, repo: Path, admin: str, feedback: str, bandit: str):
        self.server = server
        self.repo = repo
        self.admin_token = admin
        self.feedback_token = feedback
        self.bandit = bandit
        self.channel = grpc.insecure_channel(f"127.0.0.1:{server.admin_port}")
        self.stub = admin_pb2_grpc.AdminServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def admin(self, method: str, request: Any, token: str | None = "") -> Any:
        """One admin call; token "" = the right one, None = no authorization metadata."""
        token = self.admin_token if token == "" else token
        metadata = None if token is None else [("authorization", f"Bearer {token}")]
        return getattr(self.stub, method)(request, metadata=metadata, timeout=60)

    def admin_code(self, method: str, request: Any, token: str | None = "") -> grpc.StatusCode:
        try:
            self.admin(method, request, token)
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, bundled_repo: Path) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("admin")
    repo = tmp / "models"
    shutil.copytree(bundled_repo, repo)
    publish_copy(repo, CARTPOLE, 2)
    bandit = untrained_policy(repo, "ucb1", BANDIT_ENV)
    admin_token = write_token(tmp / "admin.token")
    feedback_token = write_token(tmp / "feedback.token")
    args = (
        *("--admin-port", "0", "--admin-token-file", str(tmp / "admin.token")),
        *("--feedback-token-file", str(tmp / "feedback.token")),
        *("--online", bandit, "--watch-interval", "0", "--snapshot-every", "100000"),
    )
    with LocalServer(repo, extra_args=args) as server:
        assert server.admin_port not in (0, server.port)
        running = Setup(server, repo, admin_token, feedback_token, bandit)
        yield running
        running.channel.close()


ADMIN_CALLS: list[tuple[str, Callable[[], Any]]] = [
    ("LoadPolicy", lambda: admin_pb2.LoadPolicyRequest(name=CARTPOLE)),
    ("UnloadVersion", lambda: admin_pb2.UnloadVersionRequest(name=CARTPOLE, version=1)),
    ("PinVersion", lambda: admin_pb2.PinVersionRequest(name=CARTPOLE, version=1)),
    ("UnpinVersion", lambda: admin_pb2.UnpinVersionRequest(name=CARTPOLE)),
    ("Checkpoint", lambda: admin_pb2.CheckpointRequest(name=CARTPOLE)),
]


# --- Authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "request_of"), ADMIN_CALLS, ids=[c[0] for c in ADMIN_CALLS])
def test_admin_calls_need_the_token(
    setup: Setup, method: str, request_of: Callable[[], Any]
) -> None:
    request = request_of()
    assert setup.admin_code(method, request, token=None) == grpc.StatusCode.UNAUTHENTICATED
    assert setup.admin_code(method, request, token="x" * 43) == grpc.StatusCode.PERMISSION_DENIED
    # The feedback token is not the admin token.
    wrong = setup.feedback_token
    assert setup.admin_code(method, request, token=wrong) == grpc.StatusCode.PERMISSION_DENIED


def test_malformed_authorization_is_unauthenticated(setup: Setup) -> None:
    request = admin_pb2.UnpinVersionRequest(name=CARTPOLE)
    for value in (setup.admin_token, f"Basic {setup.admin_token}", "Bearer ", "Bearer"):
        with pytest.raises(grpc.RpcError) as caught:
            setup.stub.UnpinVersion(request, metadata=[("authorization", value)], timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert setup.admin_token not in (caught.value.details() or "")
    # The scheme is case-insensitive (RFC 6750); the right token passes.
    metadata = [("authorization", f"bearer {setup.admin_token}")]
    assert setup.stub.UnpinVersion(request, metadata=metadata, timeout=10).name == CARTPOLE


def test_admin_service_is_not_on_the_serving_port(setup: Setup) -> None:
    with grpc.insecure_channel(setup.server.target) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
        metadata = [("authorization", f"Bearer {setup.admin_token}")]
        with pytest.raises(grpc.RpcError) as caught:
            stub.LoadPolicy(admin_pb2.LoadPolicyRequest(name=CARTPOLE), metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # ... and the serving API is not on the admin port.
    stub = agent_pb2_grpc.AgentServiceStub(setup.channel)  # type: ignore[no-untyped-call]
    metadata = [("authorization", f"Bearer {setup.admin_token}")]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListPolicies(agent_pb2.ListPoliciesRequest(), metadata=metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_admin_port_listens_on_loopback_only(setup: Setup) -> None:
    with socket.create_connection(("127.0.0.1", setup.server.admin_port), timeout=5):
        pass
    with pytest.raises(ConnectionRefusedError):  # another loopback address of this host
        socket.create_connection(("127.0.0.2", setup.server.admin_port), timeout=5).close()


def test_admin_messages_are_capped(setup: Setup) -> None:
    request = admin_pb2.LoadPolicyRequest(name="a" * (100 * 1024))
    assert setup.admin_code("LoadPolicy", request) == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- Names are never paths ----------------------------------------------------------------------

TRAVERSALS = ["../x", "/etc/passwd", "a/b", "..", ".", "", "../../etc/passwd", f"{CARTPOLE}/..",
              "..\\x", "Cartpole-DQN", "x\x00", "~root", "a" * 65]  # fmt: skip


@pytest.mark.parametrize("name", TRAVERSALS)
def test_names_that_are_paths_are_invalid(setup: Setup, name: str) -> None:
    requests = [
        ("LoadPolicy", admin_pb2.LoadPolicyRequest(name=name)),
        ("LoadPolicy", admin_pb2.LoadPolicyRequest(name=name, version=1)),
        ("UnloadVersion", admin_pb2.UnloadVersionRequest(name=name, version=1)),
        ("PinVersion", admin_pb2.PinVersionRequest(name=name, version=1)),
        ("UnpinVersion", admin_pb2.UnpinVersionRequest(name=name)),
        ("Checkpoint", admin_pb2.CheckpointRequest(name=name)),
    ]
    for method, request in requests:
        assert setup.admin_code(method, request) == grpc.StatusCode.INVALID_ARGUMENT, method


def test_versions_must_be_positive(setup: Setup) -> None:
    load = admin_pb2.LoadPolicyRequest(name=CARTPOLE, version=-1)
    assert setup.admin_code("LoadPolicy", load) == grpc.StatusCode.INVALID_ARGUMENT
    for method, request in [
        ("UnloadVersion", admin_pb2.UnloadVersionRequest(name=CARTPOLE, version=0)),
        ("PinVersion", admin_pb2.PinVersionRequest(name=CARTPOLE, version=-3)),
    ]:
        assert setup.admin_code(method, request) == grpc.StatusCode.INVALID_ARGUMENT, method


# --- Load, unload, pin, checkpoint --------------------------------------------------------------


def served_version(setup: Setup, version: int = 0) -> int:
    with Client(setup.server.target, CARTPOLE) as client:
        return client.act(OBSERVATION, version=version).policy_version


def test_load_unload_pin_end_to_end(setup: Setup) -> None:
    load = admin_pb2.LoadPolicyRequest
    # No watcher (--watch-interval 0): a new folder is served only once an operator loads it.
    publish_copy(setup.repo, CARTPOLE, 3)
    assert served_version(setup) == 2
    loaded = setup.admin("LoadPolicy", load(name=CARTPOLE))
    assert list(loaded.versions) == [1, 2, 3] and loaded.default_version == 3
    assert served_version(setup) == 3

    unloaded = setup.admin(
        "UnloadVersion", admin_pb2.UnloadVersionRequest(name=CARTPOLE, version=3)
    )
    assert list(unloaded.versions) == [1, 2] and list(unloaded.unloaded_versions) == [3]
    assert served_version(setup) == 2
    with pytest.raises(RemoteError, match="NOT_FOUND"):
        served_version(setup, 3)
    # A scan (another load) leaves it unloaded ...
    assert list(setup.admin("LoadPolicy", load(name=GRIDWORLD)).versions) == [1]
    assert served_version(setup) == 2
    # ... until it is loaded by name and version.
    again = setup.admin("LoadPolicy", load(name=CARTPOLE, version=3))
    assert list(again.versions) == [1, 2, 3] and not again.unloaded_versions

    pinned = setup.admin("PinVersion", admin_pb2.PinVersionRequest(name=CARTPOLE, version=1))
    assert pinned.pinned_version == 1 and pinned.default_version == 1
    assert served_version(setup) == 1
    with Client(setup.server.target) as client:
        assert client.get_policy(CARTPOLE).default_version == 1
    unpinned = setup.admin("UnpinVersion", admin_pb2.UnpinVersionRequest(name=CARTPOLE))
    assert unpinned.pinned_version == 0 and unpinned.default_version == 3
    assert served_version(setup) == 3


def test_admin_refusals(setup: Setup) -> None:
    codes = {
        "unknown policy": setup.admin_code("LoadPolicy", admin_pb2.LoadPolicyRequest(name="nope")),
        "no such version folder": setup.admin_code(
            "LoadPolicy", admin_pb2.LoadPolicyRequest(name=CARTPOLE, version=99)
        ),
        "unload what is not loaded": setup.admin_code(
            "UnloadVersion", admin_pb2.UnloadVersionRequest(name=CARTPOLE, version=99)
        ),
        "unload the only version": setup.admin_code(
            "UnloadVersion", admin_pb2.UnloadVersionRequest(name=GRIDWORLD, version=1)
        ),
        "pin what is not loaded": setup.admin_code(
            "PinVersion", admin_pb2.PinVersionRequest(name=CARTPOLE, version=99)
        ),
        "unpin an unknown policy": setup.admin_code(
            "UnpinVersion", admin_pb2.UnpinVersionRequest(name="nope")
        ),
        "checkpoint a frozen policy": setup.admin_code(
            "Checkpoint", admin_pb2.CheckpointRequest(name=CARTPOLE)
        ),
        "checkpoint an unknown policy": setup.admin_code(
            "Checkpoint", admin_pb2.CheckpointRequest(name="nope")
        ),
    }
    assert codes == {
        "unknown policy": grpc.StatusCode.NOT_FOUND,
        "no such version folder": grpc.StatusCode.NOT_FOUND,
        "unload what is not loaded": grpc.StatusCode.NOT_FOUND,
        "unload the only version": grpc.StatusCode.FAILED_PRECONDITION,
        "pin what is not loaded": grpc.StatusCode.NOT_FOUND,
        "unpin an unknown policy": grpc.StatusCode.NOT_FOUND,
        "checkpoint a frozen policy": grpc.StatusCode.FAILED_PRECONDITION,
        "checkpoint an unknown policy": grpc.StatusCode.NOT_FOUND,
    }


def test_checkpoint_publishes_and_loads_a_version(setup: Setup) -> None:
    with Client(setup.server.target, setup.bandit, token=setup.feedback_token) as client:
        for t in range(20):
            decision = client.act([0.0], deterministic=False, episode_id=f"ckpt-{t}")
            client.feedback(f"ckpt-{t}", 1.0, terminated=True, event_id=decision.event_id)
    response = setup.admin("Checkpoint", admin_pb2.CheckpointRequest(name=setup.bandit))
    assert response.version == 2 and response.updates >= 20
    assert list(response.policy.versions) == [1, 2]
    assert (setup.repo / setup.bandit / "2" / MANIFEST_FILE).is_file()


# --- The feedback token -------------------------------------------------------------------------


def feedback_codes(setup: Setup, metadata: list[tuple[str, str]] | None) -> dict[str, str]:
    """The status of Feedback, FeedbackStream and Update (and Act) with this metadata."""
    request = agent_pb2.FeedbackRequest(policy=setup.bandit, episode_id="auth", reward=1.0)
    transition = agent_pb2.Transition(
        policy=setup.bandit, observation=[0.0], discrete_action=0, reward=1.0, terminated=True,
        next_observation=[0.0], transition_id="auth-1",
    )  # fmt: skip
    calls: dict[str, Callable[[agent_pb2_grpc.AgentServiceStub], Any]] = {
        "Feedback": lambda stub: stub.Feedback(request, metadata=metadata, timeout=10),
        "FeedbackStream": lambda stub: list(
            stub.FeedbackStream(iter([request]), metadata=metadata, timeout=10)
        ),
        "Update": lambda stub: stub.Update(iter([transition]), metadata=metadata, timeout=10),
        "Act": lambda stub: stub.Act(
            agent_pb2.ActRequest(policy=setup.bandit, observation=[0.0]), timeout=10
        ),
    }
    codes = {}
    with grpc.insecure_channel(setup.server.target) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        for name, call in calls.items():
            try:
                call(stub)
                codes[name] = "OK"
            except grpc.RpcError as error:
                codes[name] = error.code().name
    return codes


def test_feedback_needs_the_token(setup: Setup) -> None:
    denied = {"Feedback": "", "FeedbackStream": "", "Update": "", "Act": "OK"}
    assert feedback_codes(setup, None) == {k: v or "UNAUTHENTICATED" for k, v in denied.items()}
    wrong = [("authorization", f"Bearer {setup.admin_token}")]
    assert feedback_codes(setup, wrong) == {k: v or "PERMISSION_DENIED" for k, v in denied.items()}
    right = [("authorization", f"Bearer {setup.feedback_token}")]
    # With the token the calls reach the learner: the episode has no decision, so Feedback is
    # answered NOT_FOUND (the stream carries it in its response's `error`).
    codes = feedback_codes(setup, right)
    assert codes == {"Feedback": "NOT_FOUND", "FeedbackStream": "OK", "Update": "OK", "Act": "OK"}


def test_the_client_sends_the_feedback_token(setup: Setup) -> None:
    with Client(setup.server.target, setup.bandit) as client:
        decision = client.act([0.0], episode_id="client-token")
        with pytest.raises(RemoteError, match="UNAUTHENTICATED"):
            client.feedback("client-token", 1.0, terminated=True, event_id=decision.event_id)
    with Client(setup.server.target, setup.bandit, token=setup.feedback_token) as client:
        ack = client.feedback("client-token", 1.0, terminated=True, event_id=decision.event_id)
        assert ack.applied


# --- Off unless enabled, and never without a token ----------------------------------------------


def test_no_admin_port_by_default(server: LocalServer) -> None:
    assert server.admin_port == 0


def test_admin_port_refused_without_a_token_file(bundled_repo: Path) -> None:
    with pytest.raises(Exception, match="--admin-port needs --admin-token-file") as caught:
        LocalServer(bundled_repo, extra_args=("--admin-port", "0")).start()
    assert "Traceback" not in str(caught.value)


def test_admin_host_is_where_it_listens(bundled_repo: Path, tmp_path: Path) -> None:
    write_token(tmp_path / "token")
    args = ("--admin-port", "0", "--admin-host", "127.0.0.2")
    with LocalServer(
        bundled_repo, extra_args=(*args, "--admin-token-file", str(tmp_path / "token"))
    ) as server:
        with socket.create_connection(("127.0.0.2", server.admin_port), timeout=5):
            pass
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.admin_port), timeout=5).close()

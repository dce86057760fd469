"""The server process: gRPC (grpc.aio) with health and reflection, a Prometheus endpoint, and a
graceful stop on SIGTERM / SIGINT (health NOT_SERVING, in-flight calls finish, exit 0)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from agentserve.errors import AgentserveError, ConfigError
from agentserve.v1 import agent_pb2, agent_pb2_grpc
from service.admin import AdminServicer, build_admin_server
from service.batching import BatchingConfig
from service.errors import ServiceError
from service.metrics import Metrics
from service.online.host import OnlinePolicy
from service.repository import PolicyRepository
from service.safety_config import load_service_config
from service.security import FEEDBACK_METHODS, BearerTokenInterceptor, listen, load_security
from service.servicer import AgentServicer

log = logging.getLogger("agentserve.server")
SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def default_model_repo() -> Path:
    """The bundled model repository shipped inside the package."""
    return Path(__file__).resolve().parent / "default_models"


@dataclass(frozen=True)
class ServerConfig:
    model_repo: Path
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = 9100
    """0 = any free port; -1 = no metrics endpoint."""
    grace_seconds: float = 10.0
    """How long in-flight calls may take to finish after SIGTERM."""
    runtime: str | None = None
    """Force one runtime ("onnx", "table", "torch") instead of each manifest's preference."""
    device: str = "cpu"
    """Where the torch runtime runs: "cpu", "cuda" or "cuda:N" (checked at start)."""
    runtime_threads: int | None = None
    """CPU threads of one inference: onnxruntime's intra-op threads, torch's thread count
    (None: onnxruntime 1, torch its own default)."""
    ready_file: Path | None = None
    """Written (JSON: pid, ports) once the server accepts calls."""
    safety_config: Path | None = None
    """Per-policy safety rules on top of the manifests' (service.safety_config)."""
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    """Dynamic micro-batching of Act / ActStream requests (service.batching)."""
    watch_interval: float = 2.0
    """Seconds between scans of the model repository for new or removed versions (0 = never)."""
    pins_file: Path | None = None
    """YAML/JSON {policy: version}: serving defaults other than the highest (re-read on change)."""
    online: tuple[str, ...] = ()
    """Policies that learn online from Feedback / Update (service.online)."""
    state_dir: Path | None = None
    """Where online learner state lives (write-ahead log, snapshots); default
    `<model_repo>/.state` (hidden: the repository scan skips it)."""
    snapshot_every: int = 1_000
    """Updates between snapshots of an online learner (each publishes a new policy version)."""
    decision_log: Path | None = None
    """Where online policies append each decision a feedback completes, as JSON lines in
    `<decision_log>/<policy>/decisions-<n>.jsonl` (service.online.decision_log); None = no log."""
    max_connection_age: float = 300.0
    """Seconds before a client connection is asked to reconnect (so new replicas get traffic)."""
    admin_port: int | None = None
    """The admin service's own port (0 = any free one); None = no admin service."""
    admin_host: str = "127.0.0.1"
    admin_token_file: Path | None = None
    """The bearer token every admin call needs (required with admin_port)."""
    feedback_token_file: Path | None = None
    """A bearer token that Feedback, FeedbackStream and Update need (Act stays open)."""
    tls_cert: Path | None = None
    """PEM certificate (chain) of the gRPC ports, serving and admin; with tls_key."""
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    """PEM CA: clients must present a certificate it signed (mutual TLS)."""


class AgentServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.security = load_security(config)  # bad token or TLS files stop the server first
        self.metrics = Metrics()
        safety: dict[str, Any] | None = None
        self.online_names = tuple(config.online)
        if config.safety_config is not None:
            safety, configured = load_service_config(config.safety_config)
            self.online_names += tuple(n for n in configured if n not in self.online_names)
        self.repository = PolicyRepository(
            config.model_repo,
            self.metrics,
            config.runtime,
            safety,
            config.pins_file,
            device=config.device,
            threads=config.runtime_threads,
        )
        self._watcher: asyncio.Task[None] | None = None
        self.health = HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.servicer: AgentServicer | None = None
        self._metrics_httpd: Any = None
        self.port = 0
        self.metrics_port = 0
        self.admin_server: grpc.aio.Server | None = None
        self.admin_port = 0

    async def start(self) -> None:
        failures = self.repository.load()
        online = self._start_online()
        interceptors = []
        if self.security.feedback_token is not None:
            interceptors.append(
                BearerTokenInterceptor(self.security.feedback_token, "feedback", FEEDBACK_METHODS)
            )
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
                ("grpc.max_connection_age_ms", int(self.config.max_connection_age * 1000)),
                ("grpc.max_connection_age_grace_ms", int(self.config.grace_seconds * 1000)),
            ],
        )
        self.servicer = AgentServicer(self.repository, self.metrics, batching=self.config.batching)
        self.servicer.online = online
        agent_pb2_grpc.add_AgentServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self.servicer, server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        self.port = listen(
            server, f"{self.config.host}:{self.config.port}", self.security.credentials
        )
        admin_server = None
        if self.config.admin_port is not None:
            if self.security.admin_token is None:  # load_security refuses this; never without
                raise ConfigError("--admin-port needs --admin-token-file")
            admin_server, self.admin_port = build_admin_server(
                AdminServicer(self.repository, self.metrics, online, self._health_follows),
                f"{self.config.admin_host}:{self.config.admin_port}",
                self.security.admin_token,
                self.security.credentials,
            )
        if self.config.metrics_port >= 0:
            try:
                self._metrics_httpd, _ = start_http_server(
                    self.config.metrics_port, addr=self.config.host, registry=self.metrics.registry
                )
            except OSError as error:
                raise ConfigError(
                    f"cannot serve metrics on {self.config.host}:{self.config.metrics_port}: "
                    f"{error.strerror}"
                ) from None
            self.metrics_port = int(self._metrics_httpd.server_port)
        await server.start()
        self.server = server
        if admin_server is not None:
            await admin_server.start()
            self.admin_server = admin_server
            log.info("admin service on %s:%d", self.config.admin_host, self.admin_port)
        await self._health_follows()
        if not self.repository.names():
            log.error("no policy loaded from %s: health stays NOT_SERVING", self.config.model_repo)
        log.info(
            "serving %d policies (%d failed to load) on %s:%d, metrics on :%d",
            len(self.repository.names()),
            len(failures),
            self.config.host,
            self.port,
            self.metrics_port,
        )
        if self.config.watch_interval > 0:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        if self.config.ready_file is not None:
            ready = {"pid": os.getpid(), "port": self.port, "metrics_port": self.metrics_port}
            if self.admin_server is not None:
                ready["admin_port"] = self.admin_port
            _write_atomically(self.config.ready_file, json.dumps(ready))

    def _start_online(self) -> dict[str, OnlinePolicy]:
        """Builds (and recovers) the learner of every --online policy; any problem stops the
        server with a clear message."""
        if not self.online_names:
            return {}
        repo = self.config.model_repo.resolve()
        state_dir = self.config.state_dir or repo / ".state"
        if not os.access(repo, os.W_OK):
            raise ConfigError(
                f"online learning publishes versions into the model repository, and {repo} is "
                "not writable (use --model-repo with a writable copy)"
            )
        online: dict[str, OnlinePolicy] = {}
        for name in self.online_names:
            try:
                served = self.repository.get(name)
            except ServiceError:
                raise ConfigError(f"online policy {name}: not in the repository") from None
            try:
                online[name] = OnlinePolicy(
                    served.manifest,
                    state_dir,
                    repo,
                    self.metrics,
                    self.config.snapshot_every,
                    decision_log=self.config.decision_log,
                )
            except AgentserveError as error:
                raise ConfigError(f"online policy {name}: {error}") from None
            except OSError as error:  # e.g. an unwritable --decision-log or --state-dir
                raise ConfigError(f"online policy {name}: {error}") from None
            log.info("%s learns online (state in %s)", name, state_dir / name)
        return online

    async def _watch(self) -> None:
        """Hot reload: new versions are loaded (off the event loop), validated and warmed, then
        swapped in; health follows whether any policy is served."""
        serving = bool(self.repository.names())
        while True:
            await asyncio.sleep(self.config.watch_interval)
            try:
                self.repository.apply(await asyncio.to_thread(self.repository.refresh))
            except Exception:  # e.g. the folder briefly unreadable: the next scan retries
                log.exception("model repository refresh failed")
            if bool(self.repository.names()) != serving:
                serving = not serving
                await self._health_follows()

    async def _health_follows(self) -> None:
        """Health SERVING while any policy is served, NOT_SERVING otherwise (at start, after a
        repository scan, after an admin call)."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.repository.names()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def stop(self) -> None:
        """Health goes NOT_SERVING, new calls are refused, in-flight calls finish (up to the
        grace period), then the metrics endpoint closes."""
        if self._watcher is not None:
            self._watcher.cancel()
        if self.admin_server is not None:
            await self.admin_server.stop(1.0)
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(self.config.grace_seconds)
        if self.servicer is not None:
            await self.servicer.batchers.close()
            for online in self.servicer.online.values():
                online.close()
        if self._metrics_httpd is not None:
            self._metrics_httpd.shutdown()
            self._metrics_httpd.server_close()
        log.info("stopped")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


async def serve_until_signalled(config: ServerConfig) -> None:
    server = AgentServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    await stop.wait()
    log.info("signal received: draining")
    await server.stop()


def run(config: ServerConfig) -> int:
    asyncio.run(serve_until_signalled(config))
    return 0

"""The admin service (protos/agentserve/v1/admin.proto): load, unload and pin policy versions,
checkpoint online learners. Served on its own port by its own server (`build_admin_server`),
behind a bearer token (service.security).

Requests name policies; they never locate them. A name is checked with `check_policy_name` and a
version is an integer, so nothing a caller sends becomes a path: loading is the repository's own
scan of `<model repository>/<name>/<version>/`, with its checks (sha256 of every file, no symlink
out of the repository)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from agentserve.errors import ManifestError
from agentserve.manifest import check_policy_name
from agentserve.v1 import admin_pb2, admin_pb2_grpc
from service.errors import FailedPrecondition, InvalidArgument, NotFound, ServiceError
from service.metrics import Metrics
from service.online.host import OnlinePolicy
from service.repository import PolicyRepository, Refresh
from service.security import BearerTokenInterceptor, listen

log = logging.getLogger("agentserve.admin")
SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
MAX_MESSAGE_BYTES = 64 * 1024
"""Admin requests and responses are a name and a few integers: anything bigger is refused."""
MAX_CONCURRENT_CALLS = 16

Response = TypeVar("Response")


def _admin_rpc(
    handler: Callable[[AdminServicer, Any, grpc.aio.ServicerContext], Awaitable[Response]],
) -> Callable[[AdminServicer, Any, grpc.aio.ServicerContext], Awaitable[Response]]:
    """Maps errors to status codes (messages for clients: never a path or exception text)."""

    @functools.wraps(handler)
    async def run(self: AdminServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except ServiceError as error:
            code, details = error.code, str(error)
        except Exception:
            log.exception("admin %s failed", handler.__name__)
            code, details = grpc.StatusCode.INTERNAL, "internal error (see the server log)"
        await context.abort(code, details)

    return run


def policy_name(name: str) -> str:
    try:
        return check_policy_name(name)
    except ManifestError:
        raise InvalidArgument(
            "invalid policy name: use 1-64 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        ) from None


def policy_version(version: int, *, zero: bool = False) -> int:
    if version < (0 if zero else 1):
        raise InvalidArgument(
            f"invalid version {version}: " + ("0 or " if zero else "") + "a positive integer"
        )
    return version


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        repository: PolicyRepository,
        metrics: Metrics,
        online: dict[str, OnlinePolicy],
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`online`: the serving servicer's learners (the same dict). `on_change`: awaited after
        the set of loaded policies may have changed (the server's health follows it)."""
        self.repository = repository
        self.metrics = metrics
        self.online = online
        self.on_change = on_change
        self._scan = asyncio.Lock()
        """One repository scan at a time from this service."""

    async def _rescan(self) -> list[tuple[str, str]]:
        """Scans the repository (off the event loop) and swaps the result in; returns the
        (policy, version) pairs that failed to load in this scan."""
        async with self._scan:
            refresh = await asyncio.to_thread(self.repository.refresh)
            failures = self.repository.apply(refresh)
        if self.on_change is not None:
            await self.on_change()
        return [(failure.policy, failure.version) for failure in failures]

    def _versions(self, name: str) -> admin_pb2.PolicyVersions:
        loaded = self.repository.versions(name)
        return admin_pb2.PolicyVersions(
            name=name,
            versions=loaded,
            default_version=self.repository.get(name).version if loaded else 0,
            pinned_version=self.repository.pins.get(name, 0),
            unloaded_versions=sorted(v for n, v in self.repository.unloaded if n == name),
        )

    @_admin_rpc
    async def LoadPolicy(
        self, request: admin_pb2.LoadPolicyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.PolicyVersions:
        name = policy_name(request.name)
        version = policy_version(request.version, zero=True)
        if version == 0:
            self.repository.unloaded -= {(n, v) for n, v in self.repository.unloaded if n == name}
        else:
            self.repository.unloaded.discard((name, version))
        failed = await self._rescan()
        loaded = self.repository.versions(name)
        if (version == 0 and not loaded) or (version != 0 and version not in loaded):
            what = f"policy {name!r}" + (f" version {version}" if version else "")
            if any(n == name and (version == 0 or v == str(version)) for n, v in failed):
                raise FailedPrecondition(f"{what} failed to load (see the server log)")
            raise NotFound(
                f"{what}: no such folder in the model repository, or it failed to load earlier "
                "(see the server log)"
            )
        log.info("admin: loaded %s (versions %s)", name, loaded)
        return self._versions(name)

    @_admin_rpc
    async def UnloadVersion(
        self, request: admin_pb2.UnloadVersionRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.PolicyVersions:
        name = policy_name(request.name)
        version = policy_version(request.version)
        self.repository.get(name, version)  # NOT_FOUND unless loaded
        if self.repository.versions(name) == [version]:
            raise FailedPrecondition(
                f"version {version} is the only loaded version of {name!r}: load another first"
            )
        self.repository.unloaded.add((name, version))
        self.repository.apply(Refresh((), (), ((name, version),), None))
        log.info("admin: unloaded %s/%d", name, version)
        return self._versions(name)

    @_admin_rpc
    async def PinVersion(
        self, request: admin_pb2.PinVersionRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.PolicyVersions:
        name = policy_name(request.name)
        version = policy_version(request.version)
        self.repository.get(name, version)  # NOT_FOUND unless loaded
        self.repository.pins = {**self.repository.pins, name: version}  # one swap
        self.metrics.default_version.labels(name).set(self.repository.get(name).version)
        log.info("admin: pinned %s to version %d", name, version)
        return self._versions(name)

    @_admin_rpc
    async def UnpinVersion(
        self, request: admin_pb2.UnpinVersionRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.PolicyVersions:
        name = policy_name(request.name)
        if name not in self.repository.pins:
            self.repository.get(name)  # NOT_FOUND for unknown policies; else nothing to do
            return self._versions(name)
        self.repository.pins = {n: v for n, v in self.repository.pins.items() if n != name}
        if self.repository.versions(name):
            self.metrics.default_version.labels(name).set(self.repository.get(name).version)
        log.info("admin: unpinned %s", name)
        return self._versions(name)

    @_admin_rpc
    async def Checkpoint(
        self, request: admin_pb2.CheckpointRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CheckpointResponse:
        name = policy_name(request.name)
        online = self.online.get(name)
        if online is None:
            self.repository.get(name)  # NOT_FOUND for unknown policies
            raise FailedPrecondition(f"policy {name!r} does not learn online")
        before = online.version
        await online.checkpoint()  # requested on the event loop, written by the learner
        if online.version == before:
            raise FailedPrecondition(
                f"the snapshot of {name!r} was written, but publishing a new version failed "
                "(see the server log)"
            )
        await self._rescan()
        if online.version not in self.repository.versions(name):
            raise FailedPrecondition(
                f"{name!r} version {online.version} was published but did not load (see the "
                "server log)"
            )
        log.info("admin: checkpointed %s as version %d", name, online.version)
        return admin_pb2.CheckpointResponse(
            version=online.version,
            updates=int(online.learner.num_steps),
            policy=self._versions(name),
        )


def build_admin_server(
    servicer: AdminServicer,
    address: str,
    token: bytes,
    credentials: grpc.ServerCredentials | None,
) -> tuple[grpc.aio.Server, int]:
    """The admin service alone on its own grpc.aio server (no health, no reflection), every call
    behind the token, messages capped at MAX_MESSAGE_BYTES. Returns the server (bound, not
    started) and its port."""
    server = grpc.aio.server(
        interceptors=[BearerTokenInterceptor(token, "admin")],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=MAX_CONCURRENT_CALLS,
    )
    admin_pb2_grpc.add_AdminServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return server, listen(server, address, credentials)

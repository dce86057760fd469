"""Channels to an agentserve server: plaintext, TLS or mutual TLS, optionally with a bearer token
on every call (the admin service; feedback when the server requires a token).

    channel = open_channel("server:50051", tls_ca="ca.pem", token="...")
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from agentserve.errors import ConfigError

PemSource = str | os.PathLike[str] | bytes
"""A PEM file's path, or its contents as bytes."""


def read_pem(source: PemSource, what: str) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as error:
        raise ConfigError(f"{what} {source}: cannot read it ({error.strerror})") from None


def channel_credentials(
    tls_ca: PemSource | None = None,
    tls_cert: PemSource | None = None,
    tls_key: PemSource | None = None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials: the CA that signed the server's certificate (None: the system's roots),
    and for mutual TLS the client's certificate and key. None when no argument is given."""
    if tls_ca is None and tls_cert is None and tls_key is None:
        return None
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("tls_cert and tls_key go together: give both, or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=None if tls_ca is None else read_pem(tls_ca, "tls_ca"),
        private_key=None if tls_key is None else read_pem(tls_key, "tls_key"),
        certificate_chain=None if tls_cert is None else read_pem(tls_cert, "tls_cert"),
    )


def open_channel(
    target: str,
    *,
    tls_ca: PemSource | None = None,
    tls_cert: PemSource | None = None,
    tls_key: PemSource | None = None,
    token: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A plaintext channel, or a TLS one when any tls_* argument is given; `token` is sent as
    `authorization: Bearer <token>` metadata on every call."""
    credentials = channel_credentials(tls_ca, tls_cert, tls_key)
    if credentials is None:
        channel = grpc.insecure_channel(target, options=list(options))
    else:
        channel = grpc.secure_channel(target, credentials, options=list(options))
    if token is None:
        return channel
    return grpc.intercept_channel(channel, BearerToken(token))


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]
):
    pass


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds `authorization: Bearer <token>` to every call of a channel."""

    def __init__(self, token: str) -> None:
        self.header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [*(details.metadata or ()), self.header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    intercept_unary_unary = _call
    intercept_unary_stream = _call
    intercept_stream_unary = _call
    intercept_stream_stream = _call

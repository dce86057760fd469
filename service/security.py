"""Who may call what: bearer tokens (the admin service; optionally online-learning feedback) and
TLS / mutual TLS for the gRPC ports. Everything is read and checked once, at start: a missing or
malformed file stops the server with a ConfigError that names the flag."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import ssl
import stat
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from agentserve.errors import ConfigError
from agentserve.v1 import agent_pb2

if TYPE_CHECKING:
    from service.server import ServerConfig

log = logging.getLogger("agentserve.security")

MIN_TOKEN_CHARS = 16
_AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
FEEDBACK_METHODS = frozenset(
    f"/{_AGENT_SERVICE}/{method}" for method in ("Feedback", "FeedbackStream", "Update")
)
"""What `--feedback-token-file` guards: everything that changes an online learner. Act, the
streams of decisions and the policy listings stay open."""


@dataclass(frozen=True)
class Security:
    credentials: grpc.ServerCredentials | None
    """TLS (and client verification) for every gRPC port; None = plaintext."""
    admin_token: bytes | None
    feedback_token: bytes | None


def load_security(config: ServerConfig) -> Security:
    """Reads and checks the token files and TLS files the config names."""
    if config.admin_port is not None and config.admin_token_file is None:
        raise ConfigError(
            "--admin-port needs --admin-token-file FILE: the admin service never runs without a "
            "token (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE)"
        )
    if config.admin_port is None and config.admin_token_file is not None:
        raise ConfigError("--admin-token-file is given but --admin-port is not: no admin service")
    admin = None
    if config.admin_token_file is not None:
        admin = read_token(config.admin_token_file, "--admin-token-file")
    feedback = None
    if config.feedback_token_file is not None:
        feedback = read_token(config.feedback_token_file, "--feedback-token-file")
    credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
    if credentials is not None:
        mutual = " with client certificates (mutual TLS)" if config.tls_client_ca else ""
        log.info("TLS on the gRPC ports%s", mutual)
    else:
        exposed = [
            flag
            for flag, token, host in (
                ("--admin-token-file", admin, config.admin_host),
                ("--feedback-token-file", feedback, config.host),
            )
            if token is not None and not _loopback(host)
        ]
        for flag in exposed:
            log.warning("%s: the token travels in plaintext off this host (add --tls-cert)", flag)
    return Security(credentials, admin, feedback)


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(path: Path, flag: str) -> bytes:
    """The token in `path` (surrounding whitespace dropped): printable ASCII, no spaces, at least
    MIN_TOKEN_CHARS characters."""
    try:
        text = path.read_text(encoding="ascii")
        mode = path.stat().st_mode
    except OSError as error:
        raise ConfigError(f"{flag} {path}: cannot read it ({error.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{flag} {path}: the token must be ASCII") from None
    token = text.strip()
    if not token:
        raise ConfigError(f"{flag} {path}: the file is empty")
    if not token.isprintable() or any(c.isspace() for c in token):
        raise ConfigError(f"{flag} {path}: the token must be one line without spaces")
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{flag} {path}: the token is too short (at least {MIN_TOKEN_CHARS} characters; "
            "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s %s is readable by other users (chmod 600 it)", flag, path)
    return token.encode("ascii")


def server_credentials(
    cert: Path | None, key: Path | None, client_ca: Path | None
) -> grpc.ServerCredentials | None:
    """TLS credentials from PEM files, checked with the ssl module first (a certificate and its
    matching private key; a CA file holding certificates), or None without --tls-cert."""
    if cert is None and key is None:
        if client_ca is not None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key (TLS itself)")
        return None
    if cert is None or key is None:
        raise ConfigError("--tls-cert and --tls-key go together: give both")
    cert_pem = _read_pem(cert, "--tls-cert")
    key_pem = _read_pem(key, "--tls-key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # A password callback that gives none: an encrypted key fails instead of prompting.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, OSError):
        raise ConfigError(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and its matching "
            "unencrypted PEM private key"
        ) from None
    ca_pem = None
    if client_ca is not None:
        ca_pem = _read_pem(client_ca, "--tls-client-ca")
        try:
            context.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError):
            raise ConfigError(f"--tls-client-ca {client_ca}: holds no PEM CA certificate") from None
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=ca_pem is not None
    )


def _read_pem(path: Path, flag: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{flag} {path}: cannot read it ({error.strerror})") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{flag} {path}: not a PEM file")
    return data


def listen(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None
) -> int:
    """Binds `address` (TLS when `credentials`); returns the port, or raises ConfigError."""
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        raise ConfigError(f"cannot listen on {address} (in use, or not an address of this host)")
    return int(port)


# --- Bearer tokens ------------------------------------------------------------------------------


def check_bearer(metadata: Sequence[tuple[str, Any]] | None, token: bytes) -> grpc.StatusCode:
    """OK for `authorization: Bearer <token>`; UNAUTHENTICATED without one bearer token;
    PERMISSION_DENIED for another token. Constant-time comparison."""
    values = [value for key, value in metadata or () if key.lower() == "authorization"]
    if len(values) != 1:
        return grpc.StatusCode.UNAUTHENTICATED
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    scheme, _, credentials = str(value).strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return grpc.StatusCode.UNAUTHENTICATED
    if not hmac.compare_digest(credentials.encode("utf-8", "replace"), token):
        return grpc.StatusCode.PERMISSION_DENIED
    return grpc.StatusCode.OK


_MESSAGES = {
    grpc.StatusCode.UNAUTHENTICATED: "this call needs 'authorization: Bearer <token>' metadata",
    grpc.StatusCode.PERMISSION_DENIED: "the bearer token is not valid for this call",
}


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls of `methods` (full method names; None = every method of the server) that do
    not carry the token, before their handler runs (a request stream is never read)."""

    def __init__(self, token: bytes, what: str, methods: Collection[str] | None = None) -> None:
        self.token = token
        self.what = what
        self.methods = None if methods is None else frozenset(methods)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if self.methods is not None and method not in self.methods:
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: UNIMPLEMENTED
            return handler
        code = check_bearer(handler_call_details.invocation_metadata, self.token)
        if code == grpc.StatusCode.OK:
            return handler
        log.warning("%s call %s refused: %s", self.what, method, code.name)
        return _refusal(handler, code, _MESSAGES[code])


def _refusal(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, details: str
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` (unary or streaming, each way) that fails with
    `code`."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, details)

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return make(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )

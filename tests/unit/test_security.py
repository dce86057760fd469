"""service.security and the admin request checks without a server: bearer-token parsing and
comparison, token files, TLS files, and the start-up refusals (`agentserve serve` exits 2 with
one line naming the flag, before loading any policy)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from agentserve import Client
from agentserve.cli import main
from agentserve.errors import AgentserveError, ConfigError
from service.admin import policy_name, policy_version
from service.errors import InvalidArgument
from service.security import check_bearer, load_security, read_token, server_credentials
from service.server import ServerConfig

TOKEN = "s3cret-token-0123456789"


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("x-other", "1"),), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", TOKEN),), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", f"Basic {TOKEN}"),), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer"),), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer  "),), grpc.StatusCode.UNAUTHENTICATED),
        (
            (("authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {TOKEN}")),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        ((("authorization", "Bearer wrong"),), grpc.StatusCode.PERMISSION_DENIED),
        ((("authorization", f"Bearer {TOKEN}x"),), grpc.StatusCode.PERMISSION_DENIED),
        ((("authorization", f"Bearer {TOKEN[:-1]}"),), grpc.StatusCode.PERMISSION_DENIED),
        ((("authorization", "Bearer tökén"),), grpc.StatusCode.PERMISSION_DENIED),
        ((("authorization", f"Bearer {TOKEN}"),), grpc.StatusCode.OK),
        ((("Authorization", f"bearer {TOKEN}"),), grpc.StatusCode.OK),
        ((("authorization", f"Bearer {TOKEN}".encode()),), grpc.StatusCode.OK),
    ],
)
def test_check_bearer(
    metadata: tuple[tuple[str, object], ...] | None, code: grpc.StatusCode
) -> None:
    assert check_bearer(metadata, TOKEN.encode()) == code  # type: ignore[arg-type]


def test_token_files(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_text(f"  {TOKEN}\n")
    assert read_token(good, "--admin-token-file") == TOKEN.encode()
    cases = {
        "cannot read": None,
        "empty": "\n",
        "too short": "short",
        "one line without spaces": "two words-0123456789",
        "ASCII": "tökén-0123456789abcdef",
    }
    for message, text in cases.items():
        path = tmp_path / message.replace(" ", "-")
        if text is not None:
            path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=message):
            read_token(path, "--admin-token-file")


def test_tls_file_combinations(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    fake = tmp_path / "fake.pem"
    fake.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    missing = tmp_path / "missing.pem"
    assert server_credentials(None, None, None) is None
    cases = [
        ((junk, None, None), "go together"),
        ((None, junk, None), "go together"),
        ((None, None, junk), "--tls-client-ca needs --tls-cert"),
        ((missing, junk, None), "--tls-cert .*cannot read"),
        ((junk, junk, None), "--tls-cert .*not a PEM file"),
        ((fake, fake, None), "not a PEM certificate and its matching"),
    ]
    for (cert, key, ca), message in cases:
        with pytest.raises(ConfigError, match=message):
            server_credentials(cert, key, ca)


def test_admin_port_needs_a_token_file(tmp_path: Path) -> None:
    config = ServerConfig(model_repo=tmp_path)
    assert load_security(config).admin_token is None
    with pytest.raises(ConfigError, match="--admin-port needs --admin-token-file"):
        load_security(replace(config, admin_port=0))
    token = tmp_path / "token"
    token.write_text(TOKEN)
    with pytest.raises(ConfigError, match="--admin-port is not"):
        load_security(replace(config, admin_token_file=token))
    security = load_security(replace(config, admin_port=0, admin_token_file=token))
    assert security.admin_token == TOKEN.encode() and security.credentials is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--admin-port", "0"], "--admin-port needs --admin-token-file"),
        (["--admin-port", "0", "--admin-token-file", "/nonexistent/t"], "cannot read"),
        (["--feedback-token-file", "/nonexistent/t"], "--feedback-token-file"),
        (["--tls-key", "/nonexistent/k"], "go together"),
    ],
)
def test_serve_refuses_to_start(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["serve", "--model-repo", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", "..", ".", "", "A", "a" * 65])
def test_admin_names_are_never_paths(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        policy_name(name)
    assert str(caught.value).startswith("invalid policy name: use 1-64")  # the name not echoed


def test_admin_versions() -> None:
    assert policy_name("cartpole-dqn") == "cartpole-dqn"
    assert policy_version(3) == 3 and policy_version(0, zero=True) == 0
    for version, zero in [(0, False), (-1, True), (-1, False)]:
        with pytest.raises(InvalidArgument):
            policy_version(version, zero=zero)


def test_client_tls_arguments(tmp_path: Path) -> None:
    with pytest.raises(AgentserveError, match="go together"):
        Client("127.0.0.1:1", tls_cert=b"x")
    with pytest.raises(AgentserveError, match="cannot read"):
        Client("127.0.0.1:1", tls_ca=tmp_path / "missing.pem")
    with grpc.insecure_channel("127.0.0.1:1") as channel:
        with pytest.raises(AgentserveError, match="not both"):
            Client(channel=channel, token="t")
        Client(channel=channel).close()

"""TLS and mutual TLS on the serving and admin ports, with certificates made here: a CA, a server
certificate for 127.0.0.1 / localhost, a client certificate, and a second CA that signed neither.
A handshake succeeds with the right CA and fails with the wrong one or in plaintext; with
--tls-client-ca a client without a certificate (or with one of another CA) is refused and one with
a certificate of the CA gets through. Bad TLS files stop the server at start with a clear error."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agentserve import Client, RemoteError
from agentserve.channel import open_channel
from agentserve.cli import main
from agentserve.local_server import LocalServer
from agentserve.v1 import admin_pb2, admin_pb2_grpc

CARTPOLE = "cartpole-dqn"
Key = ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: Key,
    issuer: tuple[x509.Certificate, Key] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    if issuer is None:  # self-signed
        issuer_name, signing_key = _name(subject), key
    else:
        issuer_name, signing_key = issuer[0].subject, issuer[1]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path


def make_pki(folder: Path) -> Pki:
    def write(name: str, item: x509.Certificate | Key) -> Path:
        path = folder / name
        if isinstance(item, x509.Certificate):
            path.write_bytes(item.public_bytes(serialization.Encoding.PEM))
        else:
            path.write_bytes(
                item.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            path.chmod(0o600)
        return path

    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "srv", "cli", "oca", "ocli")}
    ca = _certificate("agentserve test CA", keys["ca"], None, ca=True)
    other_ca = _certificate("another CA", keys["oca"], None, ca=True)
    server = _certificate("localhost", keys["srv"], (ca, keys["ca"]), server=True)
    client = _certificate("simulator", keys["cli"], (ca, keys["ca"]))
    other_client = _certificate("stranger", keys["ocli"], (other_ca, keys["oca"]))
    return Pki(
        ca=write("ca.pem", ca),
        server_cert=write("server.pem", server),
        server_key=write("server.key", keys["srv"]),
        client_cert=write("client.pem", client),
        client_key=write("client.key", keys["cli"]),
        other_ca=write("other-ca.pem", other_ca),
        other_client_cert=write("other-client.pem", other_client),
        other_client_key=write("other-client.key", keys["ocli"]),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_args(pki: Pki) -> tuple[str, ...]:
    return ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))


def reachable(target: str, **kwargs: object) -> bool:
    """Whether a ListPolicies call gets through (False: the handshake failed)."""
    with Client(target, timeout=5, **kwargs) as client:  # type: ignore[arg-type]
        try:
            return bool(client.list_policies())
        except RemoteError as error:
            code = error.code
    assert code == "UNAVAILABLE", code
    return False


@dataclass
class TlsServer:
    server: LocalServer
    token: str


@pytest.fixture(scope="module")
def tls_server(
    pki: Pki, bundled_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsServer]:
    token_file = tmp_path_factory.mktemp("token") / "admin.token"
    token = secrets.token_urlsafe(32)
    token_file.write_text(token)
    args = (*tls_args(pki), "--admin-port", "0", "--admin-token-file", str(token_file))
    with LocalServer(bundled_repo, extra_args=args) as server:
        yield TlsServer(server, token)


def test_tls_handshake_needs_the_right_ca(tls_server: TlsServer, pki: Pki) -> None:
    target = tls_server.server.target
    assert reachable(target, tls_ca=pki.ca)
    assert reachable(f"localhost:{tls_server.server.port}", tls_ca=pki.ca.read_bytes())
    assert not reachable(target, tls_ca=pki.other_ca)
    assert not reachable(target)  # plaintext against a TLS port


def test_the_admin_port_speaks_tls_too(tls_server: TlsServer, pki: Pki) -> None:
    target = f"127.0.0.1:{tls_server.server.admin_port}"
    request = admin_pb2.UnpinVersionRequest(name=CARTPOLE)
    with open_channel(target, tls_ca=pki.ca, token=tls_server.token) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
        assert stub.UnpinVersion(request, timeout=10).name == CARTPOLE
    for channel in (
        open_channel(target, tls_ca=pki.other_ca, token=tls_server.token),
        open_channel(target, token=tls_server.token),
    ):
        with channel:
            stub = admin_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError) as caught:
                stub.UnpinVersion(request, timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_health_command_over_tls(
    tls_server: TlsServer, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tls_server.server.target
    assert main(["health", "--target", target, "--tls-ca", str(pki.ca)]) == 0
    assert main(["health", "--target", target, "--tls-ca", str(pki.other_ca)]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_mutual_tls_needs_a_client_certificate_of_the_ca(pki: Pki, bundled_repo: Path) -> None:
    args = (*tls_args(pki), "--tls-client-ca", str(pki.ca))
    with LocalServer(bundled_repo, extra_args=args) as server:
        target = server.target
        assert not reachable(target, tls_ca=pki.ca)  # no client certificate
        assert not reachable(
            target, tls_ca=pki.ca, tls_cert=pki.other_client_cert, tls_key=pki.other_client_key
        )
        assert reachable(target, tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key)
        assert reachable(
            target,
            tls_ca=pki.ca.read_bytes(),
            tls_cert=pki.client_cert.read_bytes(),
            tls_key=pki.client_key.read_bytes(),
        )
        health = ["health", "--target", target, "--tls-ca", str(pki.ca)]
        assert main(health) == 1
        client = ["--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]
        assert main([*health, *client]) == 0


def test_a_key_of_another_certificate_stops_the_server(pki: Pki, bundled_repo: Path) -> None:
    """(More bad files: tests/unit/test_security.py.)"""
    args = ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.client_key))
    with pytest.raises(Exception, match="its matching") as caught:
        LocalServer(bundled_repo, extra_args=args).start()
    assert "Traceback" not in str(caught.value)

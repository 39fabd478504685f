"""The signed-HTTP S3 reader over TLS with a private CA (``AWS_CA_BUNDLE``) and through a proxy
(``HTTPS_PROXY``, ``NO_PROXY``): a TLS-terminating relay in front of SeaweedFS and a CONNECT proxy, both
threads of this test on loopback; the CA and certificate are made with ``cryptography``."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from forensics_archive import EVERYTHING, build

from archiver.cli.main import main
from archiver.config import ArchiveSettings


def make_ca_and_cert(directory: Path) -> tuple[Path, Path, Path]:
    """(CA PEM, server certificate PEM, server key PEM) for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "archiver test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return paths


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, target):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class Relay:
    """A loopback listener handing each connection to ``handle`` in a thread (daemon: ends with the test)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.listener.close()


class TlsTerminator(Relay):
    """TLS on the outside, SeaweedFS's plain HTTP port inside."""

    def __init__(self, cert: Path, key: Path, upstream: tuple[str, int]) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.upstream = upstream
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            conn.close()  # a client that does not trust us: the handshake fails, as it should
            return
        inner = socket.create_connection(self.upstream)
        threading.Thread(target=_pipe, args=(inner, tls), daemon=True).start()
        _pipe(tls, inner)


class ConnectProxy(Relay):
    """An HTTP proxy that only tunnels (CONNECT), recording each request head."""

    def __init__(self) -> None:
        self.heads: list[str] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                conn.close()
                return
            head += chunk
        text = head.decode("latin-1")
        self.heads.append(text)
        method, target = text.split(" ", 2)[:2]
        if method != "CONNECT":
            conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            conn.close()
            return
        host, port = target.rsplit(":", 1)
        inner = socket.create_connection((host, int(port)))
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        threading.Thread(target=_pipe, args=(inner, conn), daemon=True).start()
        _pipe(conn, inner)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory, seaweedfs) -> Iterator[tuple[Path, TlsTerminator]]:  # type: ignore[no-untyped-def]
    ca, cert, key = make_ca_and_cert(tmp_path_factory.mktemp("tls"))
    parts = urlsplit(seaweedfs.endpoint_url)
    terminator = TlsTerminator(cert, key, (parts.hostname or "127.0.0.1", parts.port or 80))
    yield ca, terminator
    terminator.close()


def query(settings: ArchiveSettings, endpoint: str, env: dict[str, str | None], *args: str) -> Result:
    environ: dict[str, str | None] = {
        "ARCHIVE_URL": None, "BUCKET_NAME": None, "AWS_ENDPOINT_URL_S3": endpoint, "AWS_REGION": settings.s3.region,
        "AWS_ACCESS_KEY_ID": settings.s3.access_key_id, "AWS_SECRET_ACCESS_KEY": settings.s3.secret_access_key,
        "AWS_CA_BUNDLE": None, "HTTPS_PROXY": None, "https_proxy": None, "HTTP_PROXY": None, "http_proxy": None,
        "NO_PROXY": None, "no_proxy": None, **env,
    }  # fmt: skip
    return CliRunner().invoke(main, ["query", "--archive", settings.url, *args], env=environ)


def test_tls_with_a_ca_bundle_and_through_a_proxy(
    s3_settings: ArchiveSettings, tls: tuple[Path, TlsTerminator]
) -> None:
    ca, terminator = tls
    build(s3_settings)
    args = [*EVERYTHING, "--where", "status>=500", "--format", "json"]
    plain = query(s3_settings, s3_settings.s3.endpoint_url or "", {}, *args)
    assert plain.exit_code == 0 and plain.stdout, plain.output
    https = f"https://127.0.0.1:{terminator.port}"

    trusted = query(s3_settings, https, {"AWS_CA_BUNDLE": str(ca)}, *args)
    assert trusted.exit_code == 0, trusted.output
    assert trusted.stdout == plain.stdout

    untrusted = query(s3_settings, https, {}, *args)
    assert untrusted.exit_code == 1 and "TLS certificate is not trusted" in untrusted.stderr
    assert untrusted.stderr.count("\n") == 1

    proxy = ConnectProxy()
    try:
        proxied = query(s3_settings, https, {"AWS_CA_BUNDLE": str(ca),
                                             "HTTPS_PROXY": f"http://who:s%40cret@127.0.0.1:{proxy.port}"}, *args)  # fmt: skip
        assert proxied.exit_code == 0, proxied.output
        assert proxied.stdout == plain.stdout
        assert proxy.heads and all(h.startswith(f"CONNECT 127.0.0.1:{terminator.port} ") for h in proxy.heads)
        assert all("Proxy-Authorization: Basic d2hvOnNAY3JldA==" in h for h in proxy.heads)  # who:s@cret
        seen = len(proxy.heads)
        bypassed = query(s3_settings, https, {"AWS_CA_BUNDLE": str(ca), "https_proxy": f"127.0.0.1:{proxy.port}",
                                              "NO_PROXY": "localhost,127.0.0.1"}, *args)  # fmt: skip
        assert bypassed.exit_code == 0 and bypassed.stdout == plain.stdout
        assert len(proxy.heads) == seen  # NO_PROXY named the endpoint: straight there
    finally:
        proxy.close()


def test_bad_ca_bundle_and_proxy_are_one_line(s3_settings: ArchiveSettings, tmp_path: Path) -> None:
    https = "https://127.0.0.1:1"
    missing = query(s3_settings, https, {"AWS_CA_BUNDLE": str(tmp_path / "nope.pem")}, "--since", "1h")
    assert missing.exit_code != 0 and "AWS_CA_BUNDLE: cannot use" in missing.stderr
    assert missing.stderr.count("\n") == 1
    socks = query(s3_settings, https, {"HTTPS_PROXY": "socks5://127.0.0.1:1080"}, "--since", "1h")
    assert socks.exit_code != 0 and "HTTPS_PROXY: expected http://" in socks.stderr
    assert socks.stderr.count("\n") == 1

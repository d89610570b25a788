"""Self-signed certificates like the ones an Outline server makes for its management API.

``install_server.sh`` runs ``openssl req -x509 -subj /CN=<hostname>``: a
self-signed certificate whose only name is the common name (no SAN), with the
CA flag set. Clients cannot verify it against a CA; they pin its SHA-256
fingerprint (``certSha256``: upper-case hex of the DER bytes, no colons).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: validity of a generated certificate, in days (Outline uses 100 years)
DEFAULT_VALIDITY_DAYS = 3650


@dataclass(frozen=True)
class ServerCertificate:
    cert_pem: bytes
    key_pem: bytes
    der: bytes

    @property
    def sha256(self) -> str:
        """The ``certSha256`` Outline prints: upper-case hex, no separators."""
        return hashlib.sha256(self.der).hexdigest().upper()


def make_certificate(common_name: str) -> ServerCertificate:
    """A fresh EC P-256 key and a self-signed CA:TRUE certificate for ``common_name``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=DEFAULT_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ServerCertificate(
        cert.public_bytes(serialization.Encoding.PEM),
        key_pem,
        cert.public_bytes(serialization.Encoding.DER),
    )


def server_context(cert: ServerCertificate, folder: Path) -> ssl.SSLContext:
    """A TLS server context for ``cert`` (``load_cert_chain`` only reads files)."""
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".pem", delete=False) as handle:
        handle.write(cert.cert_pem + cert.key_pem)
        path = handle.name
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(path)
    Path(path).unlink()
    return context

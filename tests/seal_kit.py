"""A test CA and an e-seal certificate it issued, for sealing documents in tests.

Nothing here is committed as a file: keys and certificates are generated into a temporary
directory of the test session (``test_seal`` in conftest.py), once per session.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hub.documents.edoc import SealKey, generate_seal

ORGANISATION = "Rīgas valstspilsētas pašvaldība (test)"
COMMON_NAME = "Test e-seal"


@dataclass(frozen=True)
class SealKit:
    """The seal, the CA that issued it, and the seal's PEM files (for services that load
    their seal from files)."""

    seal: SealKey
    ca: x509.Certificate
    key_path: Path
    cert_path: Path


def make_ca(common_name: str = "Test e-seal CA") -> SealKey:
    """A self-signed CA (EC P-256, quick to generate) that may issue certificates."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "LV"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return SealKey(key, certificate)


def make_seal_kit(directory: Path) -> SealKit:
    """A CA and an RSA e-seal certificate issued by it, written to ``directory``."""
    ca = make_ca()
    key_path, cert_path = generate_seal(COMMON_NAME, ORGANISATION, directory, issuer=ca)
    return SealKit(SealKey.from_files(key_path, cert_path), ca.certificate, key_path, cert_path)

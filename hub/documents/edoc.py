"""Sealed documents as ``.edoc``: an ASiC-E container (ETSI EN 319 162-1) with a XAdES
baseline-B signature (ETSI EN 319 132-1), the Latvian e-document format.

The container is a ZIP: first ``mimetype`` (stored, no extra field), then the document, then
``META-INF/manifest.xml`` (an OpenDocument manifest) and ``META-INF/signatures0.xml``, an
``asic:XAdESSignatures`` root holding one ``ds:Signature``. signxml builds and verifies the
signature; its references are the document (by its name in the container, the SHA-256 of
its bytes, no transforms), the XAdES ``SignedProperties`` (signing time, signing
certificate digest, the document's media type) and the ``KeyInfo``. Exclusive
canonicalization keeps the signature valid inside the ``XAdESSignatures`` root.

With an RSA key the container is byte-for-byte the same for the same inputs; ECDSA
signatures are randomised by the algorithm.
"""

from __future__ import annotations

import os
import zipfile
from base64 import b64decode, b64encode
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from io import BytesIO
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.exceptions import InvalidSignature as CryptographyInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureMethod, methods
from signxml.exceptions import InvalidDigest, SignXMLException
from signxml.signer import SignatureReference
from signxml.util import SigningSettings
from signxml.xades import (
    XAdESDataObjectFormat,
    XAdESSignatureConfiguration,
    XAdESSigner,
    XAdESVerifier,
)

from hub.errors import PermanentError

EDOC_MEDIA_TYPE = "application/vnd.etsi.asic-e+zip"
MIMETYPE = "mimetype"
MANIFEST = "META-INF/manifest.xml"
SIGNATURES = "META-INF/signatures0.xml"

ASIC_NS = "http://uri.etsi.org/02918/v1.2.1#"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
XADES_NS = "http://uri.etsi.org/01903/v1.3.2#"
MANIFEST_NS = "urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_C14N = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0
_SIGNATURE_ID = "S0"
# A local file header is 30 bytes; ETSI EN 319 162-1 wants "mimetype" and its content right
# after it (no extra field), so a reader can tell the format from the first bytes.
_MIMETYPE_HEADER = b"PK\x03\x04"
_MIMETYPE_AT = 30


class EdocError(PermanentError, ValueError):
    """A container cannot be built or does not verify: not an ASiC-E container, not exactly
    one document, a signature that does not match the document, or a signer that is not
    trusted. The message says which; the document must not be relied on."""


@dataclass(frozen=True)
class SealKey:
    """An e-seal: the private key and its certificate."""

    key: PrivateKey
    certificate: x509.Certificate

    @classmethod
    def load(cls, key_pem: bytes, cert_pem: bytes, password: bytes | None = None) -> SealKey:
        """A seal from a PEM private key (RSA or EC) and its PEM certificate."""
        try:
            key = serialization.load_pem_private_key(key_pem, password=password)
            certificate = x509.load_pem_x509_certificate(cert_pem)
        except (ValueError, TypeError) as exc:
            raise EdocError(f"cannot load the seal's key or certificate: {exc}") from exc
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise EdocError(f"the seal's key must be RSA or EC, not {type(key).__name__}")
        if _public_der(key.public_key()) != _public_der(certificate.public_key()):
            raise EdocError("the seal's key does not belong to its certificate")
        return cls(key, certificate)

    @classmethod
    def from_files(cls, key_path: Path, cert_path: Path, password: bytes | None = None) -> SealKey:
        """A seal from PEM files (as :func:`generate_seal` writes them)."""
        return cls.load(key_path.read_bytes(), cert_path.read_bytes(), password)


@dataclass(frozen=True)
class Opened:
    """The document in a verified container, with who sealed it and when."""

    name: str
    content: bytes
    media_type: str
    signed_at: datetime
    signer: str
    """The signing certificate's subject common name."""
    certificate: x509.Certificate


def _public_der(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name == MIMETYPE or name.startswith("."):
        raise EdocError(f"not a plain file name for a document in a container: {name!r}")


def _signing_time(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds")


def _signer(key: PrivateKey, media_type: str, name: str, content: bytes, at: datetime) -> Any:
    """A signxml XAdES signer whose first reference is the external document ``name``.

    signxml's annotators (its documented extension point) run before SignedInfo is
    signed: the first replaces the placeholder reference's digest with the document's
    SHA-256 and drops its transforms (a binary file is digested as it is), and fixes the
    Ids so the same inputs give the same XML; the signing-time annotator writes ``at``.
    """
    algorithm = (
        SignatureMethod.RSA_SHA256
        if isinstance(key, rsa.RSAPrivateKey)
        else SignatureMethod.ECDSA_SHA256
    )
    signer = XAdESSigner(
        method=methods.detached,
        signature_algorithm=algorithm,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=_C14N,
        data_object_format=XAdESDataObjectFormat(Description=name, MimeType=media_type),
    )
    digest = b64encode(sha256(content).digest()).decode()

    def reference_document(sig_root: etree._Element, signing_settings: object) -> None:
        sig_root.set("Id", _SIGNATURE_ID)
        key_info = sig_root.find(f"{{{DS_NS}}}KeyInfo")
        assert key_info is not None  # signxml's first annotator adds it
        key_info.set("Id", f"{_SIGNATURE_ID}-KeyInfo")
        reference = sig_root.find(f"{{{DS_NS}}}SignedInfo/{{{DS_NS}}}Reference")
        assert reference is not None
        reference.set("Id", f"{_SIGNATURE_ID}-RefId0")
        for transforms in reference.findall(f"{{{DS_NS}}}Transforms"):
            reference.remove(transforms)
        digest_value = reference.find(f"{{{DS_NS}}}DigestValue")
        assert digest_value is not None
        digest_value.text = digest

    def signing_time(
        signed_signature_properties: etree._Element,
        sig_root: etree._Element,
        signing_settings: SigningSettings,
    ) -> None:
        signed_properties = signed_signature_properties.getparent()
        assert signed_properties is not None
        signed_properties.set("Id", f"{_SIGNATURE_ID}-SignedProperties")
        element = etree.SubElement(signed_signature_properties, f"{{{XADES_NS}}}SigningTime")
        element.text = _signing_time(at)

    def declare_canonicalization(sig_root: etree._Element, signing_settings: object) -> None:
        # signxml digests SignedProperties and KeyInfo with the signer's (exclusive)
        # canonicalization but declares no transform, and a verifier would then default to
        # inclusive C14N, which takes in the asic namespace of the root: say which one it was.
        for reference in sig_root.iterfind(f"{{{DS_NS}}}SignedInfo/{{{DS_NS}}}Reference"):
            if reference.get("URI", "").startswith("#"):
                transforms = etree.Element(f"{{{DS_NS}}}Transforms")
                etree.SubElement(transforms, f"{{{DS_NS}}}Transform", Algorithm=_C14N.value)
                reference.insert(0, transforms)

    signer.signature_annotators.insert(1, reference_document)
    signer.signature_annotators.append(declare_canonicalization)
    signer.signed_signature_properties_annotators[0] = signing_time
    return signer


def _manifest(name: str, media_type: str) -> bytes:
    root = etree.Element(f"{{{MANIFEST_NS}}}manifest", nsmap={"manifest": MANIFEST_NS})
    root.set(f"{{{MANIFEST_NS}}}version", "1.2")
    for path, kind in (("/", EDOC_MEDIA_TYPE), (name, media_type)):
        entry = etree.SubElement(root, f"{{{MANIFEST_NS}}}file-entry")
        entry.set(f"{{{MANIFEST_NS}}}full-path", path)
        entry.set(f"{{{MANIFEST_NS}}}media-type", kind)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)


def seal(
    key: SealKey,
    name: str,
    content: bytes,
    *,
    media_type: str = "application/pdf",
    at: datetime,
) -> bytes:
    """``content`` sealed as an ``.edoc`` container holding it under ``name``, signed at
    ``at`` (a time with its zone)."""
    _check_name(name)
    if at.tzinfo is None:
        raise EdocError("the signing time needs a time zone")
    signer = _signer(key.key, media_type, name, content, at)
    placeholder = etree.Element("document")
    try:
        signature = signer.sign(
            placeholder,
            key=key.key,
            cert=[key.certificate],
            reference_uri=[SignatureReference(URI=quote(name))],
            always_add_key_value=False,
            exclude_c14n_transform_element=True,
        )
    except SignXMLException as exc:
        raise EdocError(f"cannot seal {name}: {exc}") from exc
    root = etree.Element(f"{{{ASIC_NS}}}XAdESSignatures", nsmap={"asic": ASIC_NS, "ds": DS_NS})
    root.append(signature)
    signatures = etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)

    # ZIP timestamps in UTC, so the same inputs give the same bytes wherever they are sealed.
    stamp = at.astimezone(UTC).timetuple()[:6]
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for entry, data, compression in (
            (MIMETYPE, EDOC_MEDIA_TYPE.encode(), zipfile.ZIP_STORED),
            (name, content, zipfile.ZIP_DEFLATED),
            (MANIFEST, _manifest(name, media_type), zipfile.ZIP_DEFLATED),
            (SIGNATURES, signatures, zipfile.ZIP_DEFLATED),
        ):
            info = zipfile.ZipInfo(entry, date_time=stamp)
            info.compress_type = compression
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def _read(data: bytes) -> tuple[str, bytes, str, bytes]:
    """The container's document name, bytes, media type (from the manifest) and signature
    file, after checking its layout."""
    if data[:4] != _MIMETYPE_HEADER or not data[_MIMETYPE_AT:].startswith(
        MIMETYPE.encode() + EDOC_MEDIA_TYPE.encode()
    ):
        raise EdocError(
            f"not an ASiC-E container: it must start with a stored 'mimetype' entry "
            f"holding {EDOC_MEDIA_TYPE}"
        )
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            infos = archive.infolist()
            if infos[0].filename != MIMETYPE or infos[0].compress_type != zipfile.ZIP_STORED:
                raise EdocError(
                    "not an ASiC-E container: 'mimetype' is not its first, stored entry"
                )
            names = [info.filename for info in infos]
            documents = [n for n in names if n != MIMETYPE and not n.startswith("META-INF/")]
            if len(documents) != 1:
                raise EdocError(
                    f"the container must hold exactly one document, not {len(documents)}"
                )
            signature_files = [n for n in names if n.startswith("META-INF/") and "signatures" in n]
            if signature_files != [SIGNATURES]:
                raise EdocError(f"the container must hold one signature file, {SIGNATURES}")
            if MANIFEST not in names:
                raise EdocError(f"the container has no {MANIFEST}")
            name = documents[0]
            return (
                name,
                archive.read(name),
                _manifest_media_type(archive.read(MANIFEST), name),
                archive.read(SIGNATURES),
            )
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise EdocError(f"not a readable ZIP container: {exc}") from exc


def _manifest_media_type(manifest: bytes, name: str) -> str:
    try:
        root = etree.fromstring(manifest, parser=etree.XMLParser(resolve_entities=False))
    except etree.XMLSyntaxError as exc:
        raise EdocError(f"{MANIFEST} is not XML: {exc}") from exc
    for entry in root.iter(f"{{{MANIFEST_NS}}}file-entry"):
        if entry.get(f"{{{MANIFEST_NS}}}full-path") == name:
            return entry.get(f"{{{MANIFEST_NS}}}media-type") or "application/octet-stream"
    raise EdocError(f"{MANIFEST} does not list the document {name}")


def _trusted_signer(certificate: x509.Certificate, trusted: Sequence[x509.Certificate]) -> bool:
    """Whether ``certificate`` is one of ``trusted`` or was issued by one of them."""
    for anchor in trusted:
        if anchor == certificate:
            return True
        if anchor.subject == certificate.issuer:
            try:
                certificate.verify_directly_issued_by(anchor)
            except (ValueError, TypeError, CryptographyInvalidSignature):
                continue
            return True
    return False


def open_edoc(data: bytes, *, trusted: Sequence[x509.Certificate] = ()) -> Opened:
    """The document in an ``.edoc`` container, once its layout and signature are checked.

    The signature must cover exactly the document's bytes. With ``trusted`` given, the
    signing certificate must be one of them or be issued by one of them; without it, only
    the container's integrity is checked, not who sealed it.
    """
    name, content, media_type, signatures = _read(data)
    try:
        root = etree.fromstring(signatures, parser=etree.XMLParser(resolve_entities=False))
    except etree.XMLSyntaxError as exc:
        raise EdocError(f"{SIGNATURES} is not XML: {exc}") from exc
    if root.tag != f"{{{ASIC_NS}}}XAdESSignatures":
        raise EdocError(f"{SIGNATURES} is not an asic:XAdESSignatures document")
    found = root.findall(f"{{{DS_NS}}}Signature")
    if len(found) != 1:
        raise EdocError(f"{SIGNATURES} must hold exactly one signature, not {len(found)}")
    encoded = found[0].findtext(
        f"{{{DS_NS}}}KeyInfo/{{{DS_NS}}}X509Data/{{{DS_NS}}}X509Certificate"
    )
    if not encoded:
        raise EdocError("the signature carries no signing certificate")
    try:
        certificate = x509.load_der_x509_certificate(_b64(encoded))
    except ValueError as exc:
        raise EdocError(f"the signing certificate cannot be read: {exc}") from exc
    if trusted and not _trusted_signer(certificate, trusted):
        raise EdocError(
            f"the document was sealed by an untrusted certificate ({_common_name(certificate)})"
        )

    resolved: list[str] = []

    def resolve(uri: str) -> bytes | None:
        if unquote(uri) != name:
            return None
        resolved.append(uri)
        return content

    try:
        results = XAdESVerifier().verify(
            signatures,
            x509_cert=certificate,
            uri_resolver=resolve,
            expect_config=XAdESSignatureConfiguration(
                location="./",
                signature_methods=frozenset(
                    {SignatureMethod.RSA_SHA256, SignatureMethod.ECDSA_SHA256}
                ),
                digest_algorithms=frozenset({DigestAlgorithm.SHA256}),
            ),
        )
    except InvalidDigest as exc:
        if f"({quote(name)})" in str(exc):
            raise EdocError(f"the document {name} was changed after it was sealed") from exc
        raise EdocError(f"the signature's signed properties were changed: {exc}") from exc
    except (SignXMLException, CryptographyInvalidSignature, ValueError) as exc:
        raise EdocError(f"the signature is not valid: {exc}") from exc
    if len(resolved) != 1:
        raise EdocError(f"the signature does not cover the document {name}")
    signed_at = _verified_signing_time(results)
    return Opened(name, content, media_type, signed_at, _common_name(certificate), certificate)


def _verified_signing_time(results: Any) -> datetime:
    """The signing time from the SignedSignatureProperties the verifier checked."""
    for result in results:
        properties = getattr(result, "signed_properties", None)
        if properties is not None:
            text = properties.findtext(f"{{{XADES_NS}}}SigningTime")
            if text:
                try:
                    return datetime.fromisoformat(text)
                except ValueError as exc:
                    raise EdocError(f"the signing time is not a time: {text!r}") from exc
    raise EdocError("the signature has no signing time")


def _b64(text: str) -> bytes:
    return b64decode("".join(text.split()))


def _common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else certificate.subject.rfc4514_string()
    return value.decode() if isinstance(value, bytes) else value


def generate_seal(
    common_name: str,
    organisation: str,
    directory: Path,
    *,
    issuer: SealKey | None = None,
    algorithm: Literal["rsa", "ec"] = "rsa",
    valid_for: timedelta = timedelta(days=5 * 365),
) -> tuple[Path, Path]:
    """A throw-away e-seal for demos and tests: writes ``seal-key.pem`` (unencrypted, mode
    0600) and ``seal-cert.pem`` into ``directory`` and returns their paths.

    Self-signed unless ``issuer`` (a test CA) is given. Either way it is *not* a qualified
    e-seal: nobody outside the demo will trust it. RSA (the default) keeps containers
    deterministic; ``ec`` (P-256) is faster to generate.
    """
    key: PrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "LV"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,  # nonRepudiation
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    certificate = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / "seal-key.pem", directory / "seal-cert.pem"
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with os.fdopen(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
        file.write(key_pem)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path

"""How the DVS simulator checks a sealed document: an ASiC-E container (``.edoc``) with a
detached XAdES signature over its one data file.

The checks, in order, and the refusal each failure earns:

1. ``invalid_container``: the content is a ZIP whose first entry is ``mimetype``, stored
   uncompressed, holding ``application/vnd.etsi.asic-e+zip``; it has ``META-INF/manifest.xml``,
   at least one ``META-INF/signatures*.xml`` whose root is ``asic:XAdESSignatures``, and
   exactly one data file (an entry outside ``META-INF/``).
2. ``invalid_signature``: each signature file holds one ``ds:Signature`` that verifies
   (signxml's :class:`~signxml.xades.XAdESVerifier`) against the certificate in its
   ``ds:KeyInfo``: the value over ``ds:SignedInfo``, the digest of every reference (the data
   file, by its entry name, and the XAdES ``SignedProperties``), and the signing
   certificate's digest in the signed properties. One reference names the data file.

Trust is the caller's choice: with ``trusted`` None any embedded certificate is accepted (a
simulator's shortcut; a real DVS checks the chain to a trusted seal issuer), otherwise the
embedded certificate must be one of ``trusted``.

This is the DVS's own code: it shares nothing with the hub's sealing but the standard.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import zipfile
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.exceptions import SignXMLException
from signxml.xades import XAdESSignatureConfiguration, XAdESVerifier, XAdESVerifyResult

EDOC_MEDIA_TYPE = "application/vnd.etsi.asic-e+zip"
ASIC = "http://uri.etsi.org/02918/v1.2.1#"
DS = "http://www.w3.org/2000/09/xmldsig#"
MANIFEST = "META-INF/manifest.xml"
_SIGNATURES = re.compile(r"META-INF/signatures[^/]*\.xml")
MAX_UNPACKED_BYTES = 16 * 1024 * 1024
"""The most a container may unpack to (a guard against ZIP bombs)."""
MAX_ENTRIES = 32

RefusalReason = Literal["invalid_container", "invalid_signature"]


class Refused(Exception):
    """The container is not one the DVS stores; ``reason`` says which check failed."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Verified:
    """A container whose seal verified."""

    data_file: str
    """Name of the sealed data file inside the container."""
    signer: str
    """Common name (CN) of the seal's certificate."""


def verify_container(
    content: bytes, *, trusted: Collection[x509.Certificate] | None = None
) -> Verified:
    """Check ``content`` as described in the module docstring; raises :class:`Refused`."""
    entries = _entries(content)
    names = list(entries)
    data_files = [n for n in names if n != "mimetype" and not n.startswith("META-INF/")]
    if len(data_files) != 1:
        raise Refused("invalid_container", f"expected one data file, found {len(data_files)}")
    [data_file] = data_files
    signature_files = sorted(n for n in names if _SIGNATURES.fullmatch(n))
    if MANIFEST not in entries or not signature_files:
        raise Refused("invalid_container", "META-INF/manifest.xml or signatures*.xml missing")
    signers = [
        _verify_signature(entries[name], name, data_file, entries[data_file], trusted)
        for name in signature_files
    ]
    return Verified(data_file, signers[0])


def _entries(content: bytes) -> dict[str, bytes]:
    """The container's entries by name, after the ``mimetype`` checks."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except (zipfile.BadZipFile, ValueError):
        raise Refused("invalid_container", "the content is not a ZIP archive") from None
    with archive:
        infos = archive.infolist()
        if not infos or infos[0].filename != "mimetype":
            raise Refused("invalid_container", "the first entry is not mimetype")
        if infos[0].compress_type != zipfile.ZIP_STORED:
            raise Refused("invalid_container", "the mimetype entry is compressed")
        if len(infos) > MAX_ENTRIES or sum(i.file_size for i in infos) > MAX_UNPACKED_BYTES:
            raise Refused("invalid_container", "the container is too large")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names) or any(_unsafe(n) for n in names):
            raise Refused("invalid_container", "duplicate or unsafe entry names")
        try:
            entries = {i.filename: archive.read(i) for i in infos if not i.is_dir()}
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError) as exc:
            raise Refused("invalid_container", f"an entry cannot be read: {exc}") from None
    if entries.get("mimetype") != EDOC_MEDIA_TYPE.encode("ascii"):
        raise Refused("invalid_container", f"mimetype is not {EDOC_MEDIA_TYPE}")
    return entries


def _unsafe(name: str) -> bool:
    return name.startswith("/") or "\\" in name or ".." in name.split("/")


def _verify_signature(
    document: bytes,
    name: str,
    data_file: str,
    data: bytes,
    trusted: Collection[x509.Certificate] | None,
) -> str:
    """Verify the one signature in the signature file ``name``; its signer's CN."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(document, parser)
    except etree.XMLSyntaxError:
        raise Refused("invalid_container", f"{name} is not XML") from None
    if root.tag != f"{{{ASIC}}}XAdESSignatures":
        raise Refused("invalid_container", f"{name} is not an asic:XAdESSignatures document")
    signatures = root.findall(f"{{{DS}}}Signature")
    if len(signatures) != 1:
        raise Refused("invalid_signature", f"{name} holds {len(signatures)} signatures, not 1")
    certificate = _embedded_certificate(signatures[0], name)
    if trusted is not None and not any(_same(certificate, t) for t in trusted):
        raise Refused("invalid_signature", f"the certificate of {name} is not trusted")

    def resolve(uri: str) -> bytes | None:
        return data if unquote(uri) == data_file else None

    try:
        results = XAdESVerifier().verify(
            document,
            x509_cert=certificate,
            uri_resolver=resolve,
            expect_config=XAdESSignatureConfiguration(expect_references=True),
        )
    except (SignXMLException, etree.LxmlError, ValueError, TypeError) as exc:
        raise Refused("invalid_signature", f"{name}: {exc}") from None
    uris = [
        unquote(r.get("URI", ""))
        for r in signatures[0].iterfind(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")
    ]
    if uris.count(data_file) != 1:
        raise Refused("invalid_signature", f"{name} does not sign {data_file} once")
    if not any(isinstance(r, XAdESVerifyResult) for r in results):
        raise Refused("invalid_signature", f"{name} signs no XAdES SignedProperties")
    return _common_name(certificate)


def _embedded_certificate(signature: etree._Element, name: str) -> x509.Certificate:
    found = signature.find(f"{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate")
    if found is None or not found.text:
        raise Refused("invalid_signature", f"{name} embeds no X.509 certificate")
    try:
        return x509.load_der_x509_certificate(base64.b64decode("".join(found.text.split())))
    except (binascii.Error, ValueError):
        raise Refused("invalid_signature", f"the certificate in {name} is broken") from None


def _same(one: x509.Certificate, other: x509.Certificate) -> bool:
    return one.fingerprint(hashes.SHA256()) == other.fingerprint(hashes.SHA256())


def _common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else certificate.subject.rfc4514_string()
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


__all__ = ["EDOC_MEDIA_TYPE", "RefusalReason", "Refused", "Verified", "verify_container"]

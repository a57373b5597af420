"""The ATIS-1000080 v005 / US SHAKEN CP profile of STIR certificates, as findings.

Why profile checks report instead of raising. ATIS-1000080 v005 is strict and real chains are
not (a carrier's end-entity certificate with three key usages and no cRLIssuer). The verifier
decides what to enforce; :func:`profile_findings` only says what is true.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import ExtensionOID, NameOID, SignatureAlgorithmOID

from shaken.core.certs import SHAKEN_POLICY_ARC, issued_over_legacy_encoding, tnauthlist_of
from shaken.core.der import TlvError, children, decode_oid, raw_extensions, read_tlv, tlvs
from shaken.core.errors import CertificateError
from shaken.core.tnauthlist import TNAUTHLIST_OID

__all__ = ["RULES", "CertRole", "Finding", "Severity", "infer_role", "profile_findings"]


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


class CertRole(enum.StrEnum):
    ROOT = "root"
    INTERMEDIATE = "intermediate"
    LEAF = "leaf"


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One profile rule the certificate breaks. ``rule`` is a stable id from :data:`RULES`."""

    rule: str
    severity: Severity
    message: str


#: Every rule id :func:`profile_findings` can emit, with the text it checks and its source.
RULES: dict[str, str] = {
    # ATIS-1000080 section 6.4.1 unless marked; vN = the version that introduced the rule.
    "atis_version": "version is v3",
    "atis_serial_number": "serial number greater than zero, at least 8 octets (v004)",
    "atis_serial_number_size": "serial holds at least 64 bits of CSPRNG output (v005)",
    "atis_signature_algorithm": "ecdsa-with-SHA256; SHA-384 from P-384 CAs (SHAKEN CP 1.4 6.1.5)",
    "atis_subject_public_key": "id-ecPublicKey P-256; CAs may use P-384 (SHAKEN CP 1.4 6.1.5)",
    "atis_subject_dn": "subject DN has C and CN (v003)",
    "atis_subject_o_required": "subject DN has exactly one O (v004)",
    "atis_subject_c_iso": "C is one ISO 3166-1 alpha-2 code (v005)",
    "atis_issuer_dn": "issuer DN has C, CN and O",
    "atis_subject_cn": "CN contains 'SHAKEN'",
    "atis_subject_cn_root": "a root CN contains 'ROOT', any case (v005)",
    "atis_subject_cn_spc": "an EE CN contains 'SHAKEN', one space, the TNAuthList SPC (v004)",
    "atis_subject_cn_spc_exact": "an EE CN is exactly 'SHAKEN <SPC>' (v004 example, CP 1.4)",
    "shaken_subject_rdn_unknown": "subject only CN, C, O, L, ST, serialNumber (PKI practice)",
    "atis_ext_basic_constraints": "BasicConstraints present, critical, cA TRUE only for CAs",
    "atis_ext_key_usage": "KeyUsage present and critical",
    "atis_ext_key_usage_value": "KeyUsage exactly digitalSignature (EE) or keyCertSign (CA, v005)",
    "rfc5280_key_usage_encoding": "KeyUsage BIT STRING has no trailing zero bits (X.690 11.2.2)",
    "atis_subject_key_identifier": "SubjectKeyIdentifier present",
    "atis_subject_key_identifier_size": "SKI is 160 bits long (v004)",
    "atis_subject_key_identifier_hash": "SKI is the SHA-1 of the public key (v004)",
    "atis_ext_authority_key_identifier": "AKI keyIdentifier present, equal to the issuer SKI",
    "atis_ext_certificate_policies": "CertificatePolicies present with exactly one policy OID",
    "shaken_certificate_policies_id": f"that OID is a SHAKEN CP ({SHAKEN_POLICY_ARC}.x)",
    "shaken_certificate_policies_version": "that OID is not a superseded CP (1.1, 1.2)",
    "atis_certificate_policy_critical": "CertificatePolicies should be non-critical",
    "atis_root_certificate_policies": "a root has no CertificatePolicies (v005)",
    "atis_ext_crl_distribution": "CRLDP with exactly one DistributionPoint naming an HTTP URL",
    "atis_ext_crl_distribution_struct": "that DistributionPoint carries a cRLIssuer (v004)",
    "atis_root_crl_distribution": "a root has no CRLDP (v005)",
    "atis_tn_auth_list": "an EE TNAuthList holds exactly one SPC and no TN entries",
    "atis_tn_auth_list_spc_format": "the SPC has only digits and uppercase letters (v005)",
    "atis_tn_auth_list_ca": "no TNAuthList in CA certificates (RFC 9060 delegation aside)",
    "atis_ext_not_specified": "no extension beyond KU, BC, CP, SKI, AKI, CRLDP, TNAuthList (v005)",
}

_ALLOWED_EXTENSIONS = frozenset(
    {
        ExtensionOID.KEY_USAGE.dotted_string,
        ExtensionOID.BASIC_CONSTRAINTS.dotted_string,
        ExtensionOID.CERTIFICATE_POLICIES.dotted_string,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER.dotted_string,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER.dotted_string,
        ExtensionOID.CRL_DISTRIBUTION_POINTS.dotted_string,
        TNAUTHLIST_OID.dotted_string,
    }
)
_SUPERSEDED_POLICIES = frozenset({f"{SHAKEN_POLICY_ARC}.1", f"{SHAKEN_POLICY_ARC}.2"})
_SUBJECT_ATTRIBUTES = frozenset(
    {
        NameOID.COMMON_NAME,
        NameOID.COUNTRY_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.LOCALITY_NAME,
        NameOID.STATE_OR_PROVINCE_NAME,
        NameOID.SERIAL_NUMBER,
    }
)
_KU_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)
_SPC_FORMAT = re.compile(r"[0-9A-Z]+")
_ISO_ALPHA2 = re.compile(r"[A-Z]{2}")


def infer_role(cert: x509.Certificate) -> CertRole:
    """Root if a self-signed CA, intermediate if another CA, else leaf (BasicConstraints)."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except (x509.ExtensionNotFound, ValueError):
        is_ca = False
    if not is_ca:
        return CertRole.LEAF
    return CertRole.ROOT if _self_signed(cert) else CertRole.INTERMEDIATE


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return issued_over_legacy_encoding(cert, cert)
    return True


def _attr_values(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    values = []
    for attribute in name.get_attributes_for_oid(oid):
        value = attribute.value
        values.append(value if isinstance(value, str) else bytes(value).decode("latin-1"))
    return values


class _Collector:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def error(self, rule: str, message: str) -> None:
        self.findings.append(Finding(rule=rule, severity=Severity.ERROR, message=message))

    def warning(self, rule: str, message: str) -> None:
        self.findings.append(Finding(rule=rule, severity=Severity.WARNING, message=message))


def profile_findings(
    cert: x509.Certificate,
    *,
    role: CertRole | None = None,
    issuer: x509.Certificate | None = None,
) -> tuple[Finding, ...]:
    """Every ATIS-1000080 v005 / US SHAKEN CP rule ``cert`` breaks, in a stable order.

    ``role`` defaults to :func:`infer_role`. ``issuer``, when given, lets the AKI be matched
    against the issuer's SKI. Rule ids are listed in :data:`RULES`; effective dates of the
    rules are not applied (this is the current profile). Never raises.
    """
    role = role if role is not None else infer_role(cert)
    out = _Collector()
    is_ca = role is not CertRole.LEAF
    _check_basics(cert, role, out)
    _check_names(cert, role, out)
    try:
        extensions: x509.Extensions | None = cert.extensions
    except ValueError as exc:
        extensions = None
        out.error("atis_ext_not_specified", f"extensions do not parse: {exc}")
    try:
        raw = raw_extensions(cert.tbs_certificate_bytes)
    except TlvError as exc:
        raw = {}
        out.error("atis_ext_not_specified", f"extensions are not valid DER: {exc}")
    if extensions is not None:
        _check_constraints(cert, extensions, raw, is_ca, out)
        _check_key_ids(cert, extensions, role, issuer, out)
        _check_policies_and_crldp(extensions, role, out)
    _check_tnauthlist(cert, role, out)
    unexpected = sorted(oid for oid in raw if oid not in _ALLOWED_EXTENSIONS)
    if unexpected:
        out.error(
            "atis_ext_not_specified",
            f"extensions outside the ATIS-1000080 v005 set: {', '.join(unexpected)}",
        )
    return tuple(out.findings)


def _check_basics(cert: x509.Certificate, role: CertRole, out: _Collector) -> None:
    if cert.version is not x509.Version.v3:
        out.error("atis_version", f"version is {cert.version.name}, not v3")
    serial = cert.serial_number
    if serial <= 0:
        out.error("atis_serial_number", f"serial number {serial} is not greater than zero")
    elif serial.bit_length() <= 56:
        # Fewer than 8 octets: the v004 reading of "64 bits of CSPRNG output".
        out.error(
            "atis_serial_number",
            f"serial number has {(serial.bit_length() + 8) // 8} octets, fewer than 8",
        )
    elif serial.bit_length() < 64:
        # A number below 2**63 cannot carry 64 bits of CSPRNG output (ATIS-1000080 v005).
        out.error(
            "atis_serial_number_size",
            f"serial number has {serial.bit_length()} bits, fewer than 64",
        )
    try:
        sig_oid = cert.signature_algorithm_oid
    except ValueError as exc:
        out.error("atis_signature_algorithm", f"signature algorithm unreadable: {exc}")
    else:
        allowed = {SignatureAlgorithmOID.ECDSA_WITH_SHA256, SignatureAlgorithmOID.ECDSA_WITH_SHA384}
        if sig_oid not in allowed:
            out.error(
                "atis_signature_algorithm",
                f"signature algorithm {sig_oid.dotted_string} ({sig_oid._name}) is not "
                "ecdsa-with-SHA256",
            )
    algorithm, curve = _spki_algorithm(cert.tbs_certificate_bytes)
    curves = {_P256: "P-256"} if role is CertRole.LEAF else {_P256: "P-256", _P384: "P-384"}
    if algorithm != _ID_EC_PUBLIC_KEY:
        out.error(
            "atis_subject_public_key", f"public key algorithm {algorithm} is not id-ecPublicKey"
        )
    elif curve not in curves:
        out.error(
            "atis_subject_public_key",
            f"public key curve {curve} is not {' or '.join(curves.values())}",
        )


_ID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
_P256 = "1.2.840.10045.3.1.7"
_P384 = "1.3.132.0.34"


def _spki(tbs: bytes) -> bytes:
    """The SubjectPublicKeyInfo TLV of a TBSCertificate (RFC 5280 section 4.1)."""
    tag, start, length = read_tlv(tbs, 0)
    if tag != 0x30:
        raise TlvError("TBSCertificate is not a SEQUENCE")
    fields = tlvs(tbs, start, length)
    index = 6 if fields and fields[0][0] == 0xA0 else 5
    if len(fields) <= index or fields[index][0] != 0x30:
        raise TlvError("no SubjectPublicKeyInfo")
    return fields[index]


def _spki_algorithm(tbs: bytes) -> tuple[str | None, str | None]:
    """(algorithm OID, named-curve OID) of the subject key; None where absent or unreadable."""
    try:
        spki = _spki(tbs)
        _tag, start, length = read_tlv(spki, 0)
        algorithm = tlvs(spki, start, length)[0]
        _tag, a_start, a_length = read_tlv(algorithm, 0)
        parts = list(children(algorithm, a_start, a_length))
    except (TlvError, IndexError):
        return None, None
    oids = [decode_oid(algorithm[c : c + n]) if t == 0x06 else None for t, _p, c, n in parts]
    return (oids[0] if oids else None), (oids[1] if len(oids) > 1 else None)


def _check_names(cert: x509.Certificate, role: CertRole, out: _Collector) -> None:
    subject = cert.subject
    countries = _attr_values(subject, NameOID.COUNTRY_NAME)
    common_names = _attr_values(subject, NameOID.COMMON_NAME)
    organizations = _attr_values(subject, NameOID.ORGANIZATION_NAME)
    if not countries or not common_names:
        missing = [n for n, v in (("C", countries), ("CN", common_names)) if not v]
        out.error("atis_subject_dn", f"subject DN lacks {' and '.join(missing)}")
    if len(organizations) != 1:
        out.error(
            "atis_subject_o_required", f"subject DN has {len(organizations)} O attributes, not 1"
        )
    if len(countries) != 1 or not _ISO_ALPHA2.fullmatch(countries[0]):
        out.error(
            "atis_subject_c_iso", f"subject C {countries!r} is not one ISO 3166-1 alpha-2 code"
        )
    issuer = cert.issuer
    missing_issuer = [
        label
        for label, oid in (
            ("C", NameOID.COUNTRY_NAME),
            ("CN", NameOID.COMMON_NAME),
            ("O", NameOID.ORGANIZATION_NAME),
        )
        if not issuer.get_attributes_for_oid(oid)
    ]
    if missing_issuer:
        out.error("atis_issuer_dn", f"issuer DN lacks {', '.join(missing_issuer)}")
    cn = common_names[0] if common_names else ""
    if "SHAKEN" not in cn:
        out.error("atis_subject_cn", f"CN {cn!r} does not contain 'SHAKEN'")
    if role is CertRole.ROOT and "ROOT" not in cn.upper():
        out.error("atis_subject_cn_root", f"root CN {cn!r} does not contain 'ROOT'")
    unknown = sorted(
        {
            attribute.oid._name
            if attribute.oid._name != "Unknown OID"
            else attribute.oid.dotted_string
            for attribute in subject
            if attribute.oid not in _SUBJECT_ATTRIBUTES
        }
    )
    if unknown:
        out.warning(
            "shaken_subject_rdn_unknown",
            f"subject has attributes beyond CN, C, O, L, ST, serialNumber: {', '.join(unknown)}",
        )


def _check_constraints(
    cert: x509.Certificate,
    extensions: x509.Extensions,
    raw: dict[str, tuple[bool, bytes]],
    is_ca: bool,
    out: _Collector,
) -> None:
    try:
        bc = extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        out.error("atis_ext_basic_constraints", "BasicConstraints extension is absent")
    else:
        if not bc.critical:
            out.error("atis_ext_basic_constraints", "BasicConstraints is not critical")
        if bc.value.ca is not is_ca:
            out.error(
                "atis_ext_basic_constraints",
                f"BasicConstraints cA is {bc.value.ca} for a {'CA' if is_ca else 'leaf'}",
            )
    try:
        ku = extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        out.error("atis_ext_key_usage", "KeyUsage extension is absent")
    else:
        if not ku.critical:
            out.error("atis_ext_key_usage", "KeyUsage is not critical")
        flags = {flag for flag in _KU_FLAGS if getattr(ku.value, flag)}
        if ku.value.key_agreement:
            flags |= {f for f in ("encipher_only", "decipher_only") if getattr(ku.value, f)}
        wanted = {"key_cert_sign"} if is_ca else {"digital_signature"}
        if flags != wanted:
            out.error(
                "atis_ext_key_usage_value",
                f"KeyUsage is {{{', '.join(sorted(flags))}}}, expected exactly "
                f"{next(iter(wanted))}",
            )
        encoded = raw.get(ExtensionOID.KEY_USAGE.dotted_string)
        if encoded is not None and not _der_named_bits_ok(encoded[1]):
            out.error(
                "rfc5280_key_usage_encoding",
                f"KeyUsage BIT STRING {encoded[1].hex()} keeps trailing zero bits (not DER)",
            )


def _der_named_bits_ok(value: bytes) -> bool:
    """X.690 11.2.2: a DER named-bit BIT STRING has its trailing zero bits removed."""
    if len(value) < 3 or value[0] != 0x03 or value[1] != len(value) - 2:
        return False
    unused, bits = value[2], value[3:]
    if not bits:
        return unused == 0
    last = bits[-1]
    if unused > 7 or last == 0:
        return False
    trailing = (last & -last).bit_length() - 1
    return unused == trailing


def _check_key_ids(
    cert: x509.Certificate,
    extensions: x509.Extensions,
    role: CertRole,
    issuer: x509.Certificate | None,
    out: _Collector,
) -> None:
    ski: bytes | None = None
    try:
        ski = extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        out.error("atis_subject_key_identifier", "SubjectKeyIdentifier extension is absent")
    if ski is not None and len(ski) != 20:
        out.error(
            "atis_subject_key_identifier_size", f"SKI has {len(ski) * 8} bits, not 160 (SHA-1)"
        )
    elif ski is not None and ski not in _sha1_key_ids(cert):
        # A 160-bit SKI made some other way still works for path building, so only a warning.
        out.warning(
            "atis_subject_key_identifier_hash",
            f"SKI {ski.hex()} is not the SHA-1 of the public key",
        )
    try:
        aki = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        if role is not CertRole.ROOT:
            out.error("atis_ext_authority_key_identifier", "AuthorityKeyIdentifier is absent")
        return
    if aki.key_identifier is None:
        out.error(
            "atis_ext_authority_key_identifier", "AuthorityKeyIdentifier has no keyIdentifier"
        )
        return
    if role is CertRole.ROOT:
        if ski is not None and aki.key_identifier != ski:
            out.error(
                "atis_ext_authority_key_identifier", "root AKI keyIdentifier differs from its SKI"
            )
        return
    if issuer is not None:
        try:
            issuer_ski = issuer.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier
            ).value.digest
        except (x509.ExtensionNotFound, ValueError):
            issuer_ski = None
        if issuer_ski is not None and issuer_ski != aki.key_identifier:
            out.error(
                "atis_ext_authority_key_identifier",
                f"AKI {aki.key_identifier.hex()} differs from the issuer SKI {issuer_ski.hex()}",
            )


def _sha1_key_ids(cert: x509.Certificate) -> tuple[bytes, ...]:
    """SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2 method 1) and of the whole SPKI."""
    try:
        spki = _spki(cert.tbs_certificate_bytes)
        _tag, start, length = read_tlv(spki, 0)
        bits = tlvs(spki, start, length)[1]
        _tag, b_start, b_length = read_tlv(bits, 0)
    except (TlvError, IndexError):
        return ()
    key_bits = bits[b_start + 1 : b_start + b_length]  # after the unused-bits octet
    return hashlib.sha1(key_bits).digest(), hashlib.sha1(spki).digest()


def _check_policies_and_crldp(extensions: x509.Extensions, role: CertRole, out: _Collector) -> None:
    try:
        policies_ext = extensions.get_extension_for_class(x509.CertificatePolicies)
    except x509.ExtensionNotFound:
        policies_ext = None
    if role is CertRole.ROOT:
        if policies_ext is not None:
            out.error("atis_root_certificate_policies", "a root carries CertificatePolicies")
    elif policies_ext is None:
        out.error("atis_ext_certificate_policies", "CertificatePolicies extension is absent")
    else:
        oids = [info.policy_identifier.dotted_string for info in policies_ext.value]
        if len(oids) != 1:
            out.error(
                "atis_ext_certificate_policies",
                f"CertificatePolicies has {len(oids)} policies, not exactly one",
            )
        elif not oids[0].startswith(SHAKEN_POLICY_ARC + "."):
            out.error(
                "shaken_certificate_policies_id",
                f"policy {oids[0]} is not a SHAKEN CP OID ({SHAKEN_POLICY_ARC}.x)",
            )
        elif oids[0] in _SUPERSEDED_POLICIES:
            out.warning(
                "shaken_certificate_policies_version",
                f"policy {oids[0]} names a superseded SHAKEN CP version (current: 1.3, 1.4)",
            )
        if policies_ext.critical:
            out.warning("atis_certificate_policy_critical", "CertificatePolicies is critical")

    try:
        crldp: x509.CRLDistributionPoints | None = extensions.get_extension_for_class(
            x509.CRLDistributionPoints
        ).value
    except x509.ExtensionNotFound:
        crldp = None
    if role is CertRole.ROOT:
        if crldp is not None:
            out.error("atis_root_crl_distribution", "a root carries CRL Distribution Points")
        return
    if crldp is None:
        out.error("atis_ext_crl_distribution", "CRL Distribution Points extension is absent")
        return
    points = list(crldp)
    if len(points) != 1:
        out.error(
            "atis_ext_crl_distribution",
            f"CRL Distribution Points has {len(points)} DistributionPoints, not 1",
        )
        return
    point = points[0]
    uris = [
        n.value
        for n in point.full_name or ()
        if isinstance(n, x509.UniformResourceIdentifier)
        and n.value.lower().startswith(("http://", "https://"))
    ]
    if not uris:
        out.error("atis_ext_crl_distribution", "the DistributionPoint names no HTTP(S) URL")
    if not point.crl_issuer:
        out.error("atis_ext_crl_distribution_struct", "the DistributionPoint has no cRLIssuer")


def _check_tnauthlist(cert: x509.Certificate, role: CertRole, out: _Collector) -> None:
    try:
        tnal = tnauthlist_of(cert)
        problem: str | None = None
    except CertificateError as exc:
        tnal, problem = None, str(exc)
    if role is not CertRole.LEAF:
        if tnal is not None or problem is not None:
            out.error(
                "atis_tn_auth_list_ca",
                "a CA certificate carries a TNAuthList (allowed only for RFC 9060 delegation)",
            )
        return
    common_names = _attr_values(cert.subject, NameOID.COMMON_NAME)
    cn = common_names[0] if common_names else ""
    if tnal is None:
        reason = problem if problem is not None else "TNAuthList extension is absent"
        out.error("atis_tn_auth_list", reason)
        out.error("atis_subject_cn_spc", f"CN {cn!r} cannot be checked: no usable SPC ({reason})")
        return
    spc = tnal.spc
    if len(tnal.entries) != 1 or spc is None:
        kinds = ", ".join(type(e).__name__ for e in tnal.entries)
        out.error("atis_tn_auth_list", f"TNAuthList has entries ({kinds}), not exactly one SPC")
    if spc is None:
        out.error("atis_subject_cn_spc", f"CN {cn!r} cannot be checked: TNAuthList has no SPC")
        return
    if not _SPC_FORMAT.fullmatch(spc):
        out.error(
            "atis_tn_auth_list_spc_format",
            f"SPC {spc!r} has characters other than digits and uppercase letters",
        )
    expected = f"SHAKEN {spc}"
    if not re.search(rf"(?<!\S){re.escape(expected)}(?!\S)", cn):
        out.error("atis_subject_cn_spc", f"CN {cn!r} does not contain {expected!r}")
    elif cn != expected:
        out.warning("atis_subject_cn_spc_exact", f"CN {cn!r} has more than {expected!r}")

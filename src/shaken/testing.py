"""The public test kit: a throwaway STI PKI at a fixed time.

Everything made here is TEST MATERIAL. The CA subjects say so ("TEST ... ONLY"), the keys are
generated in memory on each call, and nothing here should ever sign a real call.

:func:`make_sti_pki` builds the three-level SHAKEN hierarchy of ATIS-1000080 v005 (root STI-CA,
intermediate STI-CA, service-provider leaf) plus a separate STI-PA key that signs the SHAKEN
CRL, so tests exercise exactly the profile real verifiers meet: critical BasicConstraints, exact
KeyUsage, SKI/AKI, the SHAKEN CertificatePolicies OID, one CRL Distribution Point with a
``cRLIssuer``, a TNAuthList SPC in the leaf and a CN of ``SHAKEN <SPC>``. It is built with
``cryptography`` only and takes ``now`` explicitly, so a test can place any certificate inside
or outside its validity. The certificates come from :mod:`shaken.toolkit.x509build`, the same
builders the toolkit's test STI-CA uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shaken.core.certs import Spc, TNAuthList, TNEntry
from shaken.core.chain import TrustAnchors
from shaken.core.claimconstraints import ClaimConstraints
from shaken.core.errors import ConfigurationError
from shaken.toolkit.x509build import (
    SHAKEN_CP_1_4,
    RevokedEntry,
    build_certificate,
    build_crl,
    certificates_pem,
    key_usage,
    shaken_name,
)

__all__ = ["SHAKEN_CP_1_4", "Delegation", "StiPki", "make_sti_pki"]

_Validity = tuple[timedelta, timedelta]


def _name(cn: str, org: str) -> x509.Name:
    return shaken_name(cn, org, "US")


def _pem(*certificates: x509.Certificate) -> bytes:
    return certificates_pem(*certificates)


def _issue(
    *,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    validity: _Validity,
    ca: bool,
    crl_url: str | None = None,
    crl_issuer: x509.Name | None = None,
    tnauthlist: TNAuthList | None = None,
    claim_constraints: ClaimConstraints | None = None,
) -> x509.Certificate:
    """One certificate of the ATIS-1000080 v005 profile, valid ``validity`` around ``now``."""
    return build_certificate(
        subject=subject,
        public_key=key.public_key(),
        issuer=issuer,
        issuer_key=issuer_key,
        not_before=now - validity[0],
        not_after=now + validity[1],
        ca=ca,
        crl_url=crl_url,
        crl_issuer=crl_issuer,
        tnauthlist=tnauthlist,
        claim_constraints=claim_constraints,
    )


def _crl(
    *,
    issuer: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    revoked: Iterable[int],
    at: datetime,
    next_update: datetime,
) -> bytes:
    entries = [RevokedEntry(serial=s, revoked_at=at - timedelta(minutes=1)) for s in revoked]
    crl = build_crl(
        issuer=issuer, issuer_key=key, revoked=entries, this_update=at, next_update=next_update
    )
    return crl.public_bytes(serialization.Encoding.DER)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True, slots=True, kw_only=True)
class Delegation:
    """An RFC 9060 delegation: a TN-authorized CA under the intermediate and its delegate."""

    ca: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate

    @property
    def chain_pem(self) -> bytes:
        """What the delegate's x5u serves: the whole chain, signer first (RFC 9060 section 8)."""
        return _pem(self.leaf, self.ca, self.intermediate)

    @property
    def leaf_key_pem(self) -> bytes:
        return self.leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StiPki:
    """A TEST SHAKEN PKI: root and intermediate STI-CA, one SP leaf, and an STI-PA CRL signer."""

    now: datetime
    spc: str
    crl_url: str
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey
    sti_pa: x509.Certificate
    sti_pa_key: ec.EllipticCurvePrivateKey

    @property
    def chain_pem(self) -> bytes:
        """Leaf then intermediate: what an x5u URL serves (application/pem-certificate-chain)."""
        return _pem(self.leaf, self.intermediate)

    @property
    def root_pem(self) -> bytes:
        return _pem(self.root)

    @property
    def sti_pa_pem(self) -> bytes:
        return _pem(self.sti_pa)

    @property
    def leaf_key_pem(self) -> bytes:
        return self.leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def trust_anchors(self) -> TrustAnchors:
        return TrustAnchors(certificates=(self.root,))

    def crl(
        self,
        revoked: Iterable[int] = (),
        *,
        at: datetime | None = None,
        next_update: datetime | None = None,
    ) -> bytes:
        """A direct CRL (DER) signed by the intermediate, listing ``revoked`` serials.

        ``at`` (default ``now``) is thisUpdate; ``next_update`` defaults to a day later.
        """
        return self._crl(self.intermediate, self.intermediate_key, revoked, at, next_update)

    def sti_pa_crl(
        self,
        revoked: Iterable[int] = (),
        *,
        at: datetime | None = None,
        next_update: datetime | None = None,
    ) -> bytes:
        """The SHAKEN CRL (DER): signed by the STI-PA, named as cRLIssuer in every CRLDP.

        It can revoke the intermediate and the leaf alike (an indirect CRL); pass
        :attr:`sti_pa` as a ``crl_signer`` to the chain validator.
        """
        return self._crl(self.sti_pa, self.sti_pa_key, revoked, at, next_update)

    def _crl(
        self,
        issuer: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        revoked: Iterable[int],
        at: datetime | None,
        next_update: datetime | None,
    ) -> bytes:
        at = at if at is not None else self.now
        return _crl(
            issuer=issuer,
            key=key,
            revoked=revoked,
            at=at,
            next_update=next_update if next_update is not None else at + timedelta(days=1),
        )

    def delegate(
        self,
        tn_entries: tuple[TNEntry, ...],
        *,
        ca_entries: tuple[TNEntry, ...] | None = None,
        validity: _Validity = (timedelta(days=1), timedelta(days=30)),
        constraints: ClaimConstraints | None = None,
    ) -> Delegation:
        """Issue an RFC 9060 delegation for TN-scoped signing.

        ``constraints`` puts JWTClaimConstraints (or, when enhanced, RFC 9118's) in the
        delegate end-entity certificate: the branded-calling certificate that pins ``rcd``.

        The SP gets a CA certificate (cA TRUE) under the intermediate whose TNAuthList is
        ``ca_entries`` (default: the SP's SPC plus ``tn_entries``), and that CA issues the
        delegate end-entity certificate with ``tn_entries``. Passing ``ca_entries`` that do not
        encompass ``tn_entries`` builds a broken delegation on purpose.
        """
        if not tn_entries:
            raise ConfigurationError("a delegate certificate needs at least one TN entry")
        ca_list = TNAuthList(
            entries=ca_entries if ca_entries is not None else (Spc(code=self.spc), *tn_entries)
        )
        ca_key, leaf_key = _new_key(), _new_key()
        ca = _issue(
            subject=_name(f"SHAKEN {self.spc} TEST Delegation CA", "Example Telecom (TEST ONLY)"),
            key=ca_key,
            issuer=self.intermediate,
            issuer_key=self.intermediate_key,
            now=self.now,
            validity=validity,
            ca=True,
            crl_url=self.crl_url,
            crl_issuer=self.sti_pa.subject,
            tnauthlist=ca_list,
        )
        leaf = _issue(
            subject=_name(f"SHAKEN {self.spc} TEST Delegate", "Example Customer (TEST ONLY)"),
            key=leaf_key,
            issuer=ca,
            issuer_key=ca_key,
            now=self.now,
            validity=validity,
            ca=False,
            crl_url=self.crl_url,
            crl_issuer=self.sti_pa.subject,
            tnauthlist=TNAuthList(entries=tn_entries),
            claim_constraints=constraints,
        )
        return Delegation(
            ca=ca, ca_key=ca_key, leaf=leaf, leaf_key=leaf_key, intermediate=self.intermediate
        )


def make_sti_pki(
    now: datetime,
    *,
    spc: str = "1234",
    org: str = "Example Telecom",
    tn_entries: tuple[TNEntry, ...] | None = None,
    crl_url: str = "https://sti-pa.example.test/crl",
    root_validity: _Validity = (timedelta(days=365), timedelta(days=3650)),
    intermediate_validity: _Validity = (timedelta(days=365), timedelta(days=1825)),
    leaf_validity: _Validity = (timedelta(days=1), timedelta(days=365)),
) -> StiPki:
    """A fresh TEST SHAKEN PKI valid around ``now`` (which must be timezone-aware).

    ``tn_entries`` replaces the leaf's TNAuthList (default: just ``Spc(spc)``), e.g. to make a
    TN-scoped leaf; the CN stays ``SHAKEN <spc>``. Each ``*_validity`` is (time before ``now``,
    time after ``now``): a test moves a certificate out of its validity by shortening it.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ConfigurationError("make_sti_pki needs a timezone-aware 'now'")
    root_key, intermediate_key, leaf_key, pa_key = (_new_key() for _ in range(4))
    sti_pa = build_certificate(
        subject=_name("TEST STI-PA CRL Signer", "Example STI-PA (TEST ONLY)"),
        public_key=pa_key.public_key(),
        issuer=None,
        issuer_key=pa_key,
        not_before=now - root_validity[0],
        not_after=now + root_validity[1],
        ca=True,
        path_length=0,
        usage=key_usage(crl_sign=True),
    )
    root = _issue(
        subject=_name("TEST SHAKEN ROOT CA", "Example STI-CA (TEST ONLY)"),
        key=root_key,
        issuer=None,
        issuer_key=root_key,
        now=now,
        validity=root_validity,
        ca=True,
    )
    intermediate = _issue(
        subject=_name("TEST SHAKEN Intermediate CA", "Example STI-CA (TEST ONLY)"),
        key=intermediate_key,
        issuer=root,
        issuer_key=root_key,
        now=now,
        validity=intermediate_validity,
        ca=True,
        crl_url=crl_url,
        crl_issuer=sti_pa.subject,
    )
    leaf = _issue(
        subject=_name(f"SHAKEN {spc}", org),
        key=leaf_key,
        issuer=intermediate,
        issuer_key=intermediate_key,
        now=now,
        validity=leaf_validity,
        ca=False,
        crl_url=crl_url,
        crl_issuer=sti_pa.subject,
        tnauthlist=TNAuthList(entries=tn_entries if tn_entries is not None else (Spc(code=spc),)),
    )
    return StiPki(
        now=now,
        spc=spc,
        crl_url=crl_url,
        root=root,
        root_key=root_key,
        intermediate=intermediate,
        intermediate_key=intermediate_key,
        leaf=leaf,
        leaf_key=leaf_key,
        sti_pa=sti_pa,
        sti_pa_key=pa_key,
    )


# --- SIP context builders (added separately) ---

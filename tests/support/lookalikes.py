"""x5u chains that make a path builder search: look-alike CAs that share one name and one key.

Each look-alike is a CA certificate whose subject and issuer are the same name and which is
signed by the same key, so every look-alike verifies as the issuer of the leaf and of every
other look-alike, and none of them leads to a trust anchor. A search that follows names and
signatures without a bound tries every ordering of them up to its depth limit: with n
look-alikes that is about n**7 signature checks (issue 17 item 1: n = 8, a 4.2 KB x5u body,
took seconds; 64 KiB holds about 90).

Real X.509 from ``cryptography``; the key is shared, so building n certificates costs n
signatures, not n key generations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shaken.toolkit.x509build import certificates_pem

__all__ = ["LookalikeChain", "lookalike_chain"]


@dataclass(frozen=True, slots=True)
class LookalikeChain:
    leaf: x509.Certificate
    lookalikes: tuple[x509.Certificate, ...]

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        return (self.leaf, *self.lookalikes)

    @property
    def pem(self) -> bytes:
        """The x5u body: the leaf first, then the look-alikes."""
        return certificates_pem(*self.certificates)


def lookalike_chain(
    n: int,
    now: datetime,
    *,
    name: x509.Name | str = "Look-alike STI-CA (TEST ONLY)",
    leaf_key: ec.EllipticCurvePrivateKey | None = None,
) -> LookalikeChain:
    """A leaf and ``n`` look-alike CAs, valid around ``now``.

    ``name``: the name they share (a CN, or a whole name: a trust anchor's, so that every one
    of them names an anchor as its issuer and only a signature check tells them apart).
    ``leaf_key``: the leaf's key (a fresh one by default), so a test can sign a PASSporT that
    the leaf's public key would verify.
    """
    ca_key = ec.generate_private_key(ec.SECP256R1())
    issuer = (
        name
        if isinstance(name, x509.Name)
        else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    )
    start, end = now - timedelta(days=1), now + timedelta(days=30)

    def lookalike(serial: int) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(issuer)
            .issuer_name(issuer)
            .public_key(ca_key.public_key())
            .serial_number(serial)
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )

    key = leaf_key or ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SHAKEN 6666")]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(ca_key, hashes.SHA256())
    )
    return LookalikeChain(leaf=leaf, lookalikes=tuple(lookalike(100 + i) for i in range(n)))

"""The trust material a running verifier uses, swapped atomically on reload.

A verifier must be able to take a new STI-PA trust list (or a new CA file) without a restart and
without failing the calls in flight. :class:`TrustStore` holds one immutable
:class:`TrustMaterial` and replaces it with a single attribute assignment, so a verification
that read the old material finishes with it and every later one sees the new material; nothing
is ever half-updated. The ``version`` counter lets the certificate cache notice that chains it
validated against older anchors must be validated again.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from shaken.core.chain import TrustAnchors

__all__ = ["TrustMaterial", "TrustStore"]

_versions = itertools.count(1)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustMaterial:
    """STI-CA roots, the certificates allowed to sign CRLs (the STI-PA), and a version.

    ``anchors`` is ``None`` before anything was loaded: every chain is then untrusted.
    ``source`` says where the material came from, for ``shaken trust list`` and logs.
    """

    anchors: TrustAnchors | None
    crl_signers: tuple[x509.Certificate, ...] = ()
    version: int = 0
    source: str = ""


class TrustStore:
    """The current :class:`TrustMaterial`; :meth:`replace` swaps it in one step."""

    def __init__(
        self,
        anchors: TrustAnchors | None = None,
        crl_signers: Sequence[x509.Certificate] = (),
        *,
        source: str = "",
    ) -> None:
        self._current = TrustMaterial(
            anchors=anchors,
            crl_signers=tuple(crl_signers),
            version=next(_versions),
            source=source,
        )

    @property
    def current(self) -> TrustMaterial:
        """Read this once per verification and use that value throughout."""
        return self._current

    @property
    def version(self) -> int:
        return self._current.version

    def replace(
        self,
        anchors: TrustAnchors | None,
        crl_signers: Sequence[x509.Certificate] = (),
        *,
        source: str = "",
    ) -> TrustMaterial:
        """Install new material and return it. Calls already running keep the old one."""
        material = TrustMaterial(
            anchors=anchors,
            crl_signers=tuple(crl_signers),
            version=next(_versions),
            source=source,
        )
        self._current = material
        return material

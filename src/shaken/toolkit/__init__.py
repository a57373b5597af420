"""The certificate toolkit: keys, CSRs, a test STI-PA/STI-CA, CRLs, lint, an STI-CR, a lab.

Operators need SHAKEN certificates before they can sign a call, and every test needs a
realistic PKI. :mod:`shaken.toolkit.x509build` is the one place certificates, CSRs and CRLs
are built (the public test kit :mod:`shaken.testing` uses it too); the other modules add file
and network I/O around it: :mod:`~shaken.toolkit.ca` (a CA directory), :mod:`~shaken.toolkit.lint`
(ATIS-1000080 findings for humans), :mod:`~shaken.toolkit.repository` (a certificate repository
server) and :mod:`~shaken.toolkit.lab` (all of it in one command).

Layering: the toolkit sits beside the adapters. It may import :mod:`shaken.core`; nothing in
``shaken.core`` or ``shaken.services`` may import it.
"""

from __future__ import annotations

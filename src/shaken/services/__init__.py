"""Async orchestration over small injected ports (docs/architecture.md section 2).

Services import only :mod:`shaken.core`: the certificate cache, the verification and signing
services sit here, between the pure core and the I/O adapters.
"""

"""Persistence adapters: the certificate store (a directory with atomic writes)."""

from __future__ import annotations

from shaken.adapters.store.certstore import DirectoryCertificateStore, default_cache_dir

__all__ = ["DirectoryCertificateStore", "default_cache_dir"]

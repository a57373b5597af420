"""The ATIS-1000082 REST API (and its 3GPP Ms variant): an ASGI app and its uvicorn server.

:func:`create_app` builds the application over a :class:`~shaken.adapters.runtime.Runtime`;
:func:`serve_rest` serves it on the configured listeners inside the caller's event loop, which
is how ``shaken serve`` runs REST beside SIP. This package never imports the SIP adapter.
"""

from __future__ import annotations

from shaken.adapters.http.app import ASGIApp, RestApplication, create_app
from shaken.adapters.http.auth import ApiKey, Keyring
from shaken.adapters.http.schemas import ApiError, openapi_document
from shaken.adapters.http.server import serve_rest

__all__ = [
    "ASGIApp",
    "ApiError",
    "ApiKey",
    "Keyring",
    "RestApplication",
    "create_app",
    "openapi_document",
    "serve_rest",
]

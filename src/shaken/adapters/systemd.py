"""Readiness for systemd: the ``sd_notify`` protocol of a ``Type=notify`` service.

When systemd starts a unit with ``Type=notify`` it sets ``NOTIFY_SOCKET`` to a Unix datagram
socket and waits for the service to send ``READY=1`` there before it counts the unit as
started (and before units ordered after it start). ``shaken serve`` sends it once every
listener is bound and every worker serves, so "started" means "answering calls".

Written by hand because the protocol is one datagram of ``KEY=value`` lines to a path (a
leading ``@`` names the abstract namespace), and the maintained binding (``systemd-python``)
needs libsystemd's headers to build; pulling that into every install for one ``sendto`` is
not worth it. Without ``NOTIFY_SOCKET`` (not under systemd) nothing is sent.
"""

from __future__ import annotations

import contextlib
import os
import socket

__all__ = ["notify"]


def notify(*states: str) -> bool:
    """Send ``states`` (``"READY=1"``, ``"STATUS=..."``) to systemd; True if one was sent.

    Never raises: a service must not fail because its supervisor cannot be told.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not states:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    payload = "\n".join(states).encode("utf-8", "replace")
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(payload, address)
        return True
    return False

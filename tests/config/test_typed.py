"""The typed settings: one field per schema key, each unset key at its one default."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields, replace

import pytest

from shaken.config import ServerSettings, parse_config
from shaken.config.schema import SERVER_KEYS


def test_every_server_key_is_a_typed_field() -> None:
    assert {f.name for f in fields(ServerSettings)} == set(SERVER_KEYS)


def test_server_settings_are_typed_frozen_and_follow_the_table() -> None:
    settings = parse_config(
        '[server]\nworkers = 3\nrest = ["http:127.0.0.1:8080"]\n'
        'listener_profiles = {"udp:127.0.0.1:5060" = "global"}\nsip_sign = ["udp:127.0.0.1:5060"]\n'
    )
    server = settings.server_settings
    assert server.workers == 3
    assert server.rest == ("http:127.0.0.1:8080",)
    assert dict(server.listener_profiles) == {"udp:127.0.0.1:5060": "global"}
    assert server.retry_after == ServerSettings().retry_after  # unset: the default
    with pytest.raises(FrozenInstanceError):
        server.workers = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        server.listener_profiles["udp:127.0.0.1:5061"] = "x"  # type: ignore[index]
    # A replaced table gives replaced typed settings (``--workers``, ``--call-log``).
    assert replace(settings, server={**settings.server, "workers": 5}).server_settings.workers == 5


def test_an_unset_max_in_flight_bounds_sip_only() -> None:
    assert ServerSettings().max_in_flight is None
    assert ServerSettings().sip_max_in_flight > 0
    assert ServerSettings(max_in_flight=7).sip_max_in_flight == 7

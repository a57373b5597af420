"""Configuration: one strict TOML file in Asterisk's object model.

See docs/architecture.md section 7.
"""

from __future__ import annotations

from shaken.config.loader import (
    ConfigError,
    EffectiveProfile,
    Problem,
    Settings,
    effective_profile,
    load_config,
    parse_config,
)
from shaken.config.schema import GLOBAL_PROFILE, Behavior
from shaken.config.typed import AttestationSettings, ServerSettings, VerificationSettings

__all__ = [
    "GLOBAL_PROFILE",
    "AttestationSettings",
    "Behavior",
    "ConfigError",
    "EffectiveProfile",
    "Problem",
    "ServerSettings",
    "Settings",
    "VerificationSettings",
    "effective_profile",
    "load_config",
    "parse_config",
]

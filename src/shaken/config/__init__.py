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

__all__ = [
    "ConfigError",
    "EffectiveProfile",
    "Problem",
    "Settings",
    "effective_profile",
    "load_config",
    "parse_config",
]

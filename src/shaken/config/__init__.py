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
from shaken.config.typed import (
    AcmeConfig,
    AttestationSettings,
    LifecycleSettings,
    ServerSettings,
    StiPaConfig,
    TnEntry,
    TnRangeEntry,
    VerificationSettings,
)

__all__ = [
    "GLOBAL_PROFILE",
    "AcmeConfig",
    "AttestationSettings",
    "Behavior",
    "ConfigError",
    "EffectiveProfile",
    "LifecycleSettings",
    "Problem",
    "ServerSettings",
    "Settings",
    "StiPaConfig",
    "TnEntry",
    "TnRangeEntry",
    "VerificationSettings",
    "effective_profile",
    "load_config",
    "parse_config",
]

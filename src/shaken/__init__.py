"""shaken: STIR/SHAKEN caller-ID authentication."""

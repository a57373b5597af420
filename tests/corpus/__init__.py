"""Tests against the shared corpus of real STIR/SHAKEN material (skipped when it is absent)."""

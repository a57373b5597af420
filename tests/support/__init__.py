"""Helpers shared by the test suites (and the cache benchmark): a loopback HTTPS repository."""

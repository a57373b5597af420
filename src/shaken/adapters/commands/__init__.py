"""Command groups of the ``shaken`` CLI beyond the core ones in :mod:`shaken.adapters.cli`.

Each module here defines ``register(commands, cert_commands)`` (the top-level sub-parsers and
those of ``shaken cert``), adding its sub-commands with
``set_defaults(func=...)``; the CLI finds them by name, so a new group needs no edit elsewhere.
"""

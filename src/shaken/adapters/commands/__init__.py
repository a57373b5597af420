"""Every command of the ``shaken`` CLI; :mod:`shaken.adapters.cli` only assembles the parser
and runs one (its exit codes, :class:`~shaken.adapters.cli.UsageError` and clock are shared).

Each module here defines ``register(commands, cert_commands)`` (the top-level sub-parsers and
those of ``shaken cert``), adding its sub-commands with
``set_defaults(func=...)``; the CLI finds them by name, so a new group needs no edit elsewhere.
"""

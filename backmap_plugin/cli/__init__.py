"""The ``backmap`` command: one module per subcommand over the Python API.

Importing this package (and asking for ``--help``) loads no heavy library;
each subcommand imports what it needs when it runs.
"""

from backmap_plugin.cli.command import build_parser, handled_errors, main

__all__ = ["build_parser", "handled_errors", "main"]

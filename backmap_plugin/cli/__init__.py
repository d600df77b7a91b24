"""The ``backmap`` command: one module per subcommand over the Python API.

``command.py`` holds the top-level parser and :func:`main`; ``run.py``,
``refine.py``, ``validate.py``, ``export.py``, ``report.py``, ``data.py``
and ``train.py`` one subcommand (group) each; ``options.py`` the options
they share. Importing this package (and asking for ``--help``) loads no
heavy library; each subcommand imports what it needs when it runs.
"""

from backmap_plugin.cli.command import build_parser, call, console_main, handled_errors, main

__all__ = ["build_parser", "call", "console_main", "handled_errors", "main"]

"""``python -m backmap_plugin.cli``: the ``backmap`` command."""

from backmap_plugin.cli.command import console_main

console_main()

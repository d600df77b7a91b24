"""``python -m backmap_plugin``: the ``backmap`` command (as ``python -m backmap_plugin.cli``)."""

from backmap_plugin.cli.command import console_main

console_main()

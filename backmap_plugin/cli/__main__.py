"""``python -m backmap_plugin.cli``: the ``backmap`` command."""

import sys

from backmap_plugin.cli.command import main

sys.exit(main())

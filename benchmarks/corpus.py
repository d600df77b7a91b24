"""What the benchmark scripts share: where the corpus is, and option types that refuse nonsense
(``positive_int`` is the package's own).

The corpus (``manifest.csv``, ``train/``, ``visible_test/``) is looked for
in ``--data``, else ``$BACKMAP_DATA``, else ``../shared/data`` beside the
repository; a script that needs it stops with one line naming where it
looked when it is not there.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from backmap_plugin.cli.options import positive_int  # (the package's own: a count, at least 1)

#: The corpus folder when ``--data`` is not given.
DEFAULT_DATA = Path(os.environ.get("BACKMAP_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def add_data_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--data``: the corpus folder (default :data:`DEFAULT_DATA`)."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="corpus folder with manifest.csv, train/ and visible_test/ (default: $BACKMAP_DATA or "
                             "../shared/data beside the repository: %(default)s)")


def corpus(path: Path) -> Path:
    """``path`` where it holds the corpus; otherwise the script stops with a line saying where it looked."""
    if not (Path(path) / "manifest.csv").is_file():
        sys.exit(f"{path}: no corpus here (no manifest.csv); pass --data with the corpus folder (manifest.csv, "
                 "train/, visible_test/) or set BACKMAP_DATA")
    return Path(path)


def choice_list(*choices: str):
    """An option type: a comma-separated list of ``choices`` (``--methods ideal,model``), refused otherwise."""
    def parse(text: str) -> str:
        given = [x for x in text.split(",") if x]
        unknown = [x for x in given if x not in choices]
        if not given or unknown:
            raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(choices)}, got {text!r}")
        return text
    return parse


def devices(text: str) -> str:
    """An option type: a comma-separated list of ``cpu`` and ``cuda``, ``cuda`` only where torch sees a GPU."""
    import torch

    choice_list("cpu", "cuda")(text)
    if "cuda" in text.split(",") and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("cuda: torch sees no GPU here")
    return text


__all__ = ["DEFAULT_DATA", "add_data_option", "choice_list", "corpus", "devices", "positive_int"]

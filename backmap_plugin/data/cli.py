"""The ``backmap data`` subcommands: ``build`` and ``info`` of a corpus cache.

:func:`add_parser` adds the group to the ``backmap`` command's subparsers;
:func:`main` runs it on its own (``python -m backmap_plugin.data.cli build ...``).
"""

from __future__ import annotations

import argparse
from collections import Counter


_BUILD_EXAMPLE = """example:
  backmap data build ../shared/data/train -o cache/train
  backmap data build ../shared/data/visible_test -o cache/visible_test
"""


def _add_build(sub) -> None:
    p = sub.add_parser(
        "build",
        help="build or update a corpus cache from structure files",
        description=(
            "Read structure files (PDB/mmCIF, gzipped or not; multi-model files are ensembles), "
            "clean them and store memory-mappable training arrays. Only new or changed files "
            "are parsed; report.csv lists every file and why a file was skipped."
        ),
        epilog=_BUILD_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sources", nargs="+", metavar="SRC", help="structure files or folders (searched recursively)")
    p.add_argument("-o", "--output", required=True, metavar="CACHE", help="cache folder")
    p.add_argument("--mapping", default="ca", choices=["ca", "com"], help="where the stored beads sit (default: ca)")
    p.add_argument("--max-frames", type=int, default=50, help="frames kept per file, evenly spaced (default: 50)")
    p.add_argument("--workers", type=int, default=2, help="parallel processes (default: 2)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of clusters in the validation split (default: 0.1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors")
    p.set_defaults(func=_build)


def _add_info(sub) -> None:
    p = sub.add_parser(
        "info",
        help="summarise a corpus cache",
        description="Print entries, frames, residues, clusters and counts per split, source and kind of a cache.",
    )
    p.add_argument("cache", metavar="CACHE", help="cache folder")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors")
    p.set_defaults(func=_info)


def _add_commands(sub) -> None:
    _add_build(sub)
    _add_info(sub)


def add_parser(subparsers) -> None:
    """Add the ``data`` subcommand group (``build``, ``info``) to the ``backmap`` command.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``ArgumentParser.add_subparsers``; each subcommand sets
        ``func`` taking the parsed namespace and returning the exit status.
    """
    p = subparsers.add_parser(
        "data",
        help="training data: build and inspect the corpus cache",
        description="Training data: build and inspect the corpus cache.",
    )
    _add_commands(p.add_subparsers(dest="data_command", required=True))


def _build(args) -> int:
    from .cache import build_cache

    summary = build_cache(
        args.sources, args.output, mapping=args.mapping, max_frames=args.max_frames,
        workers=args.workers, val_fraction=args.val_fraction, progress=not args.quiet,
    )
    if summary["up_to_date"]:
        print(f"{summary['cache_dir']}: up to date ({summary['entries']} entries)")
        return 0
    splits = ", ".join(f"{k} {v}" for k, v in sorted(summary["splits"].items()))
    print(
        f"{summary['cache_dir']}: {summary['files']} files: {summary['built']} parsed, "
        f"{summary['reused']} reused, {summary['skipped']} skipped, {summary['removed']} removed; "
        f"{summary['entries']} entries in {summary['clusters']} clusters ({splits}); "
        f"{summary['seconds']:.1f} s"
    )
    return 0


def _count_table(title: str, counts: Counter) -> list[str]:
    lines = [f"{title}:"]
    lines += [f"  {name:<40} {n:>7}" for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return lines if counts else lines + ["  none"]


def _total(rows: list[dict], column: str) -> int:
    return sum(int(row[column] or 0) for row in rows)


def info_lines(cache) -> list[str]:
    """Lines of the ``backmap data info`` summary of an opened cache.

    Parameters
    ----------
    cache : Cache
        From :func:`backmap_plugin.data.cache.open_cache`.
    """
    entries = cache.entries
    report = cache.report()
    ok = [row for row in report if row["status"] == "ok"]
    skipped = [row for row in report if row["status"] != "ok"]
    settings = cache.settings
    lines = [
        f"cache {cache.root}: mapping {settings.get('mapping')}, max_frames {settings.get('max_frames')}, "
        f"val_fraction {settings.get('val_fraction')}",
        f"entries   {len(entries)} (files in report: {len(report)}, skipped: {len(skipped)})",
        f"frames    {sum(e.n_frames for e in entries)}",
        f"residues  kept {_total(ok, 'residues_kept')}, masked {_total(ok, 'residues_masked')}, "
        f"dropped {_total(ok, 'residues_dropped')}",
        f"clusters  {len({e.cluster30 for e in entries})}",
        "per split:",
    ]
    for split in sorted({e.split for e in entries}):
        members = [e for e in entries if e.split == split]
        lines.append(
            f"  {split:<6} entries {len(members):>5}  clusters {len({e.cluster30 for e in members}):>4}  "
            f"frames {sum(e.n_frames for e in members):>6}  residues {sum(e.n_residues for e in members):>8}"
        )
    lines += _count_table("per source", Counter(e.entry_id.split("__")[0] for e in entries))
    lines += _count_table("per kind", Counter(e.kind for e in entries))
    lines += _count_table("skipped files by reason", Counter(row["reason"].split(":")[0] for row in skipped))
    dropped = Counter()
    for row in ok:
        for note in filter(None, row["notes"].split("; ")):
            if note.startswith("dropped"):
                words = note.split()
                dropped[" ".join(words[2:])] += int(words[1])
    lines += _count_table("dropped residues (in kept files)", dropped)
    return lines


def _info(args) -> int:
    from .cache import open_cache

    print("\n".join(info_lines(open_cache(args.cache))))
    return 0

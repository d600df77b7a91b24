"""``backmap data``: ``build`` and ``info`` of a corpus cache, ``augment``.

:func:`add_parser` adds the group to the ``backmap`` command's subparsers;
:func:`run_build`, :func:`run_info` and :func:`run_augment` run its
subcommands (thin layers over :mod:`backmap_plugin.training.cache` and
:mod:`backmap_plugin.training.augment`).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from backmap_plugin.cli import options

__all__ = ["add_parser", "info_lines", "run_augment", "run_build", "run_info"]


_BUILD_NOTES = """sources:
  a file is read whatever its name; folders are searched recursively for .pdb, .ent, .cif, .mmcif
  (each also .gz), .gro and .h5 files. Trajectories (.xtc, .dcd, .trr, .nc) hold no topology and are not
  read: write the frames with their topology as one multi-model PDB, e.g.
  mdtraj.load(TRAJ, top=TOPOLOGY).save_pdb(FRAMES.pdb), and give that file.

manifest:
  each file's cluster, kind and split come from the nearest manifest.csv in its folder or a parent
  folder: a CSV with an entry_id column (the file name without extension) and the optional columns
  cluster30 (sequence cluster), kind (crystal, nmr, md, ...), split (visible_test or test: held out)
  and parent (frames derived from that entry, as 'augment' writes). A manifest.csv without an
  entry_id column is ignored with a note. Files without a row are clustered by sequence here.

validation split:
  whole clusters are drawn for validation by a hash of the cluster id (--val-fraction); a family of
  more than one entry and more than 5% of the entries always trains. When at least 2 clusters draw
  none for validation (a small corpus), the smallest cluster is held out instead, with a note; when
  all are drawn, the largest trains. A single cluster gives no validation split (also noted).

"""

_BUILD_EXAMPLE = """example:
  backmap data build ../shared/data/train -o cache/train
  backmap data build ../shared/data/visible_test -o cache/visible_test
"""


def _add_build(sub) -> None:
    p = options.add_command(
        sub, "build",
        help="build or update a corpus cache from structure files",
        description=(
            "Read structure files (PDB/mmCIF, gzipped or not; multi-model files are ensembles), "
            "clean them and store memory-mappable training arrays. The cache then holds exactly these "
            "sources: only new or changed files are parsed, and entries of files not given (including "
            "frames added by 'augment --append') are removed. report.csv lists every file and why a file "
            "was skipped; a build that keeps no structure fails."
        ),
        epilog=_BUILD_NOTES + _BUILD_EXAMPLE,
    )
    p.add_argument("sources", nargs="+", metavar="SRC", help="structure files or folders (searched recursively)")
    options.add_output(p, "cache folder", metavar="CACHE")
    options.add_mapping(p, auto=False)
    p.add_argument("--max-frames", type=int, default=50, help="frames kept per file, evenly spaced (default: 50)")
    p.add_argument("--workers", type=options.positive_int, default=2, help="parallel processes (default: 2)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of sequence clusters drawn for the validation split; at least one "
                        "cluster when there are 2 or more (see below) (default: 0.1)")
    options.add_quiet(p)
    options.add_debug(p)
    p.set_defaults(func=run_build)


def _add_info(sub) -> None:
    p = options.add_command(
        sub, "info",
        help="summarise a corpus cache",
        description="Print entries, frames, residues, clusters and counts per split, source and kind of a cache.",
        epilog="example:\n  backmap data info cache/train\n",
    )
    p.add_argument("cache", metavar="CACHE", help="cache folder")
    options.add_debug(p)
    p.set_defaults(func=run_info)


_AUGMENT_EXAMPLE = """example:
  backmap data augment cache/train --config workflows/augment/config.json -o aug/train
  nice -n 19 backmap data augment cache/train --config workflows/augment/config.json -o aug/train \\
      --max-residues 150 --max-minutes 20 --platform CPU
  backmap data augment cache/train --config workflows/augment/config.json -o aug/train --append
"""


def _shard(text: str) -> tuple:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= k < n):
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, got {text!r}")
    return k, n


def _add_augment(sub) -> None:
    p = options.add_command(
        sub, "augment",
        help="out-of-equilibrium frames: high-temperature MD of cached structures",
        description=(
            "Heat train-split structures of a cache through a temperature ladder (amber14 + implicit "
            "solvent, OpenMM) and write heavy-atom frames that 'backmap data build' reads as kind md-aug "
            "with the parent's cluster and split. Resumable: finished structures are skipped; a failing "
            "structure is reported in failures.csv and skipped. The recipe: workflows/augment/README.md."
        ),
        epilog=_AUGMENT_EXAMPLE,
    )
    p.add_argument("cache", metavar="CACHE", help="corpus cache whose structures are augmented")
    p.add_argument("--config", required=True, help="augmentation recipe (JSON), e.g. workflows/augment/config.json")
    options.add_output(p, "output folder (created; resumable)", metavar="AUG_DIR")
    p.add_argument("--max-structures", type=int, help="run at most the first N structures of the order")
    p.add_argument("--max-residues", type=int, help="largest structure (residues); overrides the config")
    p.add_argument("--max-minutes", type=float, help="start no new structure after this many minutes")
    options.add_platform(p)
    p.add_argument("--shard", type=_shard, default=(0, 1), metavar="K/N",
                   help="run every N-th structure from K (for N processes, e.g. on one GPU)")
    p.add_argument("--retry-failed", action="store_true", help="run structures that failed before again")
    p.add_argument("--append", action="store_true",
                   help="simulate nothing: add the frames already in the folder to CACHE "
                        "(rebuilds its index, reuses its entries)")
    p.add_argument("--workers", type=options.positive_int, default=2,
                   help="processes parsing files for --append (default: 2)")
    options.add_quiet(p)
    options.add_debug(p)
    p.set_defaults(func=run_augment)


def _add_commands(sub) -> None:
    _add_build(sub)
    _add_info(sub)
    _add_augment(sub)


def add_parser(subparsers) -> None:
    """Add the ``data`` subcommand group (``build``, ``info``, ``augment``) to the ``backmap`` command.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``ArgumentParser.add_subparsers``; each subcommand sets
        ``func`` taking the parsed namespace and returning the exit status.
    """
    p = options.add_command(
        subparsers, "data",
        help="training data: build and inspect the corpus cache",
        description="Training data: build and inspect the corpus cache, and widen it with out-of-equilibrium frames.",
        epilog=_BUILD_EXAMPLE + "  backmap data info cache/train\n" + _AUGMENT_EXAMPLE.split("\n", 1)[1],
    )
    _add_commands(p.add_subparsers(dest="data_command", required=True))


def run_build(args) -> int:
    """Build or update the cache ``args.output`` from ``args.sources``; print one line about it.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by the ``data build`` parser of :func:`add_parser`.

    Returns
    -------
    int
        The exit status, 0 (errors are raised).
    """
    from backmap_plugin.training.cache import build_cache

    summary = build_cache(
        args.sources, args.output, mapping=args.mapping, max_frames=args.max_frames,
        workers=args.workers, val_fraction=args.val_fraction, progress=not args.quiet,
    )
    _print_build(summary)
    return 0


def _print_build(summary: dict) -> None:
    """Print the notes (stderr) and the line (stdout) of a build summary."""
    for note in summary["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(_build_line(summary))


def _build_line(summary: dict) -> str:
    """One line about a :func:`~backmap_plugin.training.cache.build_cache` summary."""
    skipped = f" (reasons in {summary['report']})" if summary["skipped"] else ""
    if summary["up_to_date"]:
        also = f", {summary['skipped']} files skipped{skipped}" if summary["skipped"] else ""
        return f"{summary['cache_dir']}: up to date ({summary['entries']} entries{also})"
    splits = ", ".join(f"{k} {v}" for k, v in sorted(summary["splits"].items()))
    return (
        f"{summary['cache_dir']}: {summary['files']} files: {summary['built']} parsed, "
        f"{summary['reused']} reused, {summary['skipped']} skipped{skipped}, {summary['removed']} removed; "
        f"{summary['entries']} entries in {summary['clusters']} clusters ({splits}); "
        f"{summary['seconds']:.1f} s"
    )


def run_augment(args) -> int:
    """Augment the cache ``args.cache`` into ``args.output`` (or, with ``--append``, add those frames to it).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by the ``data augment`` parser of :func:`add_parser`.

    Returns
    -------
    int
        The exit status, 0.
    """
    from backmap_plugin.training.augment import append_to_cache, run_augmentation

    if args.append:  # the frames are often made elsewhere (a GPU machine): adding them runs no MD here
        appended = append_to_cache(args.output, args.cache, workers=args.workers, progress=not args.quiet)
        for path in appended["missing_sources"]:
            print(f"note: source {path} of the last build no longer exists; dropped from {args.cache}")
        _print_build(appended)
        return 0
    summary = run_augmentation(
        args.cache, args.output, args.config, max_structures=args.max_structures, platform=args.platform,
        max_residues=args.max_residues, shard=args.shard, retry_failed=args.retry_failed,
        max_minutes=args.max_minutes, progress=not args.quiet,
    )
    print(summary.summary())
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
        From :func:`backmap_plugin.training.cache.open_cache`.
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


def run_info(args) -> int:
    """Print the summary of the cache ``args.cache`` (:func:`info_lines`).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by the ``data info`` parser of :func:`add_parser`.

    Returns
    -------
    int
        The exit status, 0.
    """
    from backmap_plugin.training.cache import open_cache

    print("\n".join(info_lines(open_cache(args.cache))))
    return 0

"""``backmap train``: a thin layer over :func:`backmap_plugin.training.train.train`."""

from __future__ import annotations

import os

from backmap_plugin.cli import options

__all__ = ["add_parser", "run"]

_EXAMPLE = """example:
  backmap data build ../shared/data/train -o cache/train
  backmap train --config workflows/train/default.json -o runs/v1
  backmap train -o runs/v1 --resume
"""


def add_parser(subparsers) -> None:
    """Add the ``train`` subcommand.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``ArgumentParser.add_subparsers``. The subcommand sets ``func``
        (:func:`run`): call ``args.func(args)`` to run it and get the exit status.
    """
    p = options.add_command(
        subparsers, "train", help="train a backmapping model on a corpus cache",
        description="Train the generative backmapping model on a corpus cache (see `backmap data build`).",
        epilog=_EXAMPLE,
    )
    p.add_argument("--config", help="JSON training config (default: built-in defaults; "
                   "with --resume, the run folder's config.json)")
    options.add_output(p, "run folder: checkpoints, CSV logs, model.pt/model.json")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    options.add_overwrite(p, "start over in a run folder that holds a run (its files are removed)")
    p.add_argument("--steps", type=int, help="override the number of steps")
    p.add_argument("--max-minutes", type=float, help="override the wall-time limit")
    options.add_device(p, override=True)
    options.add_threads(p, default="the config's threads, 2 by default")
    options.add_quiet(p)
    options.add_debug(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Train a model into the folder ``args.output``; print the validation figures and the model's path.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed by the parser of :func:`add_parser`; ``--steps``,
        ``--max-minutes``, ``--device`` and ``--threads`` override the configuration.

    Returns
    -------
    int
        The exit status, 0.
    """
    from backmap_plugin.training.train import load_config, train

    config = args.config
    saved = os.path.join(args.output, "config.json")
    if config is None and args.resume and os.path.exists(saved):  # resume the run as it was configured
        config = saved
    cfg = load_config(config)
    if args.steps is not None:
        cfg.steps = args.steps
    if args.max_minutes is not None:
        cfg.max_minutes = args.max_minutes
    if args.device is not None:
        cfg.device = args.device
    if args.threads is not None:
        cfg.threads = args.threads
    val = train(cfg, args.output, resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    if val:
        line = f"validation: total {val['total']:.3f}"
        if "rmsd" in val:
            line += f", rmsd {val['rmsd']:.2f} A, rotamer accuracy {val['rotamer_acc']:.2f}"
        if "locate_rmsd" in val:
            line += f", locator C-alpha error {val['locate_rmsd']:.2f} A"
        print(line)
    print(f"model: {args.output}/model.pt")
    return 0

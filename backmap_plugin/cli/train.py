"""``backmap train``: a thin layer over :func:`backmap_plugin.training.train.train`."""

from __future__ import annotations

import argparse

_EXAMPLE = """example:
  backmap data build ../shared/data/train -o cache/train
  backmap train --config workflows/train/default.json -o runs/v1
  backmap train --config workflows/train/default.json -o runs/v1 --resume
"""


def add_parser(subparsers) -> None:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train", help="train a backmapping model on a corpus cache",
        description="Train the generative backmapping model on a corpus cache (see `backmap data build`).",
        epilog=_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="JSON training config (default: built-in defaults)")
    p.add_argument("-o", "--output", required=True, help="run folder: checkpoints, CSV logs, model.pt/model.json")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    p.add_argument("--steps", type=int, help="override the number of steps")
    p.add_argument("--max-minutes", type=float, help="override the wall-time limit")
    p.add_argument("--device", help="override the device (auto, cpu, cuda)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def _train(args) -> int:
    from backmap_plugin.training.train import load_config, train

    cfg = load_config(args.config)
    if args.steps is not None:
        cfg.steps = args.steps
    if args.max_minutes is not None:
        cfg.max_minutes = args.max_minutes
    if args.device is not None:
        cfg.device = args.device
    val = train(cfg, args.output, resume=args.resume, progress=not args.quiet)
    if val:
        print(f"validation: total {val['total']:.3f}, rmsd {val['rmsd']:.2f} A, rotamer accuracy {val['rotamer_acc']:.2f}")
    print(f"model: {args.output}/model.pt")
    return 0

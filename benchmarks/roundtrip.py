"""Cartesian -> internal -> Cartesian round trip on every visible_test file.

Runs :func:`roundtrip` of ``tests/test_geometry.py`` (the code path of the
round-trip tests: ``gather_slots`` -> ``context_indices`` /
``extend_with_context`` -> ``cartesian_to_internal`` -> ``build_residues``
from the C-alpha atoms alone) on all frames of every file, in float32 and
float64, and prints one row per file and the overall maxima::

    python benchmarks/roundtrip.py [--data DIR] [--device cpu|cuda]

Columns: residues, frames, atoms compared per frame, atoms left out per
frame (an atom they are built from is missing / segment shorter than three
residues), largest error per dtype (Angstrom), file loading time and the
round-trip time of both dtypes (seconds). Exits with status 1 when a file
fails or an error is above the test tolerance.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _load_test_module():
    spec = importlib.util.spec_from_file_location("_roundtrip_tests", ROOT / "tests" / "test_geometry.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    """Run the benchmark; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "visible_test",
                        help="folder of .pdb.gz files (default: ../shared/data/visible_test)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    args = parser.parse_args(argv)

    tests = _load_test_module()
    files = sorted(args.data.glob("*.pdb.gz"))
    if not files:
        print(f"no .pdb.gz files in {args.data}", file=sys.stderr)
        return 1
    dtypes = (torch.float32, torch.float64)
    header = (f"{'file':<46} {'res':>5} {'frames':>6} {'atoms':>6} {'excl':>7} "
              f"{'max err f32':>11} {'max err f64':>11} {'load s':>7} {'rt s':>6}")
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(header)
    print("-" * len(header))
    worst = {d: 0.0 for d in dtypes}
    total_load = total_rt = 0.0
    n_frames = n_failed = n_checked = n_parents = n_invalid = 0
    t_start = time.perf_counter()
    for path in files:
        t0 = time.perf_counter()
        try:
            topology, xyz = tests.load_structure(path)
            load = time.perf_counter() - t0
            results = {d: tests.roundtrip(topology, xyz, d, device=args.device) for d in dtypes}
        except Exception as exc:  # report and go on with the other files
            n_failed += 1
            print(f"{path.name:<46} FAILED: {type(exc).__name__}: {exc}")
            continue
        rt = results[torch.float64]
        errors = {d: r.max_error for d, r in results.items()}
        seconds = sum(r.seconds for r in results.values())
        for d in dtypes:
            worst[d] = max(worst[d], errors[d])
        total_load += load
        total_rt += seconds
        n_frames += xyz.shape[0]
        n_checked += int(rt.checked.sum())
        n_parents += rt.n_excluded_parents
        n_invalid += rt.n_excluded_invalid
        excluded = f"{rt.n_excluded_parents}/{rt.n_excluded_invalid}"
        print(f"{path.name:<46} {len(rt.records):>5} {xyz.shape[0]:>6} {int(rt.checked.sum()):>6} {excluded:>7} "
              f"{errors[torch.float32]:>11.2e} {errors[torch.float64]:>11.2e} {load:>7.2f} {seconds:>6.2f}")
    print("-" * len(header))
    ok = n_failed == 0 and all(worst[d] < tests.TOLERANCE[d] for d in dtypes)
    print(f"atoms per frame, summed over files: {n_checked} compared, {n_parents} left out for a missing "
          f"parent, {n_invalid} in segments shorter than 3 residues")
    print(f"{len(files)} files ({n_failed} failed), {n_frames} frames: "
          f"max error f32 {worst[torch.float32]:.2e} A (tolerance {tests.TOLERANCE[torch.float32]:g}), "
          f"f64 {worst[torch.float64]:.2e} A (tolerance {tests.TOLERANCE[torch.float64]:g}); "
          f"load {total_load:.1f} s, round trip {total_rt:.1f} s, total {time.perf_counter() - t_start:.1f} s"
          f" -> {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

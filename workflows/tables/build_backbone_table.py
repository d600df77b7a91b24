"""Derive the peptide-plane table of :mod:`backmap_plugin.build.backbone` from the training corpus.

For every trans peptide of every training structure (first frame of each
file; up to ``--frames`` frames of ensembles) the plane rotation about the
CA-CA axis is measured and accumulated, as a circular mean, in the bin of its
local trace shape. Each peptide is also entered as if it lacked CA(i-1),
CA(i+2) or both, which fills the bins used at segment ends. Sparse bins fall
back to the mean over the torsion, then over everything known. Also stored:
the circular mean psi of segment-first residues and phi / psi of
segment-last residues.

Train data only (``../shared/data/train``); never the test set.

Usage::

    python workflows/tables/build_backbone_table.py --data ../shared/data/train \
        -o backmap_plugin/build/tables/backbone.npz
"""

from __future__ import annotations

import argparse
import glob
import os
import warnings

import mdtraj as md
import numpy as np
import torch
from tqdm import tqdm

from backmap_plugin.build import backbone as bb
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import topology as tp

MIN_COUNT = 8


def _measure(path: str, frames: int):
    traj = md.load(path)
    traj = traj[:: max(1, traj.n_frames // frames)][:frames]
    records, _ = tp.read_residues(traj.topology, path)
    slots, present = tp.gather_slots(traj.xyz * 10.0, records)
    backbone = present[:, [chem.SLOT_N, chem.SLOT_CA, chem.SLOT_C, chem.SLOT_O]].all(1)
    keep = np.nonzero(backbone)[0]
    if len(keep) < 3:
        return None
    records = [records[i] for i in keep]
    slots = torch.as_tensor(slots[:, keep], dtype=torch.float64)
    ca = slots[..., chem.SLOT_CA, :]
    top = tp.protein_topology(records, ca[0].numpy())
    # bonded CA(i)-C(i)-N(i+1) only: a break shows as a long C-N distance
    cn = torch.linalg.norm(slots[0, 1:, chem.SLOT_N] - slots[0, :-1, chem.SLOT_C], dim=-1).numpy()
    segment = top.segment.copy()
    segment[1:] += np.cumsum(cn > 2.0)
    layout = tp.backbone_layout(segment)
    first, has_prev, has_next = layout.first, layout.has_prev, layout.has_next
    if len(first) == 0:
        return None
    ip = torch.as_tensor(first)
    trans = (torch.linalg.norm(ca[..., ip + 1, :] - ca[..., ip, :], dim=-1) > bb.MIN_PEPTIDE_LENGTH)
    c = slots[..., chem.SLOT_C, :]
    out = []
    for hp, hn in ((has_prev, has_next), (False, has_next), (has_prev, False), (False, False)):
        hp = np.broadcast_to(hp, first.shape) & has_prev
        hn = np.broadcast_to(hn, first.shape) & has_next
        frame, key = bb.peptide_frames(ca, first, hp, hn), bb.peptide_keys(ca, first, hp, hn)
        angle = bb.plane_angle(c, ca, first, frame)
        out.append((key[trans].numpy(), angle[trans].numpy()))
    # terminal torsions of segments with at least two residues
    dofs = bb.backbone_dofs(slots, layout)
    psi_first = dofs["psi_first"][..., layout.starts != layout.ends]
    keep_end = layout.ends != layout.starts
    phi_last, psi_last = dofs["phi_last"][..., keep_end], dofs["psi_last"][..., keep_end]
    return out, psi_first.ravel().numpy(), phi_last.ravel().numpy(), psi_last.ravel().numpy()


def _circular_mean(angles: np.ndarray) -> float:
    return float(np.angle(np.exp(1j * angles).mean()))


def build(files: list[str], frames: int) -> dict:
    """Accumulate the table over ``files``; returns the arrays to save."""
    sums = np.zeros(bb.N_KEYS, complex)
    counts = np.zeros(bb.N_KEYS)
    psi_first, phi_last, psi_last = [], [], []
    failed = 0
    for path in tqdm(files, desc="backbone table", unit="file"):
        try:
            result = _measure(path, frames)
        except Exception:  # unreadable file: counted, not fatal
            failed += 1
            continue
        if result is None:
            continue
        for key, angle in result[0]:
            np.add.at(sums, key, np.exp(1j * angle))
            np.add.at(counts, key, 1)
        psi_first.append(result[1])
        phi_last.append(result[2])
        psi_last.append(result[3])
    shape = (bb.THETA_BINS + 1, bb.THETA_BINS + 1, bb.TORSION_BINS + 1)
    s3, c3 = sums.reshape(shape), counts.reshape(shape)
    angle = np.angle(s3)
    # fall back: marginal over the torsion, then over the second angle, then all
    over_t = np.angle(s3.sum(2, keepdims=True))
    n_t = c3.sum(2, keepdims=True)
    over_t2 = np.angle(s3.sum((1, 2), keepdims=True))
    overall = np.angle(s3.sum())
    fallback = np.where(n_t >= MIN_COUNT, over_t, np.where(c3.sum((1, 2), keepdims=True) >= MIN_COUNT, over_t2, overall))
    angle = np.where(c3 >= MIN_COUNT, angle, np.broadcast_to(fallback, shape))
    print(f"{int(counts.sum())} peptide entries, {int((counts >= MIN_COUNT).sum())} filled bins, {failed} files failed")
    return {
        "angle": angle.reshape(-1).astype(np.float32),
        "count": counts.astype(np.int32),
        "psi_first": np.float32(_circular_mean(np.concatenate(psi_first))),
        "phi_last": np.float32(_circular_mean(np.concatenate(phi_last))),
        "psi_last": np.float32(_circular_mean(np.concatenate(psi_last))),
        "n_files": np.int32(len(files) - failed),
    }


def main(argv=None):
    """Command-line entry point."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join(root, "..", "shared", "data", "train"))
    parser.add_argument("--frames", type=int, default=5, help="frames per ensemble file")
    parser.add_argument("--max-files", type=int, default=None)
    parser.add_argument("-o", "--output", default=os.path.join(root, "backmap_plugin", "tables", "backbone.npz"))
    args = parser.parse_args(argv)
    files = sorted(glob.glob(os.path.join(args.data, "*.pdb.gz")))[: args.max_files]
    warnings.filterwarnings("ignore", category=UserWarning)
    table = build(files, args.frames)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    np.savez_compressed(args.output, **table)
    print(
        f"wrote {args.output}: psi_first {np.degrees(table['psi_first']):.1f}, "
        f"phi_last {np.degrees(table['phi_last']):.1f}, psi_last {np.degrees(table['psi_last']):.1f}"
    )


if __name__ == "__main__":
    main()

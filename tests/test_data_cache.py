"""Tests for the corpus cache (backmap_plugin.training.cache / data.cli) on real structures."""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
from collections import defaultdict

import numpy as np
import torch

from backmap_plugin.cli.command import main as backmap_main
from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import geometry
from backmap_plugin.training import cache as dc


def _build(sources, cache_dir, **kwargs):
    kwargs.setdefault("workers", 1)
    return dc.build_cache([str(s) for s in sources], cache_dir, **kwargs)


def _report(cache_dir) -> dict:
    with open(os.path.join(cache_dir, "report.csv"), newline="") as handle:
        return {row["entry_id"]: row for row in csv.DictReader(handle)}


def _entry(cache, entry_id):
    (entry,) = [e for e in cache.entries if e.entry_id == entry_id]
    return entry, cache.load(entry)


def _edit_pdb(src, dst, keep) -> None:
    """Copy a gzipped PDB keeping the lines for which ``keep(line)`` is true (or the line it returns)."""
    with gzip.open(src, "rt") as handle:
        lines = handle.readlines()
    out = []
    for line in lines:
        result = keep(line)
        if result is True:
            out.append(line)
        elif isinstance(result, str):
            out.append(result)
    with gzip.open(dst, "wt") as handle:
        handle.writelines(out)


def _with_remark(src, dst, text) -> None:
    """Copy of a gzipped PDB with a REMARK line in front."""
    with gzip.open(src, "rt") as handle:
        body = handle.read()
    with gzip.open(dst, "wt") as handle:
        handle.write(f"REMARK 99 {text}\n{body}")


def _is_atom(line, res_seq=None, names=None) -> bool:
    if not line.startswith(("ATOM", "HETATM")):
        return False
    if res_seq is not None and int(line[22:26]) != res_seq:
        return False
    return names is None or line[12:16].strip() in names


def _names(arrays) -> list[str]:
    return [chem.RESIDUE_NAMES[t] for t in arrays.res_type]


# --------------------------------------------------------------------------- one entry


def test_fixture_entry_arrays(fixture_pdb, tmp_path):
    summary = _build([fixture_pdb], tmp_path / "cache")
    assert summary["entries"] == 1 and summary["built"] == 1 and summary["skipped"] == 0
    cache = dc.open_cache(tmp_path / "cache")
    entry, arrays = _entry(cache, "1l2y")
    assert (entry.n_frames, entry.n_residues) == (38, 20)
    assert isinstance(arrays.xyz, np.memmap)
    assert arrays.xyz.shape == arrays.ic.shape == (38, 20, chem.N_SLOTS, 3)
    assert arrays.xyz.dtype == arrays.ic.dtype == np.float32
    assert arrays.beads.shape == (38, 20, 3)
    assert arrays.present.shape == (20, chem.N_SLOTS)
    assert "".join(chem.THREE_TO_ONE[n] for n in _names(arrays)) == "NLYIQWLKDGGPSSGRPPPS"
    np.testing.assert_array_equal(arrays.res_seq, np.arange(1, 21))
    np.testing.assert_array_equal(arrays.segment, 0)
    np.testing.assert_array_equal(arrays.chain, 0)
    assert arrays.ic_valid.all()
    # ca mapping: beads are the C-alpha atoms
    np.testing.assert_array_equal(arrays.beads, arrays.xyz[:, :, chem.SLOT_CA])
    # every heavy atom of 1L2Y is in the file, OXT on the last residue only
    expected = chem.SLOT_EXISTS[arrays.res_type.astype(int)].copy()
    expected[:-1, chem.SLOT_OXT] = False
    np.testing.assert_array_equal(arrays.present, expected)
    row = _report(tmp_path / "cache")["1l2y"]
    assert (row["status"], row["residues_kept"], row["residues_masked"], row["frames"]) == ("ok", "20", "0", "38")


def test_max_frames_evenly_spaced(fixture_pdb, tmp_path):
    _build([fixture_pdb], tmp_path / "all")
    _build([fixture_pdb], tmp_path / "few", max_frames=5)
    _, every = _entry(dc.open_cache(tmp_path / "all"), "1l2y")
    entry, few = _entry(dc.open_cache(tmp_path / "few"), "1l2y")
    assert entry.n_frames == 5
    np.testing.assert_array_equal(few.xyz, every.xyz[[0, 9, 18, 28, 37]])


def _rebuild_error(arrays) -> float:
    """Max distance between stored atoms and atoms rebuilt from the stored ICs (ic_valid residues)."""
    res_type = torch.tensor(np.array(arrays.res_type), dtype=torch.long)
    refs, _ = geometry.context_indices(np.asarray(arrays.segment))
    xyz = torch.tensor(np.array(arrays.xyz), dtype=torch.float64)
    ic = torch.tensor(np.array(arrays.ic), dtype=torch.float64)
    ext = geometry.extend_with_context(xyz, refs)
    built = geometry.build_residues(ext, ic, res_type)[..., : chem.N_SLOTS, :]
    mask = torch.as_tensor(np.asarray(arrays.present) & np.asarray(arrays.ic_valid)[:, None])
    return float((built - xyz).norm(dim=-1)[:, mask].max())


def test_internal_coordinates_rebuild_xyz(fixture_pdb, tmp_path):
    _build([fixture_pdb], tmp_path / "cache")
    _, arrays = _entry(dc.open_cache(tmp_path / "cache"), "1l2y")
    assert _rebuild_error(arrays) < 1e-3


# --------------------------------------------------------------------------- cleaning


def test_missing_atoms_masked_and_incomplete_residue_dropped(fixture_pdb, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    trp_side = {"CG", "CD1", "CD2", "NE1", "CE2", "CE3", "CZ2", "CZ3", "CH2"}
    _edit_pdb(fixture_pdb, src / "edited.pdb.gz", lambda line: not (
        _is_atom(line, 6, trp_side) or _is_atom(line, 8, {"CG"}) or _is_atom(line, 10, {"CA"})))
    _build([src], tmp_path / "cache")
    _, arrays = _entry(dc.open_cache(tmp_path / "cache"), "edited")
    # GLY 10 (no CA) dropped; the chain is split there
    np.testing.assert_array_equal(arrays.res_seq, [r for r in range(1, 21) if r != 10])
    np.testing.assert_array_equal(arrays.segment, [0] * 9 + [1] * 10)
    # TRP 6 kept with its side chain masked, not rebuilt
    trp = int(np.flatnonzero(arrays.res_seq == 6)[0])
    spec = chem.RESIDUES["TRP"]
    missing = [spec.atoms.index(a) for a in trp_side]
    assert not arrays.present[trp, missing].any()
    assert arrays.present[trp, :5].all()
    assert not np.asarray(arrays.xyz[:, trp, missing]).any()
    # LYS 8 without CG: CD, CE, NZ kept but their IC chain is broken
    lys = int(np.flatnonzero(arrays.res_seq == 8)[0])
    assert arrays.present[lys].sum() == 8
    np.testing.assert_array_equal(arrays.ic_valid, np.arange(19) != lys)
    row = _report(tmp_path / "cache")["edited"]
    counts = (row["status"], row["residues_kept"], row["residues_masked"], row["residues_dropped"])
    assert counts == ("ok", "19", "2", "1")
    assert "without N, CA or C" in row["notes"]
    # ICs of the partial entry still rebuild its valid residues
    assert _rebuild_error(arrays) < 1e-3


def test_bad_files_reported_and_build_goes_on(fixture_pdb, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(fixture_pdb, src / "good.pdb.gz")
    (src / "garbage.pdb").write_text("this is not a PDB file\n")
    _edit_pdb(fixture_pdb, src / "short.pdb.gz", lambda line: not line.startswith("ATOM") or int(line[22:26]) <= 6)
    _edit_pdb(fixture_pdb, src / "duplicate.pdb.gz",
              lambda line: line + line if _is_atom(line, 3, {"CB"}) else True)
    # an unknown amino acid with a CA: that residue is dropped, not the file
    _edit_pdb(fixture_pdb, src / "unknown.pdb.gz",
              lambda line: line[:17] + "BP5" + line[20:] if _is_atom(line, 15) else True)
    summary = _build([src], tmp_path / "cache", workers=2)  # the process pool, too
    assert (summary["files"], summary["entries"], summary["skipped"]) == (5, 2, 3)
    report = _report(tmp_path / "cache")
    assert report["good"]["status"] == "ok"
    assert report["garbage"]["status"] == "skipped" and report["garbage"]["reason"].startswith("parse error")
    assert report["short"]["reason"].startswith("too few residues: 6")
    assert report["duplicate"]["reason"].startswith("duplicate atoms")
    unknown = report["unknown"]
    assert (unknown["status"], unknown["residues_kept"], unknown["residues_dropped"]) == ("ok", "19", "1")
    assert "BP5" in unknown["notes"]
    _, arrays = _entry(dc.open_cache(tmp_path / "cache"), "unknown")
    np.testing.assert_array_equal(arrays.segment, [0] * 14 + [1] * 5)
    assert sorted(e.entry_id for e in dc.open_cache(tmp_path / "cache").entries) == ["good", "unknown"]


def test_name_normalisation_on_corpus_files(corpus, tmp_path):
    names = ["pymol__helix_amber", "biopython__1A8O", "mdatests__YiiP_lipids_xtc"]
    for name in names:
        shutil.copy(corpus / "train" / f"{name}.pdb.gz", tmp_path)
    _build([tmp_path / f"{n}.pdb.gz" for n in names], tmp_path / "cache")
    cache = dc.open_cache(tmp_path / "cache")
    report = _report(tmp_path / "cache")
    assert all(report[n]["status"] == "ok" and report[n]["residues_masked"] == "0" for n in names)

    # Amber HID/HIE/HIP -> HIS, CYX -> CYS, all atoms found
    _, amber = _entry(cache, "pymol__helix_amber")
    assert "".join(chem.THREE_TO_ONE[n] for n in _names(amber)) == "ARDNCEQGHHHILMKFPSTWVYC"
    # MSE -> MET with SE read as SD
    _, mse = _entry(cache, "biopython__1A8O")
    met = np.array(_names(mse)) == "MET"
    assert met.sum() >= 1 and mse.present[met, chem.RESIDUES["MET"].atoms.index("SD")].all()
    # CHARMM: ILE CD -> CD1, OT1/OT2 -> O/OXT
    _, charmm = _entry(cache, "mdatests__YiiP_lipids_xtc")
    ile = np.array(_names(charmm)) == "ILE"
    assert ile.sum() > 10 and charmm.present[ile, chem.RESIDUES["ILE"].atoms.index("CD1")].all()
    last = np.flatnonzero(np.diff(charmm.chain, append=-1) != 0)
    assert charmm.present[last][:, [chem.SLOT_O, chem.SLOT_OXT]].all()
    for arrays in (amber, mse, charmm):
        assert _rebuild_error(arrays) < 1e-3


# --------------------------------------------------------------------------- clusters, splits


def _small_train_sample(corpus, n_files=30) -> list[str]:
    """~30 small train entries including a few multi-entry clusters."""
    with open(corpus / "manifest.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "train"]
    size = {r["entry_id"]: os.path.getsize(corpus / "train" / f"{r['entry_id']}.pdb.gz") for r in rows}
    clusters = defaultdict(list)
    for r in rows:
        clusters[r["cluster30"]].append(r["entry_id"])
    multi = sorted((c for c in clusters.values() if 2 <= len(c) <= 4), key=lambda c: sum(size[e] for e in c))
    chosen = [e for c in multi[:4] for e in c]
    singles = sorted((c[0] for c in clusters.values() if len(c) == 1), key=size.get)
    return chosen + singles[: n_files - len(chosen)]


def test_cluster_split_from_manifest(corpus, tmp_path):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    shutil.copy(corpus / "manifest.csv", data)
    sample = _small_train_sample(corpus)
    for name in sample:
        shutil.copy(corpus / "train" / f"{name}.pdb.gz", data / "train")
    summary = _build([data / "train"], tmp_path / "cache", val_fraction=0.3)
    assert summary["entries"] == len(sample) == 30
    cache = dc.open_cache(tmp_path / "cache")
    with open(corpus / "manifest.csv", newline="") as handle:
        manifest = {r["entry_id"]: r for r in csv.DictReader(handle)}
    sides = defaultdict(set)
    for e in cache.entries:
        assert e.cluster30 == manifest[e.entry_id]["cluster30"] and e.kind == manifest[e.entry_id]["kind"]
        sides[e.cluster30].add(e.split)
    assert all(len(s) == 1 for s in sides.values())  # no cluster on both sides
    assert {e.split for e in cache.entries} == {"train", "val"}
    assert any(len([e for e in cache.entries if e.cluster30 == c]) > 1 for c in sides)
    # the split is a function of the cluster id alone
    sizes = {c: sum(e.cluster30 == c for e in cache.entries) for c in sides}
    for e in cache.entries:
        big = sizes[e.cluster30] > dc.BIG_CLUSTER_SHARE * len(cache.entries)
        assert e.split == ("train" if big else dc.cluster_split(e.cluster30, 0.3))
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert set(index["entries"][0]) == {
        "entry_id", "source", "hash", "kind", "cluster30", "split", "n_frames", "n_residues", "dir"}


def test_visible_test_entries_are_test(corpus, tmp_path):
    data = tmp_path / "data"
    (data / "visible_test").mkdir(parents=True)
    shutil.copy(corpus / "manifest.csv", data)
    files = sorted((corpus / "visible_test").glob("*.pdb.gz"), key=os.path.getsize)[:2]
    for f in files:
        shutil.copy(f, data / "visible_test")
    _build([data / "visible_test"], tmp_path / "cache")
    assert [e.split for e in dc.open_cache(tmp_path / "cache").entries] == ["test", "test"]


def test_clusters_without_manifest(fixture_pdb, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(fixture_pdb, src / "a.pdb.gz")
    shutil.copy(fixture_pdb, src / "b.pdb.gz")  # same sequence
    _edit_pdb(fixture_pdb, src / "c.pdb.gz", lambda line: not line.startswith("ATOM") or int(line[22:26]) <= 12)
    _build([src], tmp_path / "cache")
    entries = {e.entry_id: e for e in dc.open_cache(tmp_path / "cache").entries}
    assert entries["a"].cluster30 == entries["b"].cluster30 == entries["c"].cluster30
    assert entries["a"].cluster30.startswith("auto-") and entries["a"].kind == "unknown"
    assert entries["a"].dir == entries["b"].dir  # same bytes, same entry folder
    other = dc.sequence_clusters({"x": ["NLYIQWLKDGGPSSGRPPPS"], "y": ["MKVLAAGIVGLLLAAGCSSS"]})
    assert other["x"] != other["y"]


# --------------------------------------------------------------------------- incremental builds, CLI


def test_rerun_is_noop_and_changed_file_rebuilt_alone(fixture_pdb, tmp_path, monkeypatch, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b", "c"):  # three files with different bytes
        _with_remark(fixture_pdb, src / f"{name}.pdb.gz", name)
    cache_dir = tmp_path / "cache"
    assert backmap_main(["data", "build", str(src), "-o", str(cache_dir), "--workers", "1", "--quiet"]) == 0
    first = json.loads((cache_dir / "index.json").read_text())
    capsys.readouterr()

    # second run: nothing is parsed (process_file would fail), index unchanged
    def no_parse(*args, **kwargs):
        raise AssertionError("parsed again")

    monkeypatch.setattr(dc, "process_file", no_parse)
    os.utime(src / "a.pdb.gz")  # a new mtime alone changes nothing
    assert backmap_main(["data", "build", str(src), "-o", str(cache_dir), "--workers", "1", "--quiet"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert json.loads((cache_dir / "index.json").read_text()) == first

    # changing one file rebuilds that file alone; its old folder goes
    monkeypatch.undo()
    _with_remark(fixture_pdb, src / "b.pdb.gz", "changed")
    summary = _build([src], cache_dir)
    assert (summary["built"], summary["reused"], summary["removed"]) == (1, 2, 1)
    second = {e["entry_id"]: e for e in json.loads((cache_dir / "index.json").read_text())["entries"]}
    old = {e["entry_id"]: e for e in first["entries"]}
    assert second["a"] == old["a"] and second["c"] == old["c"] and second["b"]["hash"] != old["b"]["hash"]
    assert len(list((cache_dir / "entries").iterdir())) == 3

    # a source that disappears leaves the index
    (src / "c.pdb.gz").unlink()
    summary = _build([src], cache_dir)
    assert summary["entries"] == 2 and summary["removed"] == 1 and summary["built"] == 0
    assert sorted(_report(cache_dir)) == ["a", "b"]


def test_info_output(fixture_pdb, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(fixture_pdb, src / "biotite__1l2y.pdb.gz")
    (src / "broken.pdb").write_text("garbage\n")
    _build([src], tmp_path / "cache")
    assert backmap_main(["data", "info", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "entries   1 (files in report: 2, skipped: 1)" in out
    assert "frames    38" in out
    assert "residues  kept 20, masked 0, dropped 0" in out
    assert "clusters  1" in out
    assert "biotite" in out and "unknown" in out and "parse error" in out


def test_cli_parser_group(tmp_path):
    import argparse

    from backmap_plugin.cli.data import add_parser

    parser = argparse.ArgumentParser(prog="backmap")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "build", "x", "y", "-o", str(tmp_path), "--max-frames", "7", "--workers", "3"])
    assert (args.sources, args.max_frames, args.workers, args.mapping) == (["x", "y"], 7, 3, "ca")
    assert callable(args.func)
    assert callable(parser.parse_args(["data", "info", str(tmp_path)]).func)


def test_missing_source_is_an_error(tmp_path):
    assert backmap_main(["data", "build", str(tmp_path / "nope"), "-o", str(tmp_path / "cache"), "--quiet"]) == 2

"""Tests of ``backmap data build`` / ``data augment --append`` messages and rules (small corpora, manifests,
file kinds in folders, skipped files, missing folders)."""

from __future__ import annotations

import csv
import gzip
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from backmap_plugin.cli.command import main as backmap_main
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.training import cache as dc

DATA = Path(__file__).resolve().parent / "data"
#: Three small proteins of different sequences: three clusters without a manifest.
THREE_PROTEINS = ("1l2y.pdb.gz", "2fjg_cis_pro_40-58.pdb.gz", "tia1_calvados3_frame_aa.pdb.gz")


def _folder(tmp_path, names=THREE_PROTEINS, name="src") -> Path:
    src = tmp_path / name
    src.mkdir(parents=True)
    for file in names:
        shutil.copy(DATA / file, src / file)
    return src


def _build_cli(capsys, *args) -> tuple[int, str, str]:
    rc = backmap_main(["data", "build", *map(str, args), "--workers", "1", "--quiet"])
    out, err = capsys.readouterr()
    return rc, out, err


def _report(cache_dir) -> dict:
    with open(Path(cache_dir) / dc.REPORT_FILE, newline="") as handle:
        return {row["entry_id"]: row for row in csv.DictReader(handle)}


# --------------------------------------------------------------------------- validation split of small corpora


def test_small_corpus_gets_a_validation_cluster(tmp_path, capsys):
    rc, out, err = _build_cli(capsys, _folder(tmp_path), "-o", tmp_path / "cache")
    assert rc == 0
    splits = Counter(e.split for e in dc.open_cache(tmp_path / "cache").entries)
    assert splits["val"] >= 1 and splits["train"] >= 1, out
    # deterministic: the same split again; none drawn at 0.005, so the rule holds one out, with a note
    again = dc.build_cache([tmp_path / "src"], tmp_path / "again", workers=1)
    assert again["splits"] == dict(splits)
    rc, out, err = _build_cli(capsys, tmp_path / "src", "-o", tmp_path / "few", "--val-fraction", "0.005")
    assert rc == 0 and "(train 2, val 1)" in out and "held out for validation" in err
    none = dc.build_cache([tmp_path / "src"], tmp_path / "none", workers=1, val_fraction=0.0)
    assert none["splits"] == {"train": 3} and none["notes"] == []


def test_split_rule_small_and_large_corpora():
    singles = {f"c{i}": 1 for i in range(8)}
    splits, held_out = dc.split_clusters(singles, 8, 0.9)
    assert held_out is None and Counter(splits.values())["val"] >= 5  # singletons are drawn, not "big"
    splits, held_out = dc.split_clusters(singles, 8, 0.01)
    assert held_out is not None and list(splits.values()).count("val") == 1 and splits[held_out] == "val"
    # two families of several entries: still one held out (the smaller)
    splits, held_out = dc.split_clusters({"a": 5, "b": 3}, 8, 0.1)
    assert held_out == "b" and splits == {"a": "train", "b": "val"}
    assert dc.split_clusters({"a": 5}, 5, 0.5) == ({"a": "train"}, None)
    # a single cluster, or every cluster drawn, still trains
    assert dc.split_clusters({"a": 1}, 1, 0.99) == ({"a": "train"}, None)
    splits, _ = dc.split_clusters({"a": 1, "b": 2, "c": 1}, 4, 0.999999)
    assert splits == {"a": "val", "b": "train", "c": "val"}
    assert dc.split_clusters({"a": 1, "b": 1}, 2, 0.0)[0] == {"a": "train", "b": "train"}
    # from 20 entries on, the big-cluster rule is the old one and a drawn val split is kept as drawn
    sizes = {f"c{i}": 1 for i in range(40)} | {"fam": 5}
    drawn = {c: "train" if n > dc.BIG_CLUSTER_SHARE * 45 else dc.cluster_split(c, 0.3) for c, n in sizes.items()}
    assert "val" in drawn.values() and dc.split_clusters(sizes, 45, 0.3) == (drawn, None)


def test_single_cluster_says_why_there_is_no_validation(fixture_pdb, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(fixture_pdb, src / "a.pdb.gz")
    rc, out, err = _build_cli(capsys, src, "-o", tmp_path / "cache", "--val-fraction", "0.5")
    assert rc == 0 and "(train 1)" in out
    assert "no validation split" in err and "single sequence cluster" in err


# --------------------------------------------------------------------------- manifests


def test_unrelated_manifest_is_ignored_with_a_note(fixture_pdb, tmp_path, capsys):
    data = tmp_path / "data"
    (data / "sims").mkdir(parents=True)
    shutil.copy(fixture_pdb, data / "sims" / "trpcage.pdb.gz")
    (data / "sims" / "manifest.csv").write_text("file,temperature\ntrpcage,300\n")  # a user's own table
    (data / "manifest.csv").write_text("entry_id,cluster30,kind,split\ntrpcage,c0042,nmr,train\n")
    rc, out, err = _build_cli(capsys, data / "sims", "-o", tmp_path / "cache")
    assert rc == 0, err
    assert f"ignored {data / 'sims' / 'manifest.csv'}: it has no entry_id column" in err
    (entry,) = dc.open_cache(tmp_path / "cache").entries
    assert (entry.cluster30, entry.kind) == ("c0042", "nmr")  # the build manifest further up is used


def test_help_documents_manifest_and_split_rule(capsys):
    with pytest.raises(SystemExit):
        backmap_main(["data", "build", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "manifest.csv in its folder or a parent folder" in text and "entry_id column" in text
    assert "5% of the entries always trains" in text and "smallest cluster is held out" in text
    assert "--top" not in text


# --------------------------------------------------------------------------- file kinds


def _write_mmcif(src_pdb, dst) -> None:
    import openmm.app as app

    with gzip.open(src_pdb, "rt") as handle:
        pdb = app.PDBFile(handle)
    with open(dst, "w") as handle:
        app.PDBxFile.writeFile(pdb.topology, pdb.positions, handle)


def test_folder_formats_and_trajectories(fixture_pdb, tmp_path, capsys):
    src = _folder(tmp_path, THREE_PROTEINS[1:])
    _write_mmcif(fixture_pdb, src / "trpcage.mmcif")
    with gzip.open(fixture_pdb, "rb") as handle:
        (src / "pdb1l2y.ent").write_bytes(handle.read())
    (src / "run.xtc").write_bytes(b"\0" * 64)
    (src / "run.dcd").write_bytes(b"\0" * 64)
    rc, out, err = _build_cli(capsys, src, "-o", tmp_path / "cache")
    assert rc == 0, err
    assert "4 files" in out and "0 skipped" in out
    assert {"trpcage", "pdb1l2y"} <= {e.entry_id for e in dc.open_cache(tmp_path / "cache").entries}  # .ent: PDB
    assert "2 trajectory file(s) in the source folders not read" in err and "multi-model PDB" in err
    assert ".ent" not in err
    assert "--top" not in err


def test_named_trajectory_gets_advice_that_works(fixture_pdb, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(fixture_pdb, src / "a.pdb.gz")
    (tmp_path / "run.xtc").write_bytes(b"\0" * 64)
    summary = dc.build_cache([src, tmp_path / "run.xtc"], tmp_path / "cache", workers=1)
    assert summary["skipped"] == 1
    reason = _report(tmp_path / "cache")["run"]["reason"]
    assert reason.startswith("trajectory without topology") and "multi-model PDB" in reason
    assert "--top" not in reason


# --------------------------------------------------------------------------- skipped files, empty builds


def test_summary_names_the_report_and_no_entries_fails(fixture_pdb, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(fixture_pdb, src / "good.pdb.gz")
    (src / "garbage.pdb").write_text("not a PDB file\n")
    rc, out, err = _build_cli(capsys, src, "-o", tmp_path / "cache")
    assert rc == 0 and f"1 skipped (reasons in {tmp_path / 'cache' / 'report.csv'})" in out

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "garbage.pdb").write_text("not a PDB file\n")
    rc, out, err = _build_cli(capsys, bad, "-o", tmp_path / "badcache")
    assert rc == 2 and out == "" and not (tmp_path / "badcache").exists()
    assert "no usable structure" in err and "(files by reason: parse error: 1)" in err
    assert "garbage.pdb: parse error" in err and len(err.strip().splitlines()) == 1

    (tmp_path / "empty").mkdir()
    rc, out, err = _build_cli(capsys, tmp_path / "empty", "-o", tmp_path / "emptycache")
    assert rc == 2 and "no structure file found" in err and str(tmp_path / "empty") in err
    with pytest.raises(BackmapInputError, match="no structure file found"):
        dc.build_cache([tmp_path / "empty"], tmp_path / "emptycache", workers=1)


# --------------------------------------------------------------------------- augment --append


def test_parsing_processes_end_on_sigterm_as_by_default():
    """The pool's processes take the default SIGTERM (the pool's end), not the ``backmap`` command's handler that
    ``fork`` gave them: it raised in each idle process, and a build printed a traceback per process (at random)."""
    import torch

    threads = torch.get_num_threads()
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # (as the command's)
    try:
        dc._init_worker()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)
        torch.set_num_threads(threads)


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_a_build_that_keeps_nothing_leaves_no_folder_behind(fixture_pdb, tmp_path, capfd):
    """Every file skipped: the build fails (status 2) and writes nothing: the folders it created are removed (it
    left a cache folder of no structure: an empty index, a report, the skipped files' entries), a cache that was
    there is left as it was (its index was emptied and its entries removed); the message counts the reasons, in
    one line (no parsing process's traceback: test_parsing_processes_end_on_sigterm_as_by_default)."""
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("one.pdb", "two.pdb"):
        (bad / name).write_text("not a PDB file\n")
    build = ["data", "build", str(bad), "--workers", "2", "--quiet", "-o"]
    done = subprocess.run([sys.executable, "-m", "backmap_plugin.cli", *build, str(tmp_path / "new" / "cache")],
                          capture_output=True, text=True)
    err = done.stderr
    assert done.returncode == 2 and not (tmp_path / "new").exists()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith(f"backmap: error: {tmp_path / 'new' / 'cache'}: no usable structure: all 2 file(s) were "
                          "skipped (files by reason: parse error: 2), e.g. ")
    assert err.strip().endswith(f"nothing was cached: {tmp_path / 'new'}, which this build created, was removed")
    (tmp_path / "empty").mkdir()
    assert backmap_main([*build, str(tmp_path / "empty")]) == 2
    assert "nothing was cached: " in capfd.readouterr().err and _tree(tmp_path / "empty") == {}
    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(fixture_pdb, good / "good.pdb.gz")
    assert backmap_main(["data", "build", str(good), "--workers", "1", "--quiet", "-o", str(tmp_path / "cache")]) == 0
    before = _tree(tmp_path / "cache")
    assert backmap_main([*build, str(tmp_path / "cache")]) == 2
    assert capfd.readouterr().err.strip().endswith(f"nothing was cached: {tmp_path / 'cache'} is left as it was")
    assert _tree(tmp_path / "cache") == before and len(dc.open_cache(tmp_path / "cache")) == 1


def test_append_from_a_missing_folder_names_it(fixture_pdb, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(fixture_pdb, src / "a.pdb.gz")
    dc.build_cache([src], tmp_path / "cache", workers=1)
    missing = tmp_path / "aug" / "none"
    rc = backmap_main(["data", "augment", str(tmp_path / "cache"), "--config", "unused.json", "-o", str(missing),
                       "--append", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{missing}: no such folder" in err and ".partial" not in err
    (tmp_path / "aug" / "empty").mkdir(parents=True)
    rc = backmap_main(["data", "augment", str(tmp_path / "cache"), "--config", "unused.json",
                       "-o", str(tmp_path / "aug" / "empty"), "--append", "--quiet"])
    assert rc == 2 and "not an augmentation folder (no frames/)" in capsys.readouterr().err
    assert not (tmp_path / "aug" / "empty" / "manifest.csv").exists()

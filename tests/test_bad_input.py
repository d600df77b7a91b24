"""Input that cannot be backmapped: one clear message naming file / frame / chain / residue.

Each case builds a small bad input from the real 1L2Y fixture, checks the
:class:`BackmapInputError` message, and that nothing was written under the
output name. The CLI turns these errors into one line and exit status 2.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
from conftest import FakeSimulation, FakeState

from backmap_plugin import api
from backmap_plugin.api import CutShortWarning, backmap
from backmap_plugin.cli.command import main
from backmap_plugin.core.errors import BackmapInputError


@pytest.fixture(scope="module")
def aa(fixture_pdb):
    """The all-atom 1L2Y ensemble (38 frames)."""
    return md.load(str(fixture_pdb))


@pytest.fixture(scope="module")
def ca(aa):
    """CA-only trace of 1L2Y (chain A, residues ASN 1 ... SER 20)."""
    return aa.atom_slice(aa.topology.select("name CA"))


@pytest.fixture(scope="module")
def good(ca, tmp_path_factory):
    """A valid CA-only PDB (frame 0) and DCD (38 frames)."""
    d = tmp_path_factory.mktemp("good")
    pdb, dcd = d / "ca.pdb", d / "ca.dcd"
    ca[0].save_pdb(str(pdb))
    ca.save_dcd(str(dcd))
    return pdb, dcd


def fails(tmp_path, input, *, names=(), top=None, **kwargs) -> str:
    """Run backmap expecting BackmapInputError; check the message names ``names``; return it.

    Also checks that nothing was written under the output name.
    """
    out = tmp_path / "out.pdb"
    with pytest.raises(BackmapInputError) as info:
        backmap(str(input), str(out), top=None if top is None else str(top), progress=False, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        if isinstance(name, re.Pattern):
            assert name.search(message), f"{name.pattern!r} not in: {message}"
        else:
            assert str(name) in message, f"{name!r} not in: {message}"
    assert not out.exists()
    return message


def ca_topology(names_numbers, chain_breaks=()) -> md.Topology:
    """A CA-only topology: one chain (new chain before indices in ``chain_breaks``)."""
    top = md.Topology()
    chain = top.add_chain("A")
    for i, (name, number) in enumerate(names_numbers):
        if i in chain_breaks:
            chain = top.add_chain(chr(ord("A") + top.n_chains))
        residue = top.add_residue(name, chain, resSeq=number)
        top.add_atom("CA", md.element.carbon, residue)
    return top


def residues_of(ca):
    return [(r.name, r.resSeq) for r in ca.topology.residues]


# --------------------------------------------------------------------------- files


def test_missing_input_file(tmp_path):
    missing = tmp_path / "nowhere_ca.pdb"
    message = fails(tmp_path, missing, names=[missing])
    assert "does not exist" in message


def test_missing_topology_file(tmp_path, good):
    missing = tmp_path / "nowhere_top.pdb"
    message = fails(tmp_path, good[1], top=missing, names=[missing])
    assert "does not exist" in message


def test_dcd_without_topology(tmp_path, good):
    message = fails(tmp_path, good[1], names=[good[1], "--top"])
    assert "topology" in message


@pytest.mark.parametrize("ext", [".pdb", ".dcd"])
def test_empty_file(tmp_path, good, ext):
    empty = tmp_path / f"empty{ext}"
    empty.write_bytes(b"")
    message = fails(tmp_path, empty, top=good[0] if ext == ".dcd" else None, names=[empty])
    assert "empty" in message


def test_pdb_without_atoms(tmp_path):
    blank = tmp_path / "blank.pdb"
    blank.write_text("REMARK   1 nothing here\nEND\n")
    message = fails(tmp_path, blank, names=[blank])
    assert "ATOM" in message or "no atoms" in message or "empty" in message


def test_unsupported_input_extension(tmp_path, good):
    odd = tmp_path / "trace.txt"
    odd.write_text(good[0].read_text())
    message = fails(tmp_path, odd, names=[odd])
    assert "unsupported" in message and ".pdb" in message


def test_unsupported_output_extension(tmp_path, good):
    out = tmp_path / "out.txt"
    with pytest.raises(BackmapInputError, match=re.escape(str(out))) as info:
        backmap(str(good[0]), str(out), progress=False)
    assert "unsupported output" in str(info.value)
    assert not out.exists()


# --------------------------------------------------------------------------- coordinates


def test_atom_count_mismatch(tmp_path, ca, good):
    top19 = tmp_path / "ca19.pdb"
    ca[0].atom_slice(range(19)).save_pdb(str(top19))
    message = fails(tmp_path, good[1], top=top19, names=[top19, good[1], "19", "20"])
    assert "mismatch" in message


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("chunk", [1000, 2])
def test_non_finite_coordinate_names_frame_and_residue(tmp_path, ca, good, value, chunk):
    xyz = ca.xyz.copy()
    xyz[3, 5] = value  # frame 3, residue TRP 6
    bad = tmp_path / "bad.dcd"
    md.Trajectory(xyz, ca.topology).save_dcd(str(bad))
    # with chunk 2, frames 0-2 are built and written before frame 3 is read:
    # the failed run still leaves nothing under the output name
    message = fails(tmp_path, bad, top=good[0], chunk=chunk,
                    names=[bad, "frame 3", re.compile(r"TRP ?6"), "chain 'A'"])
    assert "non-finite" in message


def test_nan_in_a_structure_file(tmp_path, ca):
    """A PDB cannot hold NaN in its columns; an h5 (topology inside) can."""
    xyz = ca.xyz[:2].copy()
    xyz[1, 0, 2] = np.nan
    bad = tmp_path / "bad.h5"
    md.Trajectory(xyz, ca.topology).save_hdf5(str(bad))
    fails(tmp_path, bad, names=[bad, "frame 1", re.compile(r"ASN ?1\b")])


@pytest.mark.parametrize("factor,word", [(0.1, "small"), (10.0, "large")])
def test_coordinates_in_the_wrong_unit(tmp_path, ca, factor, word):
    wrong = tmp_path / "wrong_unit.pdb"
    md.Trajectory(ca.xyz[:1] * np.float32(factor), ca.topology).save_pdb(str(wrong))
    message = fails(tmp_path, wrong, names=[wrong, "frame 0", "ten times"])
    assert word in message


def test_coordinates_in_reduced_units_give_the_factor(tmp_path, ca):
    """A trace in Lennard-Jones-like units (bonds of about 1, as HOOMD or LAMMPS runs write them) is 3.8 times too
    small, not ten times: the message gives the factor measured (it said 'ten times too small (nm written as
    Angstrom?)')."""
    reduced = tmp_path / "reduced_units.pdb"
    spacing = np.median(np.linalg.norm(np.diff(ca.xyz[0], axis=0), axis=-1))  # nm, about 0.38
    md.Trajectory(ca.xyz[:1] / np.float32(spacing * 10.0), ca.topology).save_pdb(str(reduced))  # bonds of 1 A
    message = fails(tmp_path, reduced, names=[reduced, "frame 0", re.compile(r"3\.[78] times too small")])
    assert "ten times" not in message and "Lennard-Jones" in message


def test_beads_flown_apart_are_no_unit(tmp_path, ca):
    """Beads thousands of times too far apart (a CG run that blew up; an .h5 holds such numbers) were called
    'another unit'; no unit is that far off."""
    blown = tmp_path / "blown_up.h5"
    md.Trajectory(ca.xyz[:1] * np.float32(1e5), ca.topology).save_hdf5(str(blown))
    message = fails(tmp_path, blown, names=[blown, "frame 0", "times too large: beads flown apart"])
    assert "a run that blew up?" in message and "scale them" not in message


def test_beads_named_bb_of_another_cg_model_say_what_to_pass(tmp_path, ca):
    """One bead per residue named BB (a Go model's own, not Martini 3) on residues named by one-letter codes: the
    refusal names --mapping ca / com, which read it (it named no way out)."""
    top = ca.topology.copy()
    for residue in top.residues:
        residue.name = residue.code
    for atom in top.atoms:
        atom.name = "BB"
    named = tmp_path / "bb_beads.pdb"
    md.Trajectory(ca.xyz[:1], top).save_pdb(str(named))
    message = fails(tmp_path, named, names=[named, "BB", "not Martini 3 protein residues"])
    assert "--mapping ca" in message and "--mapping com" in message


# --------------------------------------------------------------------------- topology


def test_all_atom_residue_without_ca(tmp_path, aa):
    keep = [a.index for a in aa.topology.atoms if not (a.residue.index == 5 and a.name == "CA")]
    no_ca = tmp_path / "no_ca.pdb"
    aa[0].atom_slice(keep).save_pdb(str(no_ca))
    fails(tmp_path, no_ca, names=[no_ca, "chain A", "TRP 6", "CA"])


def test_unknown_residue_with_ca(tmp_path, ca):
    names = residues_of(ca)
    names[4] = ("XYZ", names[4][1])
    unknown = tmp_path / "unknown.pdb"
    md.Trajectory(ca.xyz[:1], ca_topology(names)).save_pdb(str(unknown))
    message = fails(tmp_path, unknown, names=[unknown, "chain A", "XYZ 5"])
    assert "unknown residue" in message
    names[4] = ("DGL", names[4][1])  # D-glutamate: said as such, not "unknown" with 60 names
    md.Trajectory(ca.xyz[:1], ca_topology(names)).save_pdb(str(unknown))
    fails(tmp_path, unknown, names=[unknown, "DGL 5", "residue 'DGL' is D-GLU: D-amino acids are not supported"])


def test_beads_named_unk_ask_for_the_sequence(tmp_path, ca):
    """HOOMD / LAMMPS converters write every bead as residue UNK (atom C1): the error says the residue names must
    give the sequence (it said only 'no protein residues found (dropped 20 non-protein residue(s) UNK)')."""
    top = md.Topology()
    chain = top.add_chain()
    for residue in ca.topology.residues:
        top.add_atom("C1", md.element.carbon, top.add_residue("UNK", chain, resSeq=residue.resSeq))
    unk = tmp_path / "unk.pdb"
    md.Trajectory(ca.xyz[:1], top).save_pdb(str(unk))
    fails(tmp_path, unk, names=[unk, "no protein residues found", "residues named UNK",
                                "the residue names must give the sequence", "--top"])


def test_openawsem_residue_names_are_read(tmp_path, aa):
    """openAWSEM's coordinate files hold N, CA, C, O and CB, glycine named IGL and proline IPR: they are read as
    GLY and PRO, with a note (IGL was an unknown residue)."""
    keep = aa.topology.select("name N CA C O CB")
    awsem = aa[0].atom_slice(keep)
    for residue in awsem.topology.residues:
        residue.name = {"GLY": "IGL", "PRO": "IPR"}.get(residue.name, residue.name)
    path = tmp_path / "openawsem.pdb"
    awsem.save_pdb(str(path))
    result = backmap(str(path), str(tmp_path / "out.pdb"), method="ideal", progress=False)
    assert "renamed IGL -> GLY" in result.report and "renamed IPR -> PRO" in result.report
    out = md.load(str(tmp_path / "out.pdb"))
    assert [r.name for r in out.topology.residues] == [r.name for r in aa.topology.residues]


def test_chains_of_one_residue_are_built_an_input_of_one_is_refused(tmp_path, ca):
    """A chain of one residue (a fragment of a crystal structure, a free amino acid) is built, its backbone
    oriented by the residue before it in the file, C-terminal OXT included (the whole input was refused); one
    residue in all says why it cannot be built."""
    one = tmp_path / "one_residue_chain.pdb"
    md.Trajectory(ca.xyz[:1], ca_topology(residues_of(ca), chain_breaks=(19,))).save_pdb(str(one))
    for method in ("model", "ideal"):
        result = backmap(str(one), str(tmp_path / f"{method}.pdb"), method=method, progress=False)
        assert (result.n_chains, result.n_segments) == (2, 2)
        built = md.load(str(tmp_path / f"{method}.pdb"))
        atoms = {a.name: a.index for a in built.topology.chain(1).atoms}
        assert sorted(atoms) == ["C", "CA", "CB", "N", "O", "OG", "OXT"]
        xyz = built.xyz[0] * 10.0
        assert np.linalg.norm(xyz[atoms["CA"]] - ca.xyz[0, 19] * 10.0) < 0.01
        for a, b, length in (("N", "CA", 1.46), ("CA", "C", 1.52), ("CA", "CB", 1.53), ("C", "OXT", 1.25)):
            assert abs(np.linalg.norm(xyz[atoms[a]] - xyz[atoms[b]]) - length) < 0.05, (method, a, b)
    alone = tmp_path / "one_residue.pdb"
    md.Trajectory(ca.xyz[:1, 19:], ca_topology(residues_of(ca)[19:])).save_pdb(str(alone))
    message = fails(tmp_path, alone, names=[alone, "chain A", "SER 20"])
    assert "one residue in all" in message


def test_duplicate_atoms(tmp_path, ca):
    top = md.Topology()
    chain = top.add_chain("A")
    for i, (name, number) in enumerate(residues_of(ca)):
        residue = top.add_residue(name, chain, resSeq=number)
        top.add_atom("CA", md.element.carbon, residue)
        if i == 7:
            top.add_atom("CA", md.element.carbon, residue)
    xyz = np.insert(ca.xyz[:1], 8, ca.xyz[0, 7] + 0.05, axis=1)
    dup = tmp_path / "duplicate.pdb"
    md.Trajectory(xyz, top).save_pdb(str(dup))
    message = fails(tmp_path, dup, names=[dup, "'A'", re.compile(r"LYS ?8"), "CA"])
    assert "duplicate" in message


def test_duplicate_atoms_first_residue_named(ca):
    """The first residue (in file order) with a repeated atom name is the one named, with its count."""
    from backmap_plugin.io.atoms import check_duplicate_atoms

    top = md.Topology()
    chain = top.add_chain("A")
    for i, (name, number) in enumerate(residues_of(ca)):
        residue = top.add_residue(name, chain, resSeq=number)
        for atom in ["CA"] + (["CB", "CB", "CB"] if i == 4 else []) + (["CA"] if i == 11 else []):
            top.add_atom(atom, md.element.carbon, residue)
    with pytest.raises(BackmapInputError, match=r"x.pdb: duplicate atom: .*5.* CB.* appears 3 times"):
        check_duplicate_atoms(top, "x.pdb")
    check_duplicate_atoms(ca.topology, "x.pdb")  # none


# --------------------------------------------------------------------------- output


def test_unwritable_output_fails_before_any_work(tmp_path, good, monkeypatch):
    def no_reading(*args, **kwargs):
        raise AssertionError("input was read before the output path was checked")

    monkeypatch.setattr(api, "open_frames", no_reading)
    out = tmp_path / "no_such_dir" / "out.pdb"
    with pytest.raises(BackmapInputError) as info:
        backmap(str(good[1]), str(out), top=str(good[0]), progress=False)
    assert str(out) in str(info.value) and "does not exist" in str(info.value)
    assert not out.parent.exists()


def test_failed_run_keeps_an_existing_output_untouched(tmp_path, ca, good):
    xyz = ca.xyz.copy()
    xyz[20, 0] = np.nan
    bad = tmp_path / "bad.dcd"
    md.Trajectory(xyz, ca.topology).save_dcd(str(bad))
    out = tmp_path / "out.dcd"
    out.write_bytes(b"previous result")
    with pytest.raises(BackmapInputError, match="frame 20"):
        backmap(str(bad), str(out), top=str(good[0]), chunk=5, progress=False)
    assert out.read_bytes() == b"previous result"


# --------------------------------------------------------------------------- CLI


def test_cli_error_is_one_line_exit_2(tmp_path, capfd, ca, good):
    xyz = ca.xyz.copy()
    xyz[3, 5] = np.nan
    bad = tmp_path / "bad.dcd"
    md.Trajectory(xyz, ca.topology).save_dcd(str(bad))
    out = tmp_path / "out.xtc"
    status = main(["run", str(bad), "--top", str(good[0]), "-o", str(out), "--chunk", "2", "--quiet"])
    captured = capfd.readouterr()
    assert status == 2
    assert captured.out == ""
    lines = [line for line in captured.err.splitlines() if not line.startswith("dcdplugin)")]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("backmap: error: ") and str(bad) in lines[0] and "frame 3" in lines[0]
    assert "Traceback" not in captured.err
    assert not out.exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_cli_debug_shows_the_traceback(tmp_path, capfd, where):
    missing = tmp_path / "missing_ca.pdb"
    args = ["run", str(missing), "-o", str(tmp_path / "out.pdb")]
    args = ["--debug"] + args if where == "before" else args + ["--debug"]
    status = main(args)
    err = capfd.readouterr().err
    assert status == 2
    assert "Traceback (most recent call last)" in err and "BackmapInputError" in err
    assert err.rstrip().splitlines()[-1] == f"backmap: error: {missing}: input file does not exist"


def test_cli_unwritable_output(tmp_path, capfd, good):
    out = tmp_path / "no_such_dir" / "out.pdb"
    status = main(["run", str(good[0]), "-o", str(out)])
    err = capfd.readouterr().err
    assert status == 2
    assert err.strip() == f"backmap: error: {out}: cannot write output: directory {out.parent} does not exist"


@pytest.mark.parametrize("options", [["--samples", "0"], ["--stride", "0"], ["--chunk", "0"], ["--device", "gpu"],
                                     ["--break-distance", "-1"], ["--break-distance", "inf"], ["--temperature", "-1"],
                                     ["--method", "ideal", "--model", "model.pt"]])
def test_cli_bad_option_values(tmp_path, capfd, good, options):
    status = main(["run", str(good[0]), "-o", str(tmp_path / "out.pdb"), *options])
    err = capfd.readouterr().err
    assert status == 2
    assert err.startswith("backmap") and "error: " in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out.pdb").exists()


def test_numpy_numbers_are_options_and_bad_seeds_are_refused(tmp_path, good):
    """numpy numbers as options (``np.random.default_rng().integers()`` gives them): the run and its result are
    as with Python's (a TypeError from the JSON progress record after the first chunk, a partial file left); a seed
    below 0 or not whole is refused, as the reporter refuses it."""
    import json

    result = backmap(str(good[1]), str(tmp_path / "np.xtc"), top=str(good[0]), progress=False, method="ideal",
                     seed=np.int64(1), samples=np.int64(1), stride=np.int64(2), break_distance=np.float32(5.0))
    assert json.loads(json.dumps(result.to_dict()))["seed"] == 1 and result.stride == 2
    for seed in (-1, 1.5):
        with pytest.raises(ValueError, match=f"seed must be a whole number, at least 0, got {seed}"):
            backmap(str(good[0]), str(tmp_path / "seed.pdb"), seed=seed)


def test_output_onto_the_input_is_refused(tmp_path, capfd, good):
    """``-o`` naming the input or its topology, with --overwrite (as workflows pass it): refused before any work
    (the CG input was replaced by the all-atom output)."""
    pdb, dcd = (tmp_path / "ca.pdb", tmp_path / "ca.dcd")
    pdb.write_bytes(good[0].read_bytes())
    dcd.write_bytes(good[1].read_bytes())
    for input, top, output in ((pdb, None, pdb), (dcd, pdb, dcd), (dcd, pdb, pdb)):
        argv = ["run", str(input), "-o", str(output), "--overwrite"] + ([] if top is None else ["--top", str(top)])
        assert main(argv) == 2
        assert f"{output}: the output is the input file {output}: writing it would destroy the input" in \
            capfd.readouterr().err
    assert pdb.read_bytes() == good[0].read_bytes() and dcd.read_bytes() == good[1].read_bytes()


def test_cli_run_summary_into_a_missing_directory(tmp_path, capfd, good):
    """``--json`` into a directory that does not exist fails before the run (it failed after it, output written)."""
    summary = tmp_path / "no_such_dir" / "run.json"
    status = main(["run", str(good[0]), "-o", str(tmp_path / "out.pdb"), "--json", str(summary)])
    assert status == 2 and not (tmp_path / "out.pdb").exists()
    assert capfd.readouterr().err.strip() == (f"backmap: error: {summary}: cannot write the run summary: "
                                              f"directory {summary.parent} does not exist")


def test_cli_run_summary_where_nothing_can_be_written(tmp_path, capfd, good, monkeypatch):
    """``--json`` into a directory that cannot be written (a read-only file system, as os.access tells; root passes
    permission bits, so the answer is given here): refused before the run (it failed after it, and a workflow then
    deleted the finished output)."""
    from backmap_plugin.io import paths

    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(paths.os, "access", lambda path, mode: False if str(path) == str(locked) else real(path, mode))
    status = main(["run", str(good[0]), "-o", str(tmp_path / "out.pdb"), "--json", str(locked / "run.json")])
    assert status == 2 and not (tmp_path / "out.pdb").exists()
    assert capfd.readouterr().err.strip() == (f"backmap: error: {locked / 'run.json'}: cannot write the run summary: "
                                              f"no permission to write in {locked}")


# --------------------------------------------------------------------------- bead names and positions


def _renamed(ca, tmp_path, names, name="beads.pdb"):
    """Frame 0 of the CA trace with its beads renamed (``names``: one per bead)."""
    top = ca.topology.copy()
    for atom, new in zip(top.atoms, names):
        atom.name = new
    path = tmp_path / name
    md.Trajectory(ca.xyz[:1], top).save_pdb(str(path))
    return path


def _leftovers(tmp_path) -> list:
    """Hidden files (partial output, progress record) in ``tmp_path``."""
    return sorted(p.name for p in tmp_path.glob(".*"))


def test_beads_of_any_name_are_read_by_their_geometry(tmp_path, ca, capfd):
    """CG programs name their beads CA, C (LAMMPS / Mpipi conversions), after their residue (COCOMO) or anything:
    the geometry tells (these were refused unless renamed CA, also with --mapping ca, and the message's other
    way out, --mapping com, built them 1.0 A off their beads without a word). The evidence names the beads; a
    mapping given against the geometry is built, and the evidence says what the beads look like."""
    for names in (["C"] * 20, [r.name for r in ca.topology.residues], ["CA"] * 17 + ["SC1"] * 3):
        path = _renamed(ca, tmp_path, names)
        result = backmap(str(path), str(tmp_path / "aa.pdb"), progress=False)
        assert result.mapping_evidence.startswith("C-alpha trace: consecutive beads")
        assert f"(beads named {', '.join(sorted(set(names))[:5])}" in result.mapping_evidence
        assert result.bead_rmsd["C-alpha"]["max"] < 0.01
    cb = _renamed(ca, tmp_path, ["CB"] * 20)
    out = tmp_path / "com.pdb"
    assert main(["run", str(cb), "-o", str(out), "--mapping", "com", "--quiet"]) == 0
    assert md.load(str(out)).n_atoms == 154
    assert "mapping: as given (com), though the beads look otherwise: C-alpha trace" in capfd.readouterr().err
    assert main(["run", str(cb), "-o", str(out), "--mapping", "ca", "--quiet", "--overwrite"]) == 0
    assert "mapping:" not in capfd.readouterr().err


def test_residues_of_a_few_beads_say_only_their_c_alpha_atoms_are_read(tmp_path, fixture_pdb):
    """An AWSEM-like model (CA, CB and O per residue): read at its C-alpha atoms, as any all-atom input, and the
    evidence now says that most residues hold a few atoms and which (the other beads were dropped without a
    word); a whole structure's evidence stays as it was."""
    aa = md.load(str(fixture_pdb))[0]
    awsem = aa.atom_slice(aa.topology.select("name CA or name CB or name O"))
    awsem.save_pdb(str(tmp_path / "awsem.pdb"))
    result = backmap(str(tmp_path / "awsem.pdb"), str(tmp_path / "aa.pdb"), progress=False)
    assert result.mapping_evidence == (
        "all-atom residues: beads at their C-alpha atoms; but 14 of 20 residues hold fewer than half their heavy "
        "atoms (a CG model of several beads per residue? they hold CA, CB, O (14)): only their CA atoms are read, "
        "the other atoms are not used")
    whole = backmap(str(fixture_pdb), str(tmp_path / "whole.pdb"), progress=False)
    assert whole.mapping_evidence == "all-atom residues: beads at their C-alpha atoms"
    assert not any(line.startswith("every one of the") for line in whole.report)


def test_a_chain_of_one_residue_name_gets_a_note(tmp_path, ca):
    """Every bead named ALA (a CG writer that names all beads alike): built, with a note that the side chains are
    then not the protein's."""
    top = ca.topology.copy()
    for residue in top.residues:
        residue.name = "ALA"
    md.Trajectory(ca.xyz[:1], top).save_pdb(str(tmp_path / "ala.pdb"))
    result = backmap(str(tmp_path / "ala.pdb"), str(tmp_path / "out.pdb"), progress=False)
    assert ("every one of the 20 residues is ALA: if the CG program names all its beads alike, the side chains "
            "built are not the protein's (give a topology with the sequence)") in result.report


def test_ca_beads_of_any_case_and_the_example_still_run(tmp_path, ca):
    lower = _renamed(ca, tmp_path, [" ca "] * 20, name="lower.pdb")  # PDB columns; mdtraj strips them
    assert backmap(str(lower), str(tmp_path / "a.pdb"), method="ideal", progress=False).n_frames == 1


@pytest.mark.parametrize("ext,chunk", [(".pdb", 1000), (".dcd", 1000), (".dcd", 2)])
def test_coincident_consecutive_beads(tmp_path, ca, good, ext, chunk):
    """Frame 1 has LYS 8 on top of ASP 9. It is in the first chunk: nothing is left behind,
    not even a hidden partial file or progress record; with chunk 2 it is read before anything
    was built but after the writer started."""
    xyz = ca.xyz[:4].copy()
    xyz[1, 8] = xyz[1, 7]
    bad = tmp_path / f"coincident{ext}"
    traj = md.Trajectory(xyz, ca.topology)
    traj.save_pdb(str(bad)) if ext == ".pdb" else traj.save_dcd(str(bad))
    message = fails(tmp_path, bad, top=None if ext == ".pdb" else good[0], chunk=chunk, method="ideal",
                    names=[bad, "frame 1:", "chain A residue LYS 8", "chain A residue ASP 9", "(consecutive)",
                           "0.00 Angstrom apart", "0.5 Angstrom"])
    assert "NaN" not in message and "out.pdb" not in message  # the old error: NaN ... in the output file
    assert _leftovers(tmp_path) == []


def test_close_beads_far_apart_in_the_chain_in_a_later_chunk(tmp_path, ca, good):
    """Frame 5 has ASP 9 0.3 A from ARG 16; chunks of 2: frames 0-3 are finished and kept for
    ``--resume`` (the promise of never losing finished output), and the message says so."""
    xyz = ca.xyz[:8].copy()
    xyz[5, 8] = xyz[5, 15] + np.float32([0.03, 0.0, 0.0])  # nm
    bad = tmp_path / "close.dcd"
    md.Trajectory(xyz, ca.topology).save_dcd(str(bad))
    message = fails(tmp_path, bad, top=good[0], chunk=2, method="ideal",
                    names=[bad, "frame 5:", "chain A residue ASP 9 and chain A residue ARG 16 are 0.30 Angstrom",
                           "the 4 frame(s) finished before were kept in", ".out.pdb.partial.pdb"])
    assert "(consecutive)" not in message
    assert _leftovers(tmp_path) == [".out.pdb.partial.pdb", ".out.pdb.progress.json"]


def test_coincident_beads_of_all_atom_residues(tmp_path, aa):
    """All-atom input: the beads come through the mapping (the CA), and are checked too."""
    traj = aa[:3]
    xyz = traj.xyz.copy()
    ca_index = {r.index: next(a.index for a in r.atoms if a.name == "CA") for r in traj.topology.residues}
    atoms9 = [a.index for a in traj.topology.residue(8).atoms]
    xyz[2, atoms9] += xyz[2, ca_index[7]] - xyz[2, ca_index[8]]  # ASP 9 moved onto LYS 8's CA
    bad = tmp_path / "all_atom.h5"
    md.Trajectory(xyz, traj.topology).save_hdf5(str(bad))
    fails(tmp_path, bad, method="ideal", names=[bad, "frame 2:", "LYS 8", "ASP 9", "0.00 Angstrom apart"])
    assert _leftovers(tmp_path) == []


def test_nan_in_frame_3_of_a_trajectory_leaves_nothing(tmp_path, ca):
    xyz = ca.xyz[:6].copy()
    xyz[3, 11] = np.nan
    bad = tmp_path / "nan.h5"  # an XTC cannot hold NaN
    md.Trajectory(xyz, ca.topology).save_hdf5(str(bad))
    message = fails(tmp_path, bad, method="ideal",
                    names=[bad, "frame 3", "chain 'A'", re.compile(r"PRO ?12")])
    assert "non-finite" in message
    assert _leftovers(tmp_path) == []


def test_bead_checks_name_frame_chain_and_residues(ca):
    """The checks on the bead array (what the OpenMM reporter and all-atom input rely on)."""
    from backmap_plugin.core.beads import first_close_pair, first_non_finite
    from backmap_plugin.core.topology import protein_topology, read_residues

    beads = np.repeat(ca.xyz[:1] * 10.0, 3, axis=0)
    assert first_non_finite(beads) is None and first_close_pair(beads) is None
    records, _ = read_residues(ca.topology, "trace.pdb")
    protein = protein_topology(records, beads[0])
    beads[2, 4, 1] = np.inf
    beads[2, 6] = beads[2, 1] + 0.2
    assert first_non_finite(beads) == (2, 4)
    with pytest.raises(BackmapInputError, match=r"^trace.pdb: frame 12: the bead of chain A residue GLN 5 is not finite"):
        api.check_beads(beads, protein, "trace.pdb", first_frame=10)
    beads[2, 4, 1] = 0.0
    frame, i, j, distance = first_close_pair(beads)
    assert (frame, i, j) == (2, 1, 6) and distance == pytest.approx(0.2 * np.sqrt(3), abs=1e-4)
    with pytest.raises(BackmapInputError, match=r"frame 12: the beads of chain A residue LEU 2 and chain A residue "
                                                r"LEU 7 are 0.35 Angstrom apart"):
        api.check_beads(beads, protein, "trace.pdb", first_frame=10)


@pytest.mark.parametrize("bad_frame", [0, 1, 3])
def test_reporter_stops_at_a_bad_frame_and_keeps_a_consistent_file(tmp_path, ca, bad_frame):
    """Report 0 or 1 (first batch) or 3 (second batch of 2) has a bead that is not finite (a simulation that blew
    up): the message names the report; the file keeps every frame before it (the good frames of its batch were
    lost), or does not exist, and the reporter is closed; closing it again (a with block) does not raise."""
    from backmap_plugin.reporter import BackmapReporter

    out = tmp_path / "aa.pdb"
    simulation = FakeSimulation(ca.topology.to_openmm())
    with BackmapReporter(str(out), 10, batchFrames=2, method="ideal") as reporter:
        frames = np.repeat(ca.xyz[:1], 6, axis=0)
        frames[bad_frame, 8] = np.nan
        with pytest.raises(BackmapInputError) as info:
            for xyz in frames:
                reporter.report(simulation, FakeState(xyz))
    message = str(info.value)
    if bad_frame == 0:  # (read when the reporter starts)
        assert message.startswith(f"BackmapReporter({out}): frame 0 has a non-finite coordinate [nan, nan, nan] for "
                                  "chain 'A' residue ASP9 atom CA")
        assert not out.exists()
    else:
        assert message.startswith(f"BackmapReporter({out}): frame {bad_frame}: the bead of chain A residue ASP 9 "
                                  "is not finite")
        assert message.endswith(f"the reporter is closed; {out} keeps the {bad_frame} structure(s) written")
        assert md.load(str(out)).n_frames == bad_frame
    with pytest.raises(ValueError, match="closed"):
        reporter.report(simulation, FakeState(frames[0]))


def test_reporter_leaves_out_frames_whose_beads_overlap(tmp_path, ca):
    """A CG model without excluded volume lets beads overlap: reports 1 and 3 have two beads 0.3 A apart. They are
    left out (a warning for the first, a count in the notes) and the run goes on (it stopped the simulation)."""
    from backmap_plugin.reporter import BackmapReporter

    out = tmp_path / "aa.xtc"
    simulation = FakeSimulation(ca.topology.to_openmm())
    frames = np.repeat(ca.xyz[:1], 6, axis=0)
    for k in (1, 3):
        frames[k, 15] = frames[k, 2] + np.float32(0.02)
    with pytest.warns(UserWarning, match=r"frame 1: the beads of chain A residue TYR 3 and chain A residue ARG 16 "
                                         r"are 0.35 Angstrom apart.*report 1, 0.1 ps\) is left out"):
        with BackmapReporter(str(out), 10, batchFrames=2, method="ideal") as reporter:
            for k, xyz in enumerate(frames):
                reporter.report(simulation, FakeState(xyz, 0.1 * k))
    assert reporter.framesWritten == 4
    with md.formats.XTCTrajectoryFile(str(out)) as handle:
        np.testing.assert_allclose(handle.read()[1], [0.0, 0.2, 0.4, 0.5], atol=1e-6)
    assert reporter.notes[0] == (f"{out}: 2 frame(s) left out, their beads closer than any two of a protein (the "
                                 "CG model lets beads overlap; first: report 1, 0.1 ps)")


def test_all_atom_file_with_a_one_atom_residue_is_still_read(tmp_path):
    """Real crystal files end with truncated residues (1SNM's GLU 142 keeps only N): the CA-name check of
    CG traces does not refuse an all-atom file for that."""
    from conftest import FIXTURE_PDB

    traj = md.load(str(FIXTURE_PDB))[0]
    last = list(traj.topology.residues)[-1]
    keep = [a.index for a in traj.topology.atoms if a.residue.index != last.index or a.name == "N"]
    path = tmp_path / "truncated.pdb"
    traj.atom_slice(keep).save_pdb(str(path))
    result = backmap(str(path), str(tmp_path / "out.pdb"), progress=False)
    assert result.n_residues == 20


def test_truncated_trajectory_keeps_its_whole_frames(tmp_path, capfd):
    """The real Martini 3 run's .xtc cut mid-frame (a killed run, or one still writing): its 3 whole frames are
    backmapped, with a note (nothing was, and the message said the block from frame 0 on failed), and, once the
    output is written, a CutShortWarning naming the file and its last whole frame (the run looked finished);
    cut inside its first frame, it is refused. The XTC reader's bare error codes stay out of the output."""
    data = Path(__file__).resolve().parent / "data" / "martini3"
    cut = tmp_path / "cut.xtc"
    cut.write_bytes((data / "md.xtc").read_bytes()[:20000])
    with pytest.warns(CutShortWarning) as caught:
        result = backmap(str(cut), str(tmp_path / "cut_aa.pdb"), top=str(data / "md.gro"), progress=False)
    assert result.n_frames == 3 and md.load(str(tmp_path / "cut_aa.pdb")).n_frames == 3
    assert [line for line in result.report if "read 3 whole frame(s); the next could not be read" in line
            and "a truncated file, or one still being written?" in line]
    assert [str(w.message) for w in caught] == [result.cut_short] == [
        f"{cut}: the file is cut short (it ends inside a frame: a run killed while writing it, or one still writing "
        f"it?): its last whole frame read is frame 2; {tmp_path / 'cut_aa.pdb'} holds the 3 frame(s) read up to it"]
    md.load(str(data / "md.xtc"), top=str(data / "md.gro"))[:3].save_xtc(str(tmp_path / "whole.xtc"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CutShortWarning)
        again = backmap(str(tmp_path / "whole.xtc"), str(tmp_path / "whole_aa.pdb"), top=str(data / "md.gro"),
                        progress=False)
    assert not any("could not be read" in line for line in again.report) and again.cut_short is None
    # the same structures (read one at a time, the frames were built in other batches: float rounding)
    np.testing.assert_allclose(md.load(str(tmp_path / "cut_aa.pdb")).xyz, md.load(str(tmp_path / "whole_aa.pdb")).xyz,
                               atol=2e-4)
    cut.write_bytes((data / "md.xtc").read_bytes()[:3000])
    fails(tmp_path, cut, top=data / "md.gro", names=["cut.xtc: cannot be read as .xtc",
                                                      "a truncated or damaged file?"])
    assert "xdrfile error" not in capfd.readouterr().err


def test_single_model_pdb_cut_short_says_so(tmp_path):
    """A one-model PDB cut inside its model (MODEL, no ENDMDL, no END: a killed writer, or `head -c`) was read
    without a word; now `run` and refine's reader say how many atoms they read and that the file may be cut. A
    whole one-model file (ENDMDL or END) gets no such note."""
    from backmap_plugin.openmm.frames import open_structure

    examples = Path(__file__).resolve().parents[1] / "examples"
    two = md.load(str(examples / "trpcage_ca.dcd"), top=str(examples / "trpcage_ca.pdb"))[:2]
    two.save_pdb(str(tmp_path / "two.pdb"))
    lines = (tmp_path / "two.pdb").read_text().splitlines(keepends=True)
    model, end = (next(i for i, line in enumerate(lines) if line.startswith(kind)) for kind in ("MODEL", "ENDMDL"))
    (tmp_path / "cut.pdb").write_text("".join(lines[:model + 15]))
    (tmp_path / "one.pdb").write_text("".join(lines[:end + 1]) + "END\n")
    note = ("model 1 has no ENDMDL and the file no END (14 atoms read): a truncated file, or one still being written? "
            "(how much is missing cannot be told)")
    result = backmap(str(tmp_path / "cut.pdb"), str(tmp_path / "cut_aa.pdb"), progress=False, mapping="ca")
    assert result.n_residues == 14 and f"{tmp_path / 'cut.pdb'}: {note}" in result.report
    assert any(note in n for n in open_structure(tmp_path / "cut.pdb").notes)
    whole = backmap(str(tmp_path / "one.pdb"), str(tmp_path / "one_aa.pdb"), progress=False)
    assert "no ENDMDL" not in whole.report
    assert not open_structure(tmp_path / "one.pdb").notes


def test_pdb_trajectory_cut_in_its_last_model_keeps_its_whole_models(tmp_path):
    """A multi-model C-alpha PDB cut inside its fifth model (a run killed while writing it): its four whole models
    are backmapped, with a note and a CutShortWarning (it was refused: "All MODELs must contain the same number of
    ATOMs"); models of different sizes before the last are refused, naming two of them. Models are named as
    frames counted from 0, as every other message counts them ("frame 3: the beads of ..."; they said "model 5"
    for frame 4), with the line of their MODEL record."""
    examples = Path(__file__).resolve().parents[1] / "examples"
    traj = md.load(str(examples / "trpcage_ca.dcd"), top=str(examples / "trpcage_ca.pdb"))[:5]
    traj.save_pdb(str(tmp_path / "five.pdb"))
    lines = (tmp_path / "five.pdb").read_text().splitlines(keepends=True)
    fifth = max(i for i, line in enumerate(lines) if line.startswith("MODEL"))
    (tmp_path / "cut.pdb").write_text("".join(lines[:fifth + 8]))
    with pytest.warns(CutShortWarning, match=r"cut.pdb: the file is cut short .*: its last whole frame read is frame "
                                             r"3; .*cut_aa.pdb holds the 4 frame\(s\) read up to it$"):
        result = backmap(str(tmp_path / "cut.pdb"), str(tmp_path / "cut_aa.pdb"), progress=False)
    assert result.n_frames == 4
    assert (f"{tmp_path / 'cut.pdb'}: read 4 whole model(s) (frames 0-3); frame 4 (the MODEL on line {fifth + 1}) is "
            "cut short (7 of 20 atoms): a truncated file, or one still being written?") in result.report
    second = [i for i, line in enumerate(lines) if line.startswith("MODEL")][1]
    (tmp_path / "odd.pdb").write_text("".join(lines[:second + 2] + lines[second + 3:]))
    fails(tmp_path, tmp_path / "odd.pdb", names=["odd.pdb: its models hold different numbers of atoms (frame 0: "
                                                 f"20, frame 1: 19, the MODEL on line {second + 1})"])
    # a last model that ends (ENDMDL) is whole, not cut: a smaller one is another size, not lost work
    (tmp_path / "small_last.pdb").write_text("".join(lines[:fifth + 2] + lines[fifth + 3:]))
    fails(tmp_path, tmp_path / "small_last.pdb", names=["small_last.pdb: its models hold different numbers of atoms "
                                                        f"(frame 0: 20, frame 4: 19, the MODEL on line {fifth + 1})"])
    (tmp_path / "small_first.pdb").write_text("".join(lines[:3] + lines[4:second] + lines[second:]))
    fails(tmp_path, tmp_path / "small_first.pdb",
          names=[f"small_first.pdb: its models hold different numbers of atoms (frame 0: 19, frame 1: 20, the MODEL on "
                 f"line {second})"])


def test_truncated_dcd_is_noted(tmp_path):
    """The shipped 38-frame DCD cut to 5,000 bytes: its 17 whole frames are backmapped, with a note and a
    CutShortWarning naming the last whole frame read (the only sign was the DCD plugin's own warning), with a stride
    as its frame in the file too; the whole file gets neither."""
    examples = Path(__file__).resolve().parents[1] / "examples"
    cut = tmp_path / "cut.dcd"
    cut.write_bytes((examples / "trpcage_ca.dcd").read_bytes()[:5000])
    top = str(examples / "trpcage_ca.pdb")
    with pytest.warns(CutShortWarning, match="its last whole frame read is frame 16;"):
        result = backmap(str(cut), str(tmp_path / "cut_aa.pdb"), top=top, progress=False)
    assert result.n_frames == 17 and "frame 16;" in result.cut_short
    assert f"{cut}: 17 whole frame(s) of the 38 its header announces: a truncated file?" in result.report
    with pytest.warns(CutShortWarning, match=r"frame 5 \(frame 15 of the file, stride 3\); .* holds the 6 frame"):
        backmap(str(cut), str(tmp_path / "strided_aa.pdb"), top=top, progress=False, stride=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CutShortWarning)
        whole = backmap(str(examples / "trpcage_ca.dcd"), str(tmp_path / "whole_aa.pdb"), top=top, progress=False)
    assert not any("truncated" in line for line in whole.report) and whole.cut_short is None


@pytest.mark.parametrize("ext", [".dcd", ".xtc"])
def test_a_trajectory_damaged_in_the_middle_stops_the_run(tmp_path, capfd, ext):
    """Bytes written over (DCD) or missing (XTC) in the middle of the shipped trajectory: the readers stop there
    (the DCD one without a word) and half the trajectory was backmapped with success; now the run stops, naming
    where reading stopped, with the frames before kept. The DCD plugin's lines that say the same stay out."""
    examples = Path(__file__).resolve().parents[1] / "examples"
    top = str(examples / "trpcage_ca.pdb")
    path = tmp_path / f"whole{ext}"
    md.load(str(examples / "trpcage_ca.dcd"), top=top).save(str(path))
    data = path.read_bytes()
    middle = len(data) // 2
    damaged = tmp_path / f"damaged{ext}"
    damaged.write_bytes(data[:middle] + bytes(300) + data[middle + 300:] if ext == ".dcd"
                        else data[:middle] + data[middle + 300:])
    with pytest.raises(BackmapInputError, match=r"damaged\.(dcd|xtc): reading stopped after frame 1\d, but the "
                                                r"file's bytes hold about 3\d frames: it is damaged after that frame"):
        backmap(str(damaged), str(tmp_path / "out.pdb"), top=top, progress=False)
    assert "dcdplugin" not in capfd.readouterr().err
    assert backmap(str(path), str(tmp_path / "whole_aa.pdb"), top=top, progress=False).n_frames == 38
    # a file that grows while it is read is being written (a simulation still running), not damaged
    from backmap_plugin.io.frames import open_frames

    source = open_frames(damaged, top=top, chunk=4)
    chunks = iter(source)
    read = len(next(chunks).xyz)
    with damaged.open("ab") as handle:
        handle.write(data[middle:])
    assert read + sum(len(chunk.xyz) for chunk in chunks) < 38


def test_martini_water_is_not_poly_tryptophan(tmp_path):
    """A .gro of Martini water (residue and bead W), with ions or not: no protein (W was read as the one-letter
    code of TRP and built as a 1728-residue protein)."""
    lines = []
    for k, (x, y, z) in enumerate(np.ndindex(4, 4, 4)):
        lines.append(f"{k + 1:5d}{'W':<5}{'W':>5}{k + 1:5d}{0.47 * x:8.3f}{0.47 * y:8.3f}{0.47 * z:8.3f}")
    for k, name in enumerate(["NA", "CL"], start=65):
        lines.append(f"{k:5d}{name:<5}{name:>5}{k:5d}{0.2 + 0.1 * k - 6:8.3f}{0.25:8.3f}{0.25:8.3f}")
    for count, name in ((64, "water"), (66, "water_ions")):
        path = tmp_path / f"{name}.gro"
        path.write_text("Martini water\n" + f"{count:5d}\n" + "\n".join(lines[:count]) + "\n   1.880   1.880   1.880\n")
        message = fails(tmp_path, path, names=[path, "no protein residues found", "64 non-protein residue(s) W"])
        assert ("NA" in message) == (name == "water_ions")


def test_coordinates_that_do_not_fit_the_topology(tmp_path, ca):
    """The beads of another protein with as many beads (here 1L2Y's CA atoms in another order): refused as not
    fitting the topology, not built as 20 one-residue pieces; an explicit break distance builds them."""
    order = np.random.default_rng(0).permutation(ca.n_atoms)
    path = tmp_path / "shuffled.pdb"
    md.Trajectory(ca.xyz[:1, order], ca.topology).save_pdb(str(path))
    fails(tmp_path, path, names=[path, "frame 0", "of the 19 consecutive residues of the chains lie farther apart",
                                 "do not fit the topology", "--break-distance"])
    result = backmap(str(path), str(tmp_path / "pieces.pdb"), break_distance=4.5, progress=False)
    assert result.n_segments > 10


@pytest.mark.parametrize("apart_from", [3, 12])
def test_residues_that_come_apart_are_not_bonded(tmp_path, ca, apart_from):
    """Two molecules numbered on in one chain (gmx insert-molecules writes such .gro files) whose ends touch in
    frame 0: where they come apart within the leading frames the chain breaks there; later, the run stops at that
    frame, naming it (the peptide bond was kept and the frame built stretched)."""
    xyz = np.repeat(ca.xyz[:1], 14, axis=0)
    xyz[apart_from:, 10:] += np.array([2.0, 0.0, 0.0], dtype=np.float32)  # nm: residues 11-20 20 A away
    path, dcd = tmp_path / "two.pdb", tmp_path / "two.dcd"
    ca[0].save_pdb(str(path))
    md.Trajectory(xyz, ca.topology).save_dcd(str(dcd))
    if apart_from < api.DETECTION_FRAMES:
        result = backmap(str(dcd), str(tmp_path / "two_aa.pdb"), top=str(path), progress=False)
        assert result.n_segments == 2 and result.n_frames == 14
    else:
        fails(tmp_path, dcd, top=path, names=[dcd, f"frame {apart_from}", "GLY 10 and chain A residue GLY 11",
                                              "were close enough to be bonded in the first frames"])


def test_residues_missing_between_are_not_counted_as_falling_apart(tmp_path, ca):
    """A trace with many real gaps (residue numbers skip: an NMR ensemble of a peptide with residues missing) is
    built in pieces, not refused as not fitting its topology."""
    keep = [k for k in range(ca.n_atoms) if k % 3 != 1]  # every third residue missing: 6 gaps in 13 pairs
    path = tmp_path / "gapped.pdb"
    ca[0].atom_slice(keep).save_pdb(str(path))
    result = backmap(str(path), str(tmp_path / "aa.pdb"), progress=False)
    assert result.n_segments == 7


#: The C-alpha trace of 5CBA's chain B (tests/data/README.md): Kabat numbers, residues 27, 27A, 27B, 27C.
KABAT = Path(__file__).resolve().parent / "data" / "5cba_chain_b_ca.pdb.gz"


def _kabat_with(tmp_path, edit) -> Path:
    """The 5CBA trace with ``edit`` (line -> lines) applied to the line of SER 27A's CA."""
    import gzip

    lines = []
    for line in gzip.open(KABAT, "rt"):
        lines += edit(line) if line[17:27] == "SER B  27A" else [line]
    (tmp_path / "x.pdb").write_text("".join(lines))
    return tmp_path / "x.pdb"


def test_errors_name_residues_with_their_insertion_codes(tmp_path):
    """Errors named SER 27A of 5CBA 'residue XYZ 27' and 'residue SER27', as if residue 27 (also SER) were meant."""
    path = _kabat_with(tmp_path, lambda line: [line.replace("SER B  27A", "XYZ B  27A")])
    with pytest.raises(BackmapInputError, match=re.escape("x.pdb: chain B residue XYZ 27A: unknown residue 'XYZ'")):
        backmap(path, output=tmp_path / "out.pdb", method="ideal", progress=False)
    path = _kabat_with(tmp_path, lambda line: [line, line])
    with pytest.raises(BackmapInputError, match=re.escape(
            "x.pdb: duplicate atom: chain 'B' residue SER27A atom CA appears 2 times")):
        backmap(path, output=tmp_path / "out.pdb", method="ideal", progress=False)

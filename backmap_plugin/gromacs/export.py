"""GROMACS interoperability: export to GROMACS/OpenMM.

(Chains of ``.gro`` topologies are inferred on reading, see
:func:`backmap_plugin.io.chains.split_chains`.)

* :func:`export`: a backmapped structure (heavy atoms as ``backmap run``
  writes it, or with hydrogens as ``backmap refine`` writes it) as a
  ready-to-use simulation system: amber14 (``amber14-all.xml``) applied with
  OpenMM, then either ``topol.top`` + ``conf.gro`` for GROMACS (converted by
  ParmEd) or ``system.xml`` + ``state.xml`` + ``model.pdb`` for OpenMM.

Preparation: an input without hydrogens is completed as for ``backmap
refine`` (PDBFixer adds missing heavy atoms such as OXT, close CYS pairs
become disulfides, hydrogens are added at the given pH); an input with
hydrogens keeps them (missing ones are added, disulfides made). Water,
where asked for, is added with ``Modeller.addSolvent`` (cubic box as wide
as the structure's diameter plus ``2 * padding``, neutralised with Na+/Cl-).

Box and cut-offs. Without water the structure is centred in a rectangular
box with ``padding`` (default 1 nm) on each side. With or without water,
periodic images of the structure are at least ``2 * padding`` (2 nm) apart.
Without water ``system.xml`` has no cut-off (``NoCutoff``) and the
GROMACS files suit a periodic vacuum run with a cut-off below
``2 * padding`` (``cutoff-scheme = Verlet``, ``pbc = xyz``, ``coulombtype =
Cut-off`` or ``PME``, ``rcoulomb = rvdw = 1.0``). With water, ``system.xml``
uses PME with a 1 nm cut-off, and GROMACS runs want ``coulombtype = PME``,
``rcoulomb = rvdw = 1.0``, ``DispCorr = EnerPres``. ``system.xml`` constrains
bonds to hydrogen and keeps water rigid (ready for 2 fs steps); ``topol.top``
holds every bond with its force constant (choose ``constraints = h-bonds``
in the mdp) and ``[ settles ]`` for water.

Residues keep the input's numbers: in ``topol.top`` with their insertion
codes (``resnr`` 82A, as ``pdb2gmx`` writes it; GROMACS takes it into the
run input), in ``conf.gro``, which holds no codes, the numbers alone (ParmEd
counts residues from 1; water and ions added keep its count).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

import numpy as np

from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.pbc import box_around
from backmap_plugin.gromacs.defaults import DEFAULT_PADDING, EXPORT_FILES, PME_CUTOFF, WATER_MODELS
from backmap_plugin.io.atomic import atomic_write, write_text
from backmap_plugin.io.paths import NEEDS_TOPOLOGY, match_extension
from backmap_plugin.openmm.structure import (
    array_to_positions,
    complete_structure,
    create_disulfide_bonds,
    is_hydrogen,
    large_structure_message,
    positions_to_array,
    read_structure,
    residue_variants,
)
from backmap_plugin.openmm.systems import template_error

__all__ = [
    "DEFAULT_PADDING",
    "EXPORT_FILES",
    "PME_CUTOFF",
    "WATER_MODELS",
    "ExportResult",
    "export",
]

# ---------------------------------------------------------------- export


@dataclass
class ExportResult:
    """What :func:`export` wrote.

    Attributes
    ----------
    out_dir : str
        Output directory.
    to : str
        ``gromacs`` or ``openmm``.
    files : list of str
        Paths of the written files.
    n_atoms : int
        Atoms of the exported system (hydrogens, water and ions included).
    n_residues, n_chains : int
        Residues and chains of the structure (the protein; the water and
        ions added are not counted: OpenMM puts them in chains of their own).
    n_waters, n_ions : int
        Water molecules and ions added.
    n_disulfides : int
        Disulfide bonds.
    box : tuple of float
        Box edge lengths, nm.
    notes : list of str
        What was done to the input (hydrogens, models ignored ...).
    """

    out_dir: str
    to: str
    files: list
    n_atoms: int
    n_residues: int
    n_chains: int
    n_waters: int
    n_disulfides: int
    box: tuple
    notes: list = field(default_factory=list)
    n_ions: int = 0

    def summary(self) -> str:
        """One line for the terminal."""
        water = f", {self.n_waters} waters, {self.n_ions} ions" if self.n_waters else ", vacuum"
        box = " x ".join(f"{v:.2f}" for v in self.box)
        return (
            f"exported {self.n_atoms} atoms ({self.n_residues} residues in {self.n_chains} chain(s){water}, "
            f"box {box} nm) for {self.to} -> {self.out_dir}: {', '.join(os.path.basename(f) for f in self.files)}"
        )


def _force_field(forcefield, water):
    from openmm.app import ForceField

    files = [forcefield] if isinstance(forcefield, (str, os.PathLike)) else list(forcefield)
    files = [os.fspath(f) for f in files]
    if water is not None:
        if water not in WATER_MODELS:
            raise ValueError(f"unknown water model '{water}'; choose one of {', '.join(WATER_MODELS)} or None")
        files.append(WATER_MODELS[water][0])
    try:
        return ForceField(*files)
    except Exception as exc:  # ValueError / FileNotFoundError / parse errors
        raise BackmapInputError(f"cannot load force field {', '.join(files)}: {exc}") from exc


def _create_system(forcefield, topology, periodic: bool, flexible: bool):
    """amber14 system; ``flexible``: no constraints (every bond kept for ParmEd)."""
    from openmm import unit
    from openmm.app import PME, HBonds, NoCutoff

    options = {"nonbondedMethod": PME, "nonbondedCutoff": PME_CUTOFF * unit.nanometer} if periodic else {
        "nonbondedMethod": NoCutoff}
    if flexible:
        options.update(constraints=None, rigidWater=False)
    else:
        options.update(constraints=HBonds, rigidWater=True)
    try:
        return forcefield.createSystem(topology, **options)
    except Exception as exc:  # "No template found for residue ..."
        raise BackmapInputError(f"the force field cannot parametrise the structure: {template_error(exc, topology)}") \
            from exc


def _with_hydrogens(topology, positions, forcefield, pH: float):
    """Topology and positions ready for the force field, and notes.

    Input hydrogens are kept when the force field then matches every
    residue; otherwise the structure is completed from its heavy atoms.
    """
    from openmm.app import Modeller

    notes = []
    if any(is_hydrogen(a) for a in topology.atoms()):
        bonded, n_ss = create_disulfide_bonds(topology, positions)
        modeller = Modeller(bonded, positions)
        n_before = modeller.topology.getNumAtoms()
        modeller.addHydrogens(pH=pH, variants=residue_variants(bonded))
        unmatched = forcefield.getUnmatchedResidues(modeller.topology)
        if not unmatched:
            added = modeller.topology.getNumAtoms() - n_before
            notes.append("input hydrogens kept" + (f", {added} missing added" if added else ""))
            return modeller.topology, modeller.positions, n_ss, notes
        first = unmatched[0]
        notes.append(
            f"input hydrogens dropped and rebuilt at pH {pH:g} (no force-field template matched "
            f"{len(unmatched)} residue(s) as given, e.g. {first.name} {first.id} of chain {first.chain.id})"
        )
    else:
        notes.append(f"hydrogens added at pH {pH:g}")
    completed = complete_structure(topology, positions, pH=pH)
    if completed.n_added_heavy:
        notes.append(f"{completed.n_added_heavy} missing heavy atom(s) added")
    return completed.topology, completed.positions, completed.n_disulfides, notes


def _check_out_dir(out_dir: str, overwrite: bool) -> None:
    """Refuse an existing (unless ``overwrite``) or unwritable output directory."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise BackmapInputError(f"{out_dir}: exists and is not a directory")
    if os.path.isdir(out_dir) and not overwrite:
        raise BackmapInputError(
            f"{out_dir}: output directory exists; pass overwrite=True to replace its files"
        )
    if not os.path.isdir(parent):
        raise BackmapInputError(f"{out_dir}: cannot write output: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BackmapInputError(f"{out_dir}: cannot write output: no permission to write in {parent}")


def _staging_dir(out_dir: str) -> str:
    """An empty hidden directory next to ``out_dir`` for the files being written, with the mode the umask gives a
    new directory (``mkdtemp`` makes it 0700, and it becomes ``out_dir``)."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out_dir))}.partial-", dir=parent)
    os.chmod(staging, 0o777 & ~_umask())
    return staging


def _umask() -> int:
    """The process's umask (read by setting it, and set back at once)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _move_into_place(staging: str, out_dir: str) -> list:
    names = sorted(os.listdir(staging))
    if not os.path.isdir(out_dir):
        os.rename(staging, out_dir)
    else:
        for name in names:
            os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
        os.rmdir(staging)
    return [os.path.join(out_dir, name) for name in names]


def _write_gromacs(staging, topology, system, positions, box, n_input: int) -> list:
    """Write ``topol.top`` and ``conf.gro`` (ParmEd) into ``staging``, the first ``n_input`` residues (the input's)
    numbered as the input numbers them (:func:`_number_as_input`); the notes on what a ``.gro`` cannot hold."""
    import warnings

    import parmed

    xyz = positions_to_array(positions) * 10.0
    with warnings.catch_warnings(record=True) as caught:  # what ParmEd cannot convert, it drops with a warning
        warnings.simplefilter("always", parmed.exceptions.OpenMMWarning)
        try:
            structure = parmed.openmm.load_topology(topology, system, xyz=xyz)
        except Exception as exc:  # ParmEd raises many types
            raise _parmed_failed(exc) from exc
    dropped = sorted({str(w.message) for w in caught if issubclass(w.category, parmed.exceptions.OpenMMWarning)
                      and ("Unsupported" in str(w.message) or "Not supported" in str(w.message))})
    if dropped:
        raise BackmapInputError(
            f"ParmEd cannot write this force field's system to GROMACS without dropping terms ({'; '.join(dropped)}): "
            "export --to openmm keeps them, or choose a force field ParmEd converts whole (e.g. the default amber14)"
        )
    try:
        # ParmEd drops the box of a non-periodic (vacuum) system: set it here
        structure.box = np.array([*(10.0 * np.asarray(box)).tolist(), 90.0, 90.0, 90.0])
        structure.save(os.path.join(staging, "topol.top"), format="gromacs")
        structure.save(os.path.join(staging, "conf.gro"), format="gro")
    except Exception as exc:
        raise _parmed_failed(exc) from exc
    # ParmEd's header names the file it wrote: the staging directory's, which is gone once the export is in place
    top = os.path.join(staging, "topol.top")
    with open(top, encoding="utf-8") as handle:
        text = handle.read()
    write_text(top, text.replace(f"File {top} ", "File topol.top ", 1))
    return _number_as_input(staging, structure, n_input)


def _parmed_failed(exc: Exception) -> BackmapInputError:
    return BackmapInputError(f"ParmEd could not convert the system to GROMACS: {type(exc).__name__}: {exc}")


def _write_openmm(staging, topology, system, positions) -> None:
    import openmm
    from openmm.app import PDBFile

    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    state = context.getState(positions=True, velocities=True)
    for name, obj in (("system.xml", system), ("state.xml", state)):
        write_text(os.path.join(staging, name), openmm.XmlSerializer.serialize(obj))
    with atomic_write(os.path.join(staging, "model.pdb")) as handle:
        PDBFile.writeFile(topology, positions, handle, keepIds=True)


def _model_pdb_notes(topology) -> list:
    """What ``model.pdb`` (OpenMM's PDB writer) cannot hold of a topology: chain ids of several characters (it
    writes A, B ...) and residue numbers past four digits (it numbers them anew); the system and state keep the
    atoms by index."""
    long_ids = sorted({chain.id for chain in topology.chains() if len(chain.id) > 1})
    wide = [r for r in topology.residues() if len(r.id) > 4]
    notes = []
    if long_ids:
        notes.append(f"model.pdb: chain id(s) {', '.join(long_ids[:5])}{' ...' * (len(long_ids) > 5)} do not fit "
                     "PDB's one-character column: OpenMM's writer gives chains A, B ... instead")
    if wide:
        notes.append(f"model.pdb: {len(wide)} residue number(s) past 4 digits (first {wide[0].name} {wide[0].id}): "
                     "OpenMM's writer numbers them anew")
    return notes


#: A row of a ``[ atoms ]`` section (``nr type resnr ...``) and a ``; residue N NAME ...`` comment of ParmEd's
#: ``topol.top``: what precedes the residue's count, the blanks before it, the count.
_ATOMS_ROW = re.compile(r"(\s*\S+\s+\S+)(\s+)(\d+)\s")
_RESIDUE_COMMENT = re.compile(r"(;\s*residue)(\s+)(\d+)\s")


def _residue_id(residue) -> str:
    """A ParmEd residue's number and insertion code as a GROMACS topology's ``resnr`` holds them (``82``, ``82A``,
    as ``pdb2gmx`` writes them)."""
    return f"{residue.number}{(residue.insertion_code or '').strip()}"


def _molecules(structure) -> list:
    """The atoms of each molecule (bonded atoms) of a ParmEd structure, as ParmEd's GROMACS writers take them:
    molecules in the order of their first atoms (``parmed.utils.tag_molecules``), each one's atoms in order."""
    from parmed.utils import tag_molecules

    return [[structure.atoms[i] for i in sorted(atoms)] for atoms in tag_molecules(structure)]


def _renumbered(line: str, match, residue_id: str) -> str:
    """``line`` with the residue count ``match`` found in it replaced by ``residue_id``, right-aligned where the
    count was while it fits."""
    head, blanks, count = match.groups()
    return head + " " + residue_id.rjust(len(blanks) - 1 + len(count)) + line[match.end(3):]


def _data_lines(text: str):
    """``(section, fields, line)`` of each line of a GROMACS topology: the section it is in (``atoms`` ...) and its
    fields (None for a section's heading, a comment or a blank line)."""
    section = None
    for line in text.splitlines(keepends=True):
        stripped = line.split(";")[0].strip()
        if stripped.startswith("["):
            section = stripped.strip("[]").strip()
            yield section, None, line
        else:
            yield section, stripped.split() or None, line


def _molecule_types(text: str) -> list:
    """The molecule type of each molecule of the system, in order, from a topology's ``[ molecules ]``."""
    types = []
    for section, fields, _ in _data_lines(text):
        if section == "molecules" and fields:
            types += [fields[0]] * int(fields[1])
    return types


def _residues(atoms) -> list:
    """The residues of ``atoms`` (ParmEd's), in order."""
    return list(dict.fromkeys(atom.residue for atom in atoms))


def _top_numbered_as_input(text: str, molecules: list, types: list, n_input: int) -> str:
    """ParmEd's ``topol.top`` (each molecule type's residues counted from 1) with each ``[ atoms ]`` row's
    ``resnr``, and each ``; residue`` comment's number, the input's number and insertion code of the residue.

    Parameters
    ----------
    text : str
        The topology as ParmEd wrote it.
    molecules : list
        The atoms of each molecule of the structure written (:func:`_molecules`). A molecule type is numbered as
        its first molecule: identical chains share a ``[ moleculetype ]`` and so its numbers (those of a
        homodimer are mostly alike).
    types : list
        The molecule type of each molecule (:func:`_molecule_types`).
    n_input : int
        The structure's first residues, which came from the input; residues after them (water and ions the
        export added) keep ParmEd's count.

    Returns
    -------
    str
    """
    out, residues = [], []
    for section, fields, line in _data_lines(text):
        if section == "moleculetype" and fields:  # (its one line: name, nrexcl)
            residues = _residues(molecules[types.index(fields[0])])
        elif section == "atoms" and line.strip():
            match = (_ATOMS_ROW if fields else _RESIDUE_COMMENT).match(line)
            residue = residues[int(match.group(3)) - 1] if match is not None else None
            if residue is not None and residue.idx < n_input:
                line = _renumbered(line, match, _residue_id(residue))
        out.append(line)
    return "".join(out)


def _gro_number(number: int) -> int:
    """A residue number as a ``.gro`` file's five columns hold it (modulo 100000 past them, as GROMACS writes)."""
    return number if -9999 <= number <= 99999 else number % 100000


def _gro_numbered_as_input(text: str, molecules: list, n_input: int) -> str:
    """ParmEd's ``conf.gro`` (residues counted 1, 2, ... through the file) with the atoms of the first ``n_input``
    residues (the input's) in residues of the input's numbers (:func:`_gro_number`; a ``.gro`` holds no insertion
    codes).

    ParmEd writes the atoms molecule by molecule (:func:`_molecules`); each line is checked to name the atom
    expected there.
    """
    lines = text.splitlines(keepends=True)
    order = [atom for atoms in molecules for atom in atoms]
    for k, atom in enumerate(order, start=2):
        line = lines[k]
        if line[5:10].strip() != atom.residue.name[:5].strip() or line[10:15].strip() != atom.name[:5].strip():
            raise RuntimeError(f"conf.gro line {k + 1} ({line.rstrip()!r}) is not atom {atom.name} of residue "
                               f"{atom.residue.name} {_residue_id(atom.residue)}, as expected")
        if atom.residue.idx < n_input:
            lines[k] = f"{_gro_number(atom.residue.number):5d}{line[5:]}"
    return "".join(lines)


def _number_as_input(staging: str, structure, n_input: int) -> list:
    """Give the input's residues in ParmEd's ``topol.top`` and ``conf.gro`` (``staging``) the input's numbers (ParmEd
    counts residues from 1) and, in ``topol.top``, its insertion codes, which GROMACS takes into the run input.

    Parameters
    ----------
    staging : str
        The directory holding the two files.
    structure : parmed.Structure
        The structure written (its residues with the OpenMM topology's numbers and insertion codes).
    n_input : int
        Its first residues, which came from the input (water and ions added after them keep ParmEd's count).

    Returns
    -------
    list of str
        Notes: residues with insertion codes (``conf.gro`` holds none), identical chains numbered apart
        (``topol.top`` numbers them alike).
    """
    molecules = _molecules(structure)
    top, gro = os.path.join(staging, "topol.top"), os.path.join(staging, "conf.gro")
    with open(top, encoding="utf-8") as handle:
        text = handle.read()
    types = _molecule_types(text)
    write_text(top, _top_numbered_as_input(text, molecules, types, n_input))
    with open(gro, encoding="utf-8") as handle:
        write_text(gro, _gro_numbered_as_input(handle.read(), molecules, n_input))
    return _codes_note(structure.residues[:n_input]) + _shared_types_note(molecules, types, n_input)


def _codes_note(residues) -> list:
    """A note where residues have insertion codes, which ``conf.gro`` cannot hold."""
    coded = [r for r in residues if (r.insertion_code or "").strip()]
    if not coded:
        return []
    first = coded[0]
    return [f"conf.gro: {len(coded)} residue(s) with insertion codes (first {first.chain or '?'}:{first.name}"
            f"{_residue_id(first)}) written with their numbers alone (a .gro holds none); topol.top keeps the codes"]


def _shared_types_note(molecules: list, types: list, n_input: int) -> list:
    """A note where input molecules of one molecule type (identical chains) are numbered apart: ``topol.top``, and so
    GROMACS's run input, numbers them all as the first (``conf.gro`` keeps each one's numbers)."""
    first, apart = {}, []
    for molecule, name in zip(molecules, types):
        if molecule[0].residue.idx >= n_input:
            continue
        residues = _residues(molecule)
        ids = [_residue_id(r) for r in residues]
        shown = first.setdefault(name, (residues[0].chain, ids))
        if shown[1] != ids:
            apart.append(f"{residues[0].chain or '?'} as {shown[0] or '?'}")
    if not apart:
        return []
    return [f"topol.top: chains of the same atoms share a molecule type, and so its residue numbers (chain "
            f"{', '.join(apart[:5])}{' ...' * (len(apart) > 5)}); conf.gro keeps each chain's"]


def _check_structure_file(path: str) -> None:
    """Refuse a trajectory (``.xtc``, ``.dcd`` ...) as the input of :func:`export`, which takes no topology file:
    the reader's error asked for ``--top``, an option ``backmap export`` does not have."""
    ext = match_extension(path, NEEDS_TOPOLOGY)
    if ext is not None:
        raise BackmapInputError(
            f"{path}: a {ext} trajectory holds no topology, and export takes one structure: give a .pdb, .cif or "
            ".h5 file (e.g. the first frame written as .pdb, the topology of the trajectory)"
        )


def export(input_pdb, out_dir, to: str = "gromacs", forcefield="amber14-all.xml", water: str | None = None,
           overwrite: bool = False, pH: float = 7.0, padding: float = DEFAULT_PADDING,
           progress: bool = True) -> ExportResult:
    """Write a backmapped structure as a GROMACS or OpenMM simulation system.

    Parameters
    ----------
    input_pdb : str or os.PathLike
        PDB or mmCIF (optionally ``.gz``); heavy atoms only or with
        hydrogens. Only the first model is exported.
    out_dir : str or os.PathLike
        Output directory, created. Files are written to a hidden directory
        next to it and moved in when all are complete.
    to : {"gromacs", "openmm"}
        ``gromacs``: ``topol.top`` + ``conf.gro``; ``openmm``:
        ``system.xml`` + ``state.xml`` (serialized ``openmm.System`` and
        ``openmm.State``) + ``model.pdb`` (topology with hydrogens).
    forcefield : str or sequence of str
        OpenMM force-field file(s) (default ``amber14-all.xml``).
    water : str, optional
        Solvate with this water model (:data:`WATER_MODELS`: ``tip3p``,
        ``tip3pfb``, ``opc3``, ``spce``) and neutralise with Na+/Cl-; None
        (default) exports the structure in vacuum.
    overwrite : bool
        Replace the files of an existing ``out_dir`` (other files in it are
        kept); otherwise an existing ``out_dir`` is an error.
    pH : float
        pH for the hydrogens added.
    padding : float
        nm. Without water: space between the structure and each box face.
        In both cases periodic images of the structure are at least
        ``2 * padding`` apart.
    progress : bool
        Print a line on stderr before completing a structure that takes
        minutes (:func:`~backmap_plugin.openmm.structure.large_structure_message`),
        as ``refine`` does.

    Returns
    -------
    ExportResult

    Raises
    ------
    BackmapInputError
        Unreadable input or a trajectory, existing or unwritable ``out_dir``, a structure the
        force field cannot parametrise, a failed conversion.
    ValueError
        Unknown ``to`` or ``water``, negative ``padding``.

    Notes
    -----
    See the module documentation for the cut-offs and the mdp settings the
    GROMACS files are meant for.
    """
    from openmm import unit
    from openmm.app import Modeller

    if to not in EXPORT_FILES:
        raise ValueError(f"unknown export target '{to}'; choose one of {', '.join(EXPORT_FILES)}")
    if padding < 0:
        raise ValueError(f"padding must not be negative, got {padding}")
    input_pdb, out_dir = os.fspath(input_pdb), os.fspath(out_dir)
    _check_structure_file(input_pdb)
    _check_out_dir(out_dir, overwrite)
    topology, frames = read_structure(input_pdb)
    ff = _force_field(forcefield, water)
    large = large_structure_message(topology.getNumResidues(), "export", "the structure")
    if progress and large:
        print(large, file=sys.stderr, flush=True)
    topology, positions, n_ss, notes = _with_hydrogens(topology, frames[0], ff, pH)
    if len(frames) > 1:
        notes.append(f"input has {len(frames)} models; exported the first")
    xyz, box = box_around(positions_to_array(positions), padding)
    topology.setPeriodicBoxVectors(np.diag(box) * unit.nanometer)
    positions = array_to_positions(xyz)
    n_residues, n_chains = topology.getNumResidues(), topology.getNumChains()
    n_waters = n_ions = 0
    if water is not None:
        modeller = Modeller(topology, positions)
        # OpenMM's padding is the smallest distance between periodic images of
        # the solute (box width = its diameter + padding): 2 * padding matches
        # the vacuum box
        modeller.addSolvent(ff, model=WATER_MODELS[water][1], padding=2.0 * padding * unit.nanometer,
                            neutralize=True)
        topology, positions = modeller.topology, modeller.positions
        n_waters = sum(1 for r in topology.residues() if r.index >= n_residues and r.name == "HOH")
        n_ions = topology.getNumResidues() - n_residues - n_waters
        box = np.diag(positions_to_array(topology.getPeriodicBoxVectors()))
    system = _create_system(ff, topology, periodic=water is not None, flexible=to == "gromacs")
    _check_out_dir(out_dir, overwrite)  # again: it may have appeared meanwhile
    staging = _staging_dir(out_dir)
    try:
        if to == "gromacs":
            notes += _write_gromacs(staging, topology, system, positions, box, n_residues)
        else:
            _write_openmm(staging, topology, system, positions)
            notes += _model_pdb_notes(topology)
        files = _move_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(
        out_dir=out_dir,
        to=to,
        files=files,
        n_atoms=topology.getNumAtoms(),
        n_residues=n_residues,
        n_chains=n_chains,
        n_waters=n_waters,
        n_ions=n_ions,
        n_disulfides=n_ss,
        box=tuple(float(v) for v in box),
        notes=notes,
    )

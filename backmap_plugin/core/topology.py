"""Protein topology at residue level: names, chains, segments and atom slots.

:class:`ResidueRecord` is one residue of an input file after name
normalisation; :func:`read_residues` makes them from an ``mdtraj.Topology``
and reports what it drops. :class:`ProteinTopology` is the residue-level
description that every builder works on: residue types, chains, segments
(a chain split at chain breaks), and the all-atom layout derived from it
alone (no template file), with the mdtraj topology to write.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mdtraj as md
import numpy as np

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core.errors import BackmapInputError

#: Residue names that are never protein (water, ions): dropped silently
#: except for a count in the report.
_SOLVENT = frozenset(
    {"HOH", "WAT", "SOL", "TIP3", "TIP3P", "TIP4", "SPC", "T3P", "NA", "CL", "K",
     "MG", "CA", "CA2", "ZN", "NA+", "CL-", "SOD", "CLA", "POT", "ION", "CAL"}
)


def peptide_neighbours(segment: np.ndarray):
    """Peptide units of a trace and which C-alpha neighbours they have.

    Parameters
    ----------
    segment : numpy.ndarray
        (R,) segment index per residue.

    Returns
    -------
    first : numpy.ndarray
        (P,) index of CA(i) of each peptide (CA(i+1) is ``first + 1``).
    has_prev, has_next : numpy.ndarray
        (P,) bool: CA(i-1) / CA(i+2) exist in the same segment.
    """
    segment = np.asarray(segment)
    n = len(segment)
    first = np.nonzero(segment[1:] == segment[:-1])[0]
    has_prev = np.zeros(len(first), bool)
    has_next = np.zeros(len(first), bool)
    ok = first >= 1
    has_prev[ok] = segment[first[ok] - 1] == segment[first[ok]]
    ok = first + 2 < n
    has_next[ok] = segment[first[ok] + 2] == segment[first[ok]]
    return first, has_prev, has_next


@dataclass(frozen=True)
class BackboneLayout:
    """Where the peptide units and segment ends of a protein are.

    Attributes
    ----------
    first : numpy.ndarray
        (P,) index of CA(i) of each peptide unit (CA(i+1) is ``first + 1``).
    has_prev, has_next : numpy.ndarray
        (P,) bool: CA(i-1) / CA(i+2) exist in the same frame segment.
    bonded : numpy.ndarray
        (P,) bool: the unit is a real peptide bond (not across a break).
    starts, ends : numpy.ndarray
        Indices of the first / last residue of every frame segment.
    proline : numpy.ndarray
        (P,) bool: residue i+1 of the unit is a proline (all False when the
        residue types were not given).
    """

    first: np.ndarray
    has_prev: np.ndarray
    has_next: np.ndarray
    bonded: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    proline: np.ndarray


def backbone_layout(segment: np.ndarray, frame_segment: np.ndarray | None = None,
                    res_type: np.ndarray | None = None) -> BackboneLayout:
    """Peptide units and segment ends of a protein.

    Parameters
    ----------
    segment : numpy.ndarray
        (R,) segment index per residue (bonded runs).
    frame_segment : numpy.ndarray, optional
        (R,) segments for placing atoms (default ``segment``); every one has
        at least two residues. Where two consecutive residues share a frame
        segment but not a segment (a break), the peptide plane orients both
        residues' backbone but is not stretched to bond them.
    res_type : numpy.ndarray, optional
        (R,) residue types, for :attr:`BackboneLayout.proline`.
    """
    segment = np.asarray(segment)
    frame_segment = segment if frame_segment is None else np.asarray(frame_segment)
    first, has_prev, has_next = peptide_neighbours(frame_segment)
    new = np.ones(len(frame_segment), bool)
    new[1:] = frame_segment[1:] != frame_segment[:-1]
    last = np.ones(len(frame_segment), bool)
    last[:-1] = frame_segment[1:] != frame_segment[:-1]
    proline = (np.zeros(len(first), bool) if res_type is None
               else np.asarray(res_type)[first + 1] == chem.RESIDUE_INDEX["PRO"])
    return BackboneLayout(
        first, has_prev, has_next, segment[first] == segment[first + 1], np.nonzero(new)[0], np.nonzero(last)[0],
        proline,
    )


#: The attribute of an mdtraj residue that holds the insertion code its input file gave it ('' for none): mdtraj
#: drops the codes on reading (residues 82, 82A and 82B come back as three residues numbered 82), and the loaders
#: put them back (:func:`backmap_plugin.io.chains.set_insertion_codes`). A residue read from a file that holds
#: none (``.gro``, ``.tpr``, ``.h5``) has no such attribute.
INSERTION_CODE = "insertion_code"


def insertion_code(residue) -> str | None:
    """The insertion code the input file gave an mdtraj residue ('' for none; None: the file holds none)."""
    return getattr(residue, INSERTION_CODE, None)


def set_insertion_code(residue, code: str) -> None:
    """Give an mdtraj residue the insertion code ``code`` ('' for none)."""
    setattr(residue, INSERTION_CODE, str(code).strip())


def residue_number(residue) -> str:
    """An mdtraj residue's number as the input wrote it, with its insertion code (``82``, ``82A``), for messages."""
    return f"{residue.resSeq}{insertion_code(residue) or ''}"


@dataclass
class ResidueRecord:
    """One residue of an input topology, with standard names.

    Attributes
    ----------
    chain : int
        Index of the input chain.
    chain_id : str
        Chain identifier as written in the input.
    res_seq : int
        Residue number as written in the input.
    input_name : str
        Residue name as written in the input.
    name : str
        Standard three-letter name.
    atoms : dict
        Standard heavy-atom name -> atom index in the input topology.
    other_atoms : list of int
        Input atom indices of atoms that are not standard heavy atoms
        (hydrogens excluded), e.g. the single bead of a CG residue.
    insertion_code : str or None
        Insertion code as written in the input ('' for none; None: the input
        holds none, e.g. a ``.gro`` file).
    """

    chain: int
    chain_id: str
    res_seq: int
    input_name: str
    name: str
    atoms: dict = field(default_factory=dict)
    other_atoms: list = field(default_factory=list)
    insertion_code: str | None = None

    def label(self) -> str:
        """Human-readable location: ``chain A residue LYS 12`` (``12A`` with an insertion code)."""
        return (f"chain {(self.chain_id or '').strip() or '?'} residue {self.input_name} "
                f"{self.res_seq}{self.insertion_code or ''}")


def _is_hydrogen(atom: md.core.topology.Atom) -> bool:
    if atom.element is not None and atom.element.symbol in ("H", "D"):
        return True
    name = atom.name.lstrip("0123456789")
    return name.startswith("H") and atom.element is None


#: Elements of ions (metals, halogens): a bead of one is no amino acid, whatever its one-letter residue name.
ION_ELEMENTS = frozenset({"Li", "Na", "K", "Rb", "Cs", "Mg", "Ca", "Sr", "Ba", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
                          "Cd", "Hg", "Al", "F", "Cl", "Br", "I"})


def _lone_particle(heavy: list, bonded: set | None) -> bool:
    """Whether a residue of these atoms is one particle that is no amino acid bead: an ion by its element, or one the
    topology bonds to nothing where it bonds others (``bonded``: the atoms of its bonds; None where it has none)."""
    if len(heavy) != 1:
        return False
    element = heavy[0].element
    return (element is not None and element.symbol in ION_ELEMENTS) or (
        bonded is not None and heavy[0].index not in bonded)


def read_residues(topology: md.Topology, source: str = "", ignored=()) -> tuple[list[ResidueRecord], list[str]]:
    """Normalise the residues of an input topology.

    Protein residues (standard, variant or modified names; coarse-grained
    programs' names on backbone atoms, :func:`~backmap_plugin.core.chemistry.cg_program_residue_name`; one-letter codes
    in one-bead-per-residue files whose residues have no three-letter amino
    acid names and are not all W, Martini water; not a bead of an ion's
    element, :data:`ION_ELEMENTS`, nor one the topology bonds to nothing
    where it bonds others) are kept; water, ions, capping groups and
    any residue that is not an amino acid (no CA and an unknown name; in a
    one-bead-per-residue file also in a chain without amino acids: crowders)
    are dropped and reported. Otherwise an unknown name on a residue that
    has a CA atom is an error, and so is a one-letter name on such a residue
    where one-letter names are not read.

    Parameters
    ----------
    topology : mdtraj.Topology
        Input topology (all-atom or coarse-grained).
    source : str
        File name for messages.
    ignored : collection of int
        Atoms that are no part of any residue's beads (an OpenMM System's
        virtual sites), left out as hydrogens are; a residue of nothing else
        is no residue.

    Returns
    -------
    records : list of ResidueRecord
    report : list of str
        One line per dropped residue kind or renamed residue.

    Raises
    ------
    BackmapInputError
        Unknown (or, where one-letter names are not read, one-letter) residue
        name on a residue that has a CA atom and is not dropped (the first of
        them in the file), or duplicate atoms in a residue.
    """
    records: list[ResidueRecord] = []
    dropped: dict[str, int] = {}
    renamed: dict[str, str] = {}
    unknown: list = []  # (chain index, name, where, name as written) of residues with a CA atom, no amino acid
    ignored = set(ignored)
    residues = [r for r in topology.residues if not ignored or any(a.index not in ignored for a in r.atoms)]
    heavy_atoms = {r.index: [a for a in r.atoms if not _is_hydrogen(a) and a.index not in ignored] for r in residues}
    # one bead per residue: one-letter residue names are amino acids (CALVADOS 2
    # style), not ions or nucleotides; unless the protein is named in three letters
    # (then a one-letter residue is something else, e.g. a Martini water bead W)
    cg_file = bool(heavy_atoms) and np.median([len(v) for v in heavy_atoms.values()]) <= 1
    three_letter = cg_file and any(len(r.name.strip()) > 1 and chem.standard_residue_name(r.name.strip().upper())
                                   for r in residues)
    # nothing but W in one letter: Martini water beads (a file of water, with ions or not), not poly-tryptophan
    one_letter = {r.name.strip().upper() for r in residues if len(r.name.strip()) == 1}
    water_only = one_letter == {"W"}
    bonded = {atom.index for bond in topology.bonds for atom in bond} or None
    for residue in residues:
        chain_id = getattr(residue.chain, "chain_id", None) or ""
        where = f"{source}: chain {chain_id or '?'} residue {residue.name} {residue_number(residue)}"
        key = residue.name.strip().upper()
        heavy = heavy_atoms[residue.index]
        if cg_file and len(key) == 1 and not (three_letter or water_only) and _lone_particle(heavy, bonded):
            dropped[key] = dropped.get(key, 0) + 1  # an ion or crowder named K, F or C: no lysine, no cysteine
            continue
        if cg_file and len(key) == 1 and not (three_letter or water_only):
            name = chem.require_residue_name(key, where)
        elif key in _SOLVENT or key in chem.CAPS or (water_only and key == "W"):
            dropped[key] = dropped.get(key, 0) + 1
            continue
        else:
            name = chem.standard_residue_name(key) if len(key) > 1 else None
            name = name or chem.cg_program_residue_name(key, [a.name for a in heavy])
        if name is None:
            if not any(a.name.strip().upper() == "CA" for a in heavy):
                dropped[key] = dropped.get(key, 0) + 1
                continue
            # a residue with a CA atom that is no amino acid: refused (below), but left out in a CG file's chains
            # of no amino acids (crowders, a CG model's other molecules; their beads named CA too)
            unknown.append((residue.chain.index, key, where, residue.name))
            continue
        if residue.name.strip().upper() != name and len(residue.name.strip()) > 1:
            renamed[residue.name.strip().upper()] = name
        rec = ResidueRecord(residue.chain.index, chain_id, residue.resSeq, residue.name, name,
                            insertion_code=insertion_code(residue))
        for atom in heavy:
            std = chem.standard_atom_name(name, atom.name)
            if std is None:
                rec.other_atoms.append(atom.index)
            elif std in rec.atoms:
                raise BackmapInputError(f"{where}: duplicate atom {atom.name}")
            else:
                rec.atoms[std] = atom.index
        records.append(rec)
    protein_chains = {r.chain for r in records}
    for chain, key, where, name in unknown:
        if chain not in protein_chains and cg_file:
            dropped[key] = dropped.get(key, 0) + 1
        elif len(key) == 1:  # (require_residue_name would accept it)
            kind = "among three-letter ones" if cg_file else "in a file with all-atom residues"
            raise BackmapInputError(f"{where}: one-letter residue name '{name}' {kind}; one-letter codes are read "
                                    "only in one-bead-per-residue files where no residue has a three-letter amino "
                                    "acid name: use three-letter names")
        else:
            chem.require_residue_name(name, where)  # raises
    report = [f"dropped {n} non-protein residue(s) {k}" for k, n in sorted(dropped.items())]
    report += [f"renamed {k} -> {v}" for k, v in sorted(renamed.items())]
    return records, report


def bead_spacing(ca_xyz: np.ndarray) -> np.ndarray:
    """(R - 1,) distance between consecutive beads (Angstrom) of (R, 3) positions, or its median over the frames of
    (F, R, 3) ones."""
    distance = np.linalg.norm(np.diff(np.asarray(ca_xyz), axis=-2), axis=-1)
    return distance if distance.ndim == 1 else np.median(distance, axis=tuple(range(distance.ndim - 1)))


def find_segments(
    chain: np.ndarray, ca_xyz: np.ndarray, break_distance: float | np.ndarray = 4.5
) -> np.ndarray:
    """Split chains into segments at chain breaks.

    Parameters
    ----------
    chain : numpy.ndarray
        (R,) chain index per residue (residues of a chain consecutive).
    ca_xyz : numpy.ndarray
        (R, 3) C-alpha (or bead) positions of one frame, Angstrom, or (F, R,
        3) of several: a pair is a break where its median distance over the
        frames is (a soft CG bond stretches past the limit now and then;
        molecules that touch in a few frames lie apart in most).
    break_distance : float or numpy.ndarray
        A CA-CA distance above this (Angstrom) starts a new segment; an
        (R - 1,) array gives each consecutive pair its own.

    Returns
    -------
    numpy.ndarray
        (R,) segment index per residue, counting from 0.
    """
    chain = np.asarray(chain)
    ca_xyz = np.asarray(ca_xyz)
    gap = bead_spacing(ca_xyz) > break_distance
    new = np.ones(len(chain), bool)
    new[1:] = (chain[1:] != chain[:-1]) | gap
    return np.cumsum(new) - 1


def frame_segments(segment: np.ndarray, chain_ids: list) -> np.ndarray:
    """Segments for placing backbone atoms: a one-residue segment joins a neighbour.

    A residue cut off by breaks on both sides has no bonded neighbour to
    orient its backbone; it borrows the previous (else next) residue of the
    same chain as a geometric reference, and a chain of one residue the
    previous (else next) residue of the input. Bonds still follow
    ``segment``.
    """
    frame = segment.copy()
    _, start, counts = np.unique(segment, return_index=True, return_counts=True)
    n = len(segment)
    for s in start[counts == 1]:
        if s > 0 and chain_ids[s - 1] == chain_ids[s]:
            frame[s] = frame[s - 1]
        elif s + 1 < n and chain_ids[s + 1] == chain_ids[s]:
            frame[s] = frame[s + 1]
        elif s > 0:
            frame[s] = frame[s - 1]
        elif s + 1 < n:
            frame[s] = frame[s + 1]
    return np.unique(frame, return_inverse=True)[1].reshape(segment.shape)


@dataclass
class ProteinTopology:
    """Residue-level protein topology and the all-atom layout derived from it.

    Parameters
    ----------
    names : list of str
        Standard residue names.
    chain_ids : list of str
        Chain identifier per residue (as in the input).
    res_seq : numpy.ndarray
        Residue numbers as in the input.
    segment : numpy.ndarray
        Segment index per residue; a segment is a run of bonded residues,
        ending in a C terminus (OXT). ``frame_segment`` (derived) joins
        one-residue segments to a neighbour of the same chain for placing
        their backbone.
    labels : list of str, optional
        Location of each residue for messages (default from chain and number).
    insertion_codes : list, optional
        Insertion code per residue as in the input ('' for none, None where
        the input holds none); default None for every residue.
    """

    names: list
    chain_ids: list
    res_seq: np.ndarray
    segment: np.ndarray
    labels: list = None
    insertion_codes: list = None

    def __post_init__(self):
        self.res_seq = np.asarray(self.res_seq, dtype=np.int64)
        self.segment = np.asarray(self.segment, dtype=np.int64)
        if self.insertion_codes is None:
            self.insertion_codes = [None] * len(self.names)
        if self.labels is None:
            self.labels = [f"chain {c or '?'} residue {n} {self.residue_id(k)}"
                           for k, (c, n) in enumerate(zip(self.chain_ids, self.names))]
        self.res_type = np.array([chem.RESIDUE_INDEX[n] for n in self.names], dtype=np.int64)
        last = np.ones(len(self.names), bool)
        last[:-1] = self.segment[1:] != self.segment[:-1]
        self.c_terminal = last
        self.frame_segment = frame_segments(self.segment, self.chain_ids)
        self.backbone_layout = backbone_layout(self.segment, self.frame_segment, self.res_type)
        mask = chem.SLOT_EXISTS[self.res_type].copy()
        mask[:, chem.SLOT_OXT] = last
        self.slot_mask = mask
        index = np.full(mask.shape, -1, dtype=np.int64)
        index[mask] = np.arange(mask.sum())
        self.atom_index = index

    @property
    def n_residues(self) -> int:
        """Number of residues."""
        return len(self.names)

    def residue_id(self, k: int) -> str:
        """Residue ``k``'s number as the input wrote it, with its insertion code (``82``, ``82A``)."""
        return f"{self.res_seq[k]}{self.insertion_codes[k] or ''}"

    @property
    def n_atoms(self) -> int:
        """Number of heavy atoms in the all-atom model."""
        return int(self.slot_mask.sum())

    def atom_order(self) -> tuple[np.ndarray, np.ndarray]:
        """(residue, slot) of every all-atom atom, in output order.

        Output order inside a residue follows the slots except that OXT
        comes last, which is the slot order already.
        """
        res, slot = np.nonzero(self.slot_mask)
        return res, slot

    def to_mdtraj(self, disulfides=()) -> md.Topology:
        """The all-atom heavy-atom topology, one chain per segment.

        Chains keep the input chain identifiers (a chain split by a break
        becomes several chains with the same identifier, each ending in TER)
        and residues keep their numbers. Bonds include peptide bonds inside
        segments, and the SG-SG bonds of ``disulfides`` ((P, 2) residue
        indices of cysteine pairs), which the writers record (PDB SSBOND and
        CONECT, mmCIF struct_conn) for readers that do not find disulfides by
        distance (mdtraj, OpenMM's PDBx reader).
        """
        top = md.Topology()
        chain = None
        sg = {}
        for i, name in enumerate(self.names):
            if i == 0 or self.segment[i] != self.segment[i - 1]:
                chain = top.add_chain(chain_id=self.chain_ids[i])
            residue = top.add_residue(name, chain, resSeq=int(self.res_seq[i]))
            if self.insertion_codes[i] is not None:
                set_insertion_code(residue, self.insertion_codes[i])
            for atom in chem.residue_atom_names(name, bool(self.c_terminal[i])):
                added = top.add_atom(atom, md.element.get_by_symbol(chem.element_of(name, atom)), residue)
                if atom == "SG":
                    sg[i] = added
        atoms = list(top.atoms)
        for a, b in self.bonds()[0]:
            top.add_bond(atoms[a], atoms[b])
        for a, b in np.asarray(disulfides, dtype=np.int64).reshape(-1, 2):
            top.add_bond(sg[int(a)], sg[int(b)])
        return top

    def scatter(self, slots):
        """Residue slot array (..., R, N_SLOTS, 3) -> atom array (..., n_atoms, 3).

        Works on numpy arrays and torch tensors.
        """
        res, slot = self.atom_order()
        return slots[..., res, slot, :]

    def bonds(self) -> tuple[np.ndarray, np.ndarray]:
        """Bonds of the all-atom model and their ideal lengths.

        Returns
        -------
        pairs : numpy.ndarray
            (n_bonds, 2) atom indices (intra-residue, OXT and peptide bonds
            inside segments).
        ideal : numpy.ndarray
            (n_bonds,) Engh & Huber lengths, Angstrom.
        """
        pairs, ideal = [], []
        for i, name in enumerate(self.names):
            spec = chem.RESIDUES[name]
            index = self.atom_index[i]
            for (a, b), length in zip(spec.bonds, spec.bond_lengths):
                pairs.append((index[spec.atoms.index(a)], index[spec.atoms.index(b)]))
                ideal.append(length)
            if self.c_terminal[i]:
                pairs.append((index[chem.SLOT_C], index[chem.SLOT_OXT]))
                ideal.append(chem.BOND_C_OXT)
            else:
                pairs.append((index[chem.SLOT_C], self.atom_index[i + 1, chem.SLOT_N]))
                ideal.append(chem.BOND_C_N)
        return np.array(pairs, dtype=np.int64), np.array(ideal)


def protein_topology(
    records: list[ResidueRecord], ca_xyz: np.ndarray, break_distance: float | np.ndarray = 4.5
) -> ProteinTopology:
    """Make a :class:`ProteinTopology` from normalised residues.

    Parameters
    ----------
    records : list of ResidueRecord
    ca_xyz : numpy.ndarray
        (R, 3) bead / C-alpha positions of one frame (Angstrom), or (F, R, 3)
        of several, used to find chain breaks (:func:`find_segments`).
    break_distance : float or numpy.ndarray
        Chain-break threshold (Angstrom), or one per consecutive pair
        (:func:`find_segments`).
    """
    chain = np.array([r.chain for r in records])
    segment = find_segments(chain, ca_xyz, break_distance)
    return ProteinTopology(
        names=[r.name for r in records],
        chain_ids=[r.chain_id for r in records],
        res_seq=np.array([r.res_seq for r in records]),
        segment=segment,
        labels=[r.label() for r in records],
        insertion_codes=[r.insertion_code for r in records],
    )


def gather_slots(xyz: np.ndarray, records: list[ResidueRecord]) -> tuple[np.ndarray, np.ndarray]:
    """Arrange the heavy atoms of an all-atom input in residue slots.

    Parameters
    ----------
    xyz : numpy.ndarray
        (F, n_atoms, 3) input coordinates.
    records : list of ResidueRecord
        Residues of the input (from :func:`read_residues`).

    Returns
    -------
    slots : numpy.ndarray
        (F, R, N_SLOTS, 3) coordinates, zero where absent.
    present : numpy.ndarray
        (R, N_SLOTS) bool, the atom exists in the input.
    """
    n_res = len(records)
    index = np.zeros((n_res, chem.N_SLOTS), dtype=np.int64)
    present = np.zeros((n_res, chem.N_SLOTS), dtype=bool)
    for i, rec in enumerate(records):
        spec = chem.RESIDUES[rec.name]
        for atom, idx in rec.atoms.items():
            s = chem.SLOT_OXT if atom == "OXT" else spec.atoms.index(atom)
            index[i, s] = idx
            present[i, s] = True
    slots = xyz[:, index.ravel(), :].reshape(xyz.shape[0], n_res, chem.N_SLOTS, 3)
    slots = np.where(present[None, :, :, None], slots, 0.0).astype(xyz.dtype)
    return slots, present


def equivalent_slot_pairs(res_names: list[str], present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chemically equivalent atom pairs (:data:`~backmap_plugin.core.chemistry.SYMMETRIC_PAIRS`) in slot arrays.

    Parameters
    ----------
    res_names : list of str
        Residue names (standard, as :func:`read_residues` gives them).
    present : numpy.ndarray
        (R, N_SLOTS) bool: a pair counts only where both atoms are present.

    Returns
    -------
    pairs : numpy.ndarray
        (P, 2) indices into the flattened (R * N_SLOTS) slots.
    group : numpy.ndarray
        (P,) one group per residue: its pairs swap together
        (:func:`~backmap_plugin.core.metrics.match_equivalent_atoms`).
    """
    pairs, group = [], []
    for i, name in enumerate(res_names):
        spec = chem.RESIDUES.get(name)
        slots = [(spec.atoms.index(a), spec.atoms.index(b)) for a, b in chem.SYMMETRIC_PAIRS.get(name, [])]
        if slots and all(present[i, a] and present[i, b] for a, b in slots):
            pairs += [(i * chem.N_SLOTS + a, i * chem.N_SLOTS + b) for a, b in slots]
            group += [i] * len(slots)
    group = np.unique(np.asarray(group, dtype=np.int64), return_inverse=True)[1].reshape(-1)
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2), group

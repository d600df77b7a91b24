"""The protein beads of a Martini 3 topology (``martinize2`` output, GROMACS files).

:func:`martini_residues` reads an ``mdtraj.Topology`` (from ``.pdb``,
``.gro``, or a ``.tpr`` through :func:`backmap_plugin.io.tpr.load_tpr_topology`)
and keeps the protein: residues with an amino-acid name (as martinize2 writes
it, :data:`backmap_plugin.core.martini3.MARTINI3_RESIDUES`, or a force-field
variant of :data:`backmap_plugin.core.chemistry.RESIDUE_ALIASES`) whose atoms
are Martini bead names, ``BB`` and ``SC1`` ... ``SC5``. Every such residue
must have exactly the beads of Martini 3 (:data:`~backmap_plugin.core.martini3.MARTINI3_BEADS`).

Left out, with a count in :attr:`MartiniIntake.skipped`:

* residues that are not protein (water ``W``, ions ``NA``, ``CL``, lipids,
  Martini DNA ...), by residue name;
* Go-model virtual sites (``martinize2 -go``): atoms named ``CA`` of an
  amino-acid residue in a file with protein beads. martinize2 puts them
  after the molecule's beads, so ``.pdb``, ``.gro`` and the project's ``.tpr``
  reader see a second block of one-atom residues (in a ``.tpr`` read by
  MDAnalysis numbered on after the protein); other readers may put them in
  the residue of their BB bead. Either way they are skipped.

Chains: by chain id where the file has them; a new chain also starts where
residue numbers do not increase (:func:`backmap_plugin.io.chains.chain_starts`;
``.gro`` files have no chain ids), where other molecules lie between two
protein residues, and, when coordinates are given, where two consecutive BB
beads of a chain without id are more than :data:`CHAIN_BREAK_DISTANCE` apart.
Chains without id get ids A ... Z, a ... z, 0 ... 9 in turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import mdtraj as md
import numpy as np

from backmap_plugin.core import chemistry as chem
from backmap_plugin.core import martini3 as m3
from backmap_plugin.core.errors import BackmapInputError
from backmap_plugin.core.topology import ResidueRecord, insertion_code, residue_number
from backmap_plugin.io.chains import chain_starts, input_chain_id

#: Martini protein bead names in bead order (BB, then side-chain beads).
BEAD_NAMES = ("BB",) + tuple(f"SC{k}" for k in range(1, m3.MAX_BEADS))
_SIDE_BEAD = re.compile(r"^SC\d+$")
#: Atom name of martinize2's Go-model virtual sites.
GO_SITE_NAME = "CA"
#: Key of the Go virtual sites in :attr:`MartiniIntake.skipped`.
GO_SITES = "Go virtual sites (CA)"
#: BB-BB distance (Angstrom) that starts a new chain in files without chain ids (when coordinates are
#: given); bonded BB beads lie 2.5-4.0 Angstrom apart.
CHAIN_BREAK_DISTANCE = 6.0
#: BB-BB distance (Angstrom) above which two residues' beads do not look bonded, for ordering residues that share
#: a number (bonded BB beads of train crystal structures: 99.9 % below 3.95 Angstrom; i, i+2 in a helix about 5.5).
BONDED_BB_MAX = 4.6
#: Side-chain beads of Martini 2.2 (vermouth's ``martini22`` force field) where they differ from
#: Martini 3: alanine has none, tyrosine three, tryptophan four. Checked in this order for messages.
MARTINI2_SIDE_CHAIN_BEADS = {"TRP": 4, "TYR": 3, "ALA": 0}
#: Bead names only polarizable Martini 2 (vermouth's ``martini22p``) uses: the charged dummies of polar side chains.
MARTINI2_POLAR_BEADS = {"SCP", "SCN"}
#: Residue names only Martini 2 uses (neutral forms of vermouth's martini22).
MARTINI2_NAMES = {"ASP0": "ASP", "GLU0": "GLU", "ARG0": "ARG"}


@dataclass
class MartiniIntake:
    """The protein beads of a Martini 3 topology.

    Attributes
    ----------
    records : list of ResidueRecord
        One per protein residue in file order: standard ``name``,
        ``input_name`` as written, chain index and id, ``res_seq``;
        ``atoms`` is empty and ``other_atoms`` holds the residue's bead
        atom indices in bead order.
    bead_index : numpy.ndarray
        (R, MAX_BEADS) int64: input atom index of bead ``b`` (BB = 0, SC1 =
        1, ... as :data:`backmap_plugin.core.martini3.MARTINI3_BEADS`), -1
        where the residue type has no such bead.
    skipped : dict of str to int
        What was left out: residues by name (``{"W": 1151, "NA": 15}``) and
        :data:`GO_SITES` (atoms).
    report : list of str
        Notes for the user (what was skipped, renamed, how many chains).
    """

    records: list
    bead_index: np.ndarray
    skipped: dict = field(default_factory=dict)
    report: list = field(default_factory=list)


def _upper(name: str) -> str:
    return name.strip().upper()


def _is_bead(name: str) -> bool:
    return name == "BB" or bool(_SIDE_BEAD.match(name))


def _standard_name(name: str) -> str | None:
    """Standard residue name of a Martini protein residue name, or None."""
    key = _upper(name)
    if key in m3.MARTINI3_RESIDUES:
        return m3.MARTINI3_RESIDUES[key]
    key = chem.RESIDUE_ALIASES.get(key, key)
    return key if key in chem.RESIDUE_INDEX else None


def has_martini_beads(topology: md.Topology) -> bool:
    """Whether a topology holds Martini protein beads: an atom named BB in a residue with an amino-acid name.

    Parameters
    ----------
    topology : mdtraj.Topology

    Returns
    -------
    bool
    """
    for residue in topology.residues:
        name = _upper(residue.name)
        if _standard_name(name) is None and name not in MARTINI2_NAMES:
            continue
        if any(_upper(atom.name) == "BB" for atom in residue.atoms):
            return True
    return False


def _where(source: str, chain_id, residue) -> str:
    return f"{source}: chain {chain_id or '?'} residue {residue.name} {residue_number(residue)}"


def _check_martini2(protein: list, source: str) -> None:
    """Raise when the side-chain bead counts (and names) look like Martini 2 rather than Martini 3, or when there
    are no side-chain beads at all (a backbone trace)."""
    if len(protein) > 1 and all(b == "BB" for *_, beads, _ in protein for b in beads):
        raise BackmapInputError(
            f"{source}: Martini BB beads only (none of the {len(protein)} residues has side-chain beads): the "
            "Martini 3 builders need the side-chain beads martinize2 writes; to build from the backbone alone, "
            "name the beads CA and pass --mapping ca (BB beads lie near the C-alpha atoms, not on them)"
        )
    martini2, martini3 = [], []
    for residue, std, beads, where in protein:
        n_side = sum(1 for b in beads if b != "BB")
        if std in MARTINI2_SIDE_CHAIN_BEADS:
            n3 = len(m3.MARTINI3_BEADS[chem.RESIDUE_INDEX[std]]) - 1
            if n_side == MARTINI2_SIDE_CHAIN_BEADS[std]:
                martini2.append((std, n_side, n3, where))
            elif n_side == n3:
                martini3.append(where)
    names2 = sorted({_upper(r.name) for r, *_ in protein if _upper(r.name) in MARTINI2_NAMES})
    if martini3 or not (martini2 or names2):
        return
    if martini2:
        order = list(MARTINI2_SIDE_CHAIN_BEADS)
        std, n2, n3, where = min(martini2, key=lambda item: order.index(item[0]))
        count = "no side-chain bead" if n2 == 0 else f"{n2} side-chain beads"
        why = f"{std} has {count}, Martini 3 has {n3}"
    else:
        why = f"residue names {', '.join(names2)} are Martini 2's"
        where = source
    raise BackmapInputError(
        f"{where}: Martini 2 beads ({why}): Martini 2 is not supported; "
        "make the coarse-grained model with Martini 3 (martinize2 -ff martini3001)"
    )


#: BB beads of ElNeDyn (Martini 2's elastic network) sit on the C-alpha atoms: consecutive ones 3.80 A apart, with
#: a spread below this (A); Martini 3 (and Martini 2.2) BB beads, at the backbone atoms' centres, are 3.2-3.3 A apart
#: with a spread of about 0.2 A. Inputs with fewer consecutive pairs are not judged.
ELNEDYN_SPREAD = 0.1
ELNEDYN_MIN_PAIRS = 5


def _check_elnedyn(protein: list, xyz: np.ndarray, source: str) -> None:
    """Raise when the BB beads sit on C-alpha atoms (ElNeDyn, a Martini 2 model whose side-chain bead counts may
    match Martini 3's: a protein without ALA, TRP or TYR passed that test)."""
    bb = np.array([beads["BB"] for _, _, beads, _ in protein if "BB" in beads])
    chain = np.array([residue.chain.index for residue, _, beads, _ in protein if "BB" in beads])
    distance = np.linalg.norm(np.diff(np.asarray(xyz, dtype=np.float64)[bb], axis=0), axis=-1)
    distance = distance[(chain[1:] == chain[:-1]) & (distance < CHAIN_BREAK_DISTANCE)]
    if len(distance) < ELNEDYN_MIN_PAIRS:
        return
    median, spread = float(np.median(distance)), float(np.std(distance))
    if abs(median - chem.BOND_CA_CA_TRANS) < 0.15 and spread < ELNEDYN_SPREAD:
        raise BackmapInputError(
            f"{source}: the BB beads are {median:.2f} +- {spread:.2f} A apart: they sit on the C-alpha atoms, as "
            "ElNeDyn (Martini 2) places them; Martini 3 BB beads lie 3.2-3.3 A apart. Martini 2 is not supported; "
            "make the coarse-grained model with Martini 3 (martinize2 -ff martini3001)"
        )


def _check_beads(protein: list) -> None:
    """Raise, naming the residue, where a residue's beads are not those Martini 3 gives its type.

    A residue of BB alone followed by one of the same name with side-chain
    beads alone is a residue cut into one residue per bead (``gmx
    convert-tpr -n`` of GROMACS 2022 writes every atom of an index group as
    its own residue): the message says how to make the part's topology
    instead.
    """
    for (_, std, beads, where), (_, next_std, next_beads, _) in zip(protein[:-1], protein[1:]):
        if list(beads) == ["BB"] and next_std == std and next_beads and "BB" not in next_beads:
            raise BackmapInputError(
                f"{where}: the beads of residue {std} are residues of their own (BB, then "
                f"{', '.join(next_beads)}), as in a .tpr made with gmx convert-tpr -n; make the topology of the "
                "part with gmx trjconv -s run.tpr -n index.ndx -dump 0 -o part.gro (the group of the trajectory) "
                "and pass that as --top"
            )
    for _, std, beads, where in protein:
        expected = m3.MARTINI3_BEADS[chem.RESIDUE_INDEX[std]]
        missing = [b for b in expected if b not in beads]
        extra = [b for b in beads if b not in expected]
        if missing or extra:
            problems = ["missing " + ", ".join(missing)] if missing else []
            problems += ["extra " + ", ".join(extra)] if extra else []
            raise BackmapInputError(
                f"{where}: Martini 3 {std} has beads {', '.join(expected)}; this residue has "
                f"{', '.join(beads) or 'none'} ({'; '.join(problems)}): the topology is not the Martini 3 model "
                "of this protein as martinize2 writes it; pass the run's own .tpr or .gro (or martinize2's -x "
                "structure) as --top"
            )


def _order_shared_numbers(protein: list, xyz: np.ndarray) -> list:
    """Put each run of residues that share a chain and a number in the order their BB beads are bonded in.

    ``martinize2 -resid input`` writes residues that share a number (54,
    54A, 54B: insertion codes, which ``.gro`` and ``.tpr`` files cannot
    hold) sorted by residue name, not in sequence. A run is put in the
    order of a walk from the residue before it (else backwards from the
    one after it) to the nearest BB bead not yet visited, when that walk
    has fewer BB-BB steps longer than :data:`BONDED_BB_MAX` (counting the
    steps to the neighbours) than the file's order. ``protein`` is
    reordered in place.

    Returns
    -------
    list
        The first residue (as read) of every run that was reordered.
    """
    bb = np.array([xyz[beads["BB"]] for _, _, beads, _ in protein], dtype=np.float64)
    key = [(residue.chain.index, residue.resSeq) for residue, *_ in protein]
    reordered, start = [], 0
    while start < len(protein):
        end = start + 1
        while end < len(protein) and key[end] == key[start]:
            end += 1
        if end - start > 1:
            before = bb[start - 1] if start > 0 and key[start - 1][0] == key[start][0] else None
            after = bb[end] if end < len(protein) and key[end][0] == key[start][0] else None
            order = _bonded_walk(bb[start:end], before, after)
            if order is not None:
                reordered.append(protein[start][0])
                protein[start:end] = [protein[start + k] for k in order]
        start = end
    return reordered


def _bonded_walk(bb: np.ndarray, before: np.ndarray | None, after: np.ndarray | None) -> list | None:
    """The nearest-neighbour order of the BB beads ``bb`` (k, 3) between their neighbours, or None to keep theirs."""
    if before is None and after is None:
        return None
    points = bb if before is not None else bb[::-1]
    current, left, order = (before if before is not None else after), list(range(len(bb))), []
    while left:
        nearest = min(left, key=lambda k: float(np.linalg.norm(points[k] - current)))
        order.append(nearest)
        left.remove(nearest)
        current = points[nearest]
    if before is None:
        order = [len(bb) - 1 - k for k in reversed(order)]

    def unbonded(sequence):
        path = [p for p in [before, *bb[sequence], after] if p is not None]
        return int((np.linalg.norm(np.diff(np.array(path), axis=0), axis=-1) > BONDED_BB_MAX).sum())

    return order if unbonded(order) < unbonded(list(range(len(bb)))) else None


def martini_residues(topology: md.Topology, source: str, xyz: np.ndarray | None = None) -> MartiniIntake:
    """The protein residues of a Martini 3 topology and where their beads are.

    Parameters
    ----------
    topology : mdtraj.Topology
        The CG topology as read (``.pdb``, ``.gro``, ``.tpr``).
    source : str
        File name for messages.
    xyz : numpy.ndarray, optional
        (n_atoms, 3) coordinates of one frame in Angstrom: chains without
        ids are also split where consecutive BB beads are more than
        :data:`CHAIN_BREAK_DISTANCE` apart.

    Returns
    -------
    MartiniIntake

    Raises
    ------
    BackmapInputError
        Naming the file, chain and residue: a residue whose beads are not
        Martini 3's for its type (missing or extra side-chain beads,
        duplicate or unknown bead names); Martini 2 beads (side-chain bead
        counts of ALA, TYR, TRP; ElNeDyn's BB beads on the C-alpha atoms,
        when ``xyz`` is given); an unknown residue name on a residue with
        a BB bead; a file with Go virtual sites (atoms named CA) but no BB
        beads; a file without Martini protein beads.
    """
    skipped: dict[str, int] = {}
    go_sites = 0
    # (residue, standard name, {bead: atom index}, where) of every protein residue, in file order
    protein: list = []
    ca_only: list = []  # residues holding nothing but atoms named CA
    between = set()  # residue index of protein residues preceded by a skipped residue
    last_protein_chain = None
    saw_other = False
    for residue in topology.residues:
        name = _upper(residue.name)
        atoms = [(_upper(a.name), a.index) for a in residue.atoms]
        std = _standard_name(name)
        has_bb = any(a == "BB" for a, _ in atoms)
        amino = std is not None or name in MARTINI2_NAMES
        if not (amino or has_bb):  # solvent, ions, lipids: counted and left out
            skipped[residue.name.strip()] = skipped.get(residue.name.strip(), 0) + 1
            saw_other = True
            continue
        has_side = any(_SIDE_BEAD.match(a) for a, _ in atoms)
        where = _where(source, getattr(residue.chain, "chain_id", None) or "", residue)
        if amino and atoms and all(a == GO_SITE_NAME for a, _ in atoms):
            ca_only.append((residue, where))
            continue
        if has_bb and not amino:
            bead_list = ", ".join(a for a, _ in atoms)
            raise BackmapInputError(
                f"{where}: unknown residue '{residue.name}' with Martini bead names ({bead_list}); "
                "Martini 3 protein residues are " + ", ".join(sorted(m3.MARTINI3_RESIDUES))
            )
        if not (amino and (has_bb or has_side)):
            skipped[residue.name.strip()] = skipped.get(residue.name.strip(), 0) + 1
            saw_other = True
            continue
        beads: dict[str, int] = {}
        for atom_name, index in atoms:
            if atom_name == GO_SITE_NAME and has_bb:
                go_sites += 1
                continue
            if atom_name in MARTINI2_POLAR_BEADS:
                raise BackmapInputError(
                    f"{where}: bead {atom_name} is polarizable Martini 2's (martini22p): Martini 2 is not supported; "
                    "make the coarse-grained model with Martini 3 (martinize2 -ff martini3001)"
                )
            if not _is_bead(atom_name):
                raise BackmapInputError(
                    f"{where}: atom {atom_name} is not a Martini protein bead (BB, SC1 ... SC5); "
                    "modified residues are not supported"
                )
            if atom_name in beads:
                raise BackmapInputError(f"{where}: duplicate bead {atom_name}")
            beads[atom_name] = index
        if saw_other and last_protein_chain is not None:
            between.add(residue.index)
        saw_other = False
        last_protein_chain = residue.chain.index
        protein.append((residue, std or MARTINI2_NAMES[name], beads, where))

    if not protein:
        if ca_only:
            raise BackmapInputError(
                f"{source}: no Martini protein beads (BB): the {len(ca_only)} atom(s) named CA in amino-acid "
                "residues look like a Go model's virtual sites without the protein beads; give the file with "
                "the BB and SC beads (martinize2's -x output, or the whole system)"
            )
        raise BackmapInputError(
            f"{source}: no Martini protein beads: no residue with an amino-acid name has beads named BB or SC1 ... SC5"
        )
    go_sites += sum(residue.n_atoms for residue, _ in ca_only)
    _check_martini2(protein, source)
    _check_beads(protein)
    if xyz is not None:
        _check_elnedyn(protein, xyz, source)
    reordered = [] if xyz is None else _order_shared_numbers(protein, xyz)

    records: list[ResidueRecord] = []
    bead_index = np.full((len(protein), m3.MAX_BEADS), -1, dtype=np.int64)
    renamed: dict[str, str] = {}
    res_seq = np.array([residue.resSeq for residue, *_ in protein])
    restart = chain_starts(res_seq)
    n_chains = 0
    chain_id = ""
    previous = None
    for i, (residue, std, beads, where) in enumerate(protein):
        expected = m3.MARTINI3_BEADS[chem.RESIDUE_INDEX[std]]
        file_id = getattr(residue.chain, "chain_id", None) or ""
        file_id = str(file_id).strip()
        new = previous is None or residue.chain.index != previous.chain.index or bool(restart[i])
        new = new or residue.index in between
        if not new and xyz is not None and not file_id:
            gap = np.linalg.norm(xyz[beads["BB"]] - xyz[protein[i - 1][2]["BB"]])
            new = bool(gap > CHAIN_BREAK_DISTANCE)
        if new:
            chain_id = file_id or input_chain_id(n_chains)
            n_chains += 1
        previous = residue
        order = [beads[b] for b in expected]
        bead_index[i, : len(order)] = order
        name = residue.name.strip()
        if _upper(name) != std:
            renamed[name] = std
        records.append(ResidueRecord(n_chains - 1, chain_id, int(residue.resSeq), name, std, {}, order,
                                     insertion_code(residue)))

    if go_sites:
        skipped[GO_SITES] = go_sites
    n_beads = int((bead_index >= 0).sum())
    report = [f"Martini 3 protein: {len(records)} residues, {n_beads} beads, {n_chains} chain(s)"]
    others = {k: v for k, v in skipped.items() if k != GO_SITES}
    if others:
        report.append("skipped (not protein): " + ", ".join(f"{n} {k}" for k, n in sorted(others.items(),
                                                                                    key=lambda kv: -kv[1])))
    if go_sites:
        report.append(f"skipped {go_sites} Go virtual site(s): atoms named CA of martinize2 -go, on the BB beads")
    if reordered:
        residue = reordered[0]
        report.append(
            f"{len(reordered)} run(s) of residues sharing a number read in the order their BB beads are bonded in, "
            f"not the file's (martinize2 -resid input sorts such residues by name; first: chain "
            f"{residue.chain.chain_id or '?'} residue {residue_number(residue)})"
        )
    report += [f"renamed {k} -> {v}" for k, v in sorted(renamed.items())]
    if "HID" in renamed:
        report.append("HID: martinize2's amber mapping (hid.amber.map) groups the ring atoms of HID into beads "
                      "otherwise than for HIS; these residues are fitted to the HIS beads")
    return MartiniIntake(records, bead_index, skipped, report)


def martini_beads(xyz: np.ndarray, bead_index: np.ndarray) -> np.ndarray:
    """Bead coordinates of frames, arranged per residue.

    Parameters
    ----------
    xyz : numpy.ndarray
        (F, n_atoms, 3) input coordinates (any unit).
    bead_index : numpy.ndarray
        (R, MAX_BEADS) from :func:`martini_residues`.

    Returns
    -------
    numpy.ndarray
        (F, R, MAX_BEADS, 3) same dtype; zero where a residue has no such bead.
    """
    present = bead_index >= 0
    out = xyz[:, np.where(present, bead_index, 0)]
    return np.where(present[None, :, :, None], out, 0).astype(xyz.dtype, copy=False)

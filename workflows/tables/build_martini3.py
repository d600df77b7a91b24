"""Derive the Martini 3 bead table of :mod:`backmap_plugin.core.martini3` from the installed vermouth.

``martinize2`` (package ``vermouth``) places every Martini 3 bead at the
weighted average of the atoms that the ``martini3001`` mapping files assign
to it. This script reads those files from the installed vermouth and writes
``backmap_plugin/core/tables/martini3.json``; nothing in the table is typed
by hand.

What is read (paths inside the vermouth package)
------------------------------------------------
- ``data/mappings/martini3001/<res>.charmm36.map``: one file per residue
  (``martinize2 -from charmm``, its default). Residue names that only have
  an Amber file (ASH, GLH, HID, HIE, HIP, LYN: ``martinize2 -from amber``)
  are read from ``<res>.amber.map``. The ``[ atoms ]`` section lists each
  atom with its beads; the weights follow vermouth's reader
  (``vermouth.map_input._compute_weights``): an atom listed with beads
  ``B1 B1 B2`` counts 2/3 in B1 and 1/3 in B2; ``!B`` puts the atom in bead
  B with weight 0 (CHARMM's ``HA`` in ``BB``, for instance).
- ``data/mappings/martini3001/modifications.charmm36.mapping``: the termini
  (``N-ter``, ``C-ter``, ``COOH-ter``, ``NH2-ter``); ``C-ter`` puts ``OXT``
  in ``BB`` with weight 1 (``[ mapping ]`` lines ``atom bead [weight]``,
  weight 1 when not given).
- ``data/force_fields/martini3001/aminoacids.ff``: the bead order of each
  residue (``[ atoms ]`` of its block), bead masses, virtual sites
  (``[ virtual_sitesn ]``: TRP SC3) and the residue names martinize2 writes
  (``protein_resnames`` macro).
- ``data/force_fields/martini3001/general.ff``: ``center_weight "mass"``,
  i.e. each atom's weight is multiplied by its mass.
- ``vermouth.processors.attach_mass.ATOM_MASSES``: the masses vermouth uses
  (integers: H 1, C 12, N 14, O 16, S 32), stored in the table.

Atom names are translated to this project's names with
:func:`backmap_plugin.core.chemistry.standard_atom_name` (CHARMM ILE ``CD``
-> ``CD1``); every heavy atom of the residue must be mapped exactly once.
Hydrogens are kept apart (``hydrogens`` per bead): martinize2 counts them
when the input has them (weight 1 where the file gives no ``!``), so a bead
computed from heavy atoms only equals martinize2's bead only for an input
without hydrogens (or run with ``martinize2 -ignh``).

Usage::

    python workflows/tables/build_martini3.py -o backmap_plugin/core/tables/martini3.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backmap_plugin.core import chemistry as chem

#: martinize2 residue names that :func:`chem.standard_residue_name` does not know.
EXTRA_PARENTS = {"ASPP": "ASP", "GLUP": "GLU"}
#: Termini modifications whose heavy atoms go into the table.
TERMINI = ("N-ter", "C-ter", "COOH-ter", "NH2-ter")
FORCE_FIELD = "martini3001"
DEFAULT_OUTPUT = ROOT / "backmap_plugin" / "core" / "tables" / "martini3.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sections(path: Path):
    """(section name, line) of every non-empty, comment-free line of a GROMACS-style file."""
    section = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip().lower()
            yield section, None
            continue
        yield section, line


def map_weights(targets: dict[str, list[str]], name: str) -> dict[str, dict[str, float]]:
    """Bead weights of the atoms of one ``[ atoms ]`` section, as vermouth computes them.

    Parameters
    ----------
    targets : dict
        Atom name -> bead names as listed (``!`` prefix = weight 0).
    name : str
        Residue name, for messages.

    Returns
    -------
    dict
        Atom name -> {bead: weight}; an atom's non-zero weights sum to 1.
    """
    weights: dict[str, dict[str, float]] = {}
    for atom, beads in targets.items():
        counted = Counter(b for b in beads if not b.startswith("!"))
        total = sum(counted.values())
        weights[atom] = {b: n / total for b, n in counted.items()}
        for b in beads:
            if b.startswith("!"):
                if b[1:] in counted:
                    raise ValueError(f"{name}: atom {atom} is in bead {b[1:]} with and without '!'")
                weights[atom][b[1:]] = 0.0
    return weights


def read_map(path: Path) -> tuple[str, list[str], dict[str, list[str]]]:
    """Read one backward-style ``.map`` file.

    Returns
    -------
    name : str
        The ``[ molecule ]`` name.
    from_ff : list of str
        ``[ from ]`` and ``[ mapping ]`` force fields.
    targets : dict
        Atom name -> bead names as written, in file order.
    """
    name, from_ff, targets = None, [], {}
    for section, line in _sections(path):
        if line is None:
            continue
        if section == "molecule":
            if name is not None:
                raise ValueError(f"{path.name}: more than one molecule")
            name = line.split()[0]
        elif section in ("from", "mapping"):
            from_ff.extend(line.split())
        elif section == "atoms":
            _, atom, *beads = line.split()
            if atom in targets:
                raise ValueError(f"{path.name}: atom {atom} listed twice")
            targets[atom] = beads
    if name is None:
        raise ValueError(f"{path.name}: no [ molecule ]")
    return name, from_ff, targets


def read_modifications(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Modification name -> atom -> {bead: weight} from a ``.mapping`` file (``[ modification ]`` blocks)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    current = None
    for section, line in _sections(path):
        if line is None:
            if section == "modification":
                current = {"blocks": [], "mapping": {}}
            continue
        if current is None:
            continue
        if section == "from blocks":
            current["blocks"].append(line.split()[0])
            out.setdefault(line.split()[0], current["mapping"])
        elif section == "mapping":
            atom, bead, *weight = line.split()
            current["mapping"].setdefault(atom, {})[bead] = float(int(weight[0])) if weight else 1.0
    return out


def read_blocks(path: Path) -> tuple[list[str], dict[str, dict]]:
    """Protein residue names and their beads from the force field's ``aminoacids.ff``.

    Returns
    -------
    names : list of str
        The ``protein_resnames`` macro (the residue names martinize2 writes).
    blocks : dict
        Residue name -> {"beads": [names in order], "masses": {bead: mass or None},
        "virtual_sites": {bead: {"from": [...], "function": int}}}.
    """
    names: list[str] = []
    blocks: dict[str, dict] = {}
    block = None
    for section, line in _sections(path):
        if line is None:
            continue
        if line.startswith("#"):
            continue
        if section == "macros" and line.split()[0] == "protein_resnames":
            names = line.split(None, 1)[1].strip().strip('"').split("|")
        elif section == "moleculetype":
            block = {"beads": [], "masses": {}, "virtual_sites": {}}
            blocks[line.split()[0]] = block
        elif section == "atoms" and block is not None:
            fields = line.split()
            block["beads"].append(fields[4])
            block["masses"][fields[4]] = float(fields[7]) if len(fields) > 7 else None
        elif section == "virtual_sitesn" and block is not None:
            atoms, _, params = line.partition("--")
            site, *constructing = atoms.split()
            block["virtual_sites"][site] = {"from": constructing, "function": int(params.split()[0])}
    return names, blocks


def _variables(path: Path) -> dict[str, str]:
    out = {}
    for section, line in _sections(path):
        if section == "variables" and line is not None:
            key, value = line.split(None, 1)
            out[key] = value.strip().strip('"')
    return out


def _parent(name: str) -> str | None:
    if name in EXTRA_PARENTS:
        return EXTRA_PARENTS[name]
    return chem.standard_residue_name(name)


def _split_heavy(parent: str, weights: dict[str, dict[str, float]], where: str):
    """Heavy atoms (project names) and hydrogens (as written) per bead."""
    heavy: dict[str, list] = {}
    hydrogens: dict[str, list] = {}
    for atom, beads in weights.items():
        std = chem.standard_atom_name(parent, atom)
        if std is None:
            if not atom.lstrip("0123456789").startswith("H"):
                raise ValueError(f"{where}: atom {atom} is neither a heavy atom of {parent} nor a hydrogen")
            for bead, w in beads.items():
                hydrogens.setdefault(bead, []).append([atom, w])
        else:
            for bead, w in beads.items():
                heavy.setdefault(bead, []).append([std, w])
    return heavy, hydrogens


def build_table(vermouth_dir: str | Path | None = None) -> tuple[dict, list[str]]:
    """Build the Martini 3 bead table from an installed vermouth.

    Parameters
    ----------
    vermouth_dir : path, optional
        The ``vermouth`` package folder (default: the imported package's).

    Returns
    -------
    table : dict
        The content of ``martini3.json``.
    report : list of str
        One line per skipped residue name or noteworthy fact.
    """
    import vermouth
    from vermouth.processors import attach_mass

    vdir = Path(vermouth_dir) if vermouth_dir is not None else Path(vermouth.__file__).resolve().parent
    map_dir = vdir / "data" / "mappings" / FORCE_FIELD
    ff_dir = vdir / "data" / "force_fields" / FORCE_FIELD
    files: dict[str, str] = {}

    def use(path: Path) -> Path:
        files[path.relative_to(vdir).as_posix()] = _sha256(path)
        return path

    variables = _variables(use(ff_dir / "general.ff"))
    if variables.get("center_weight") != "mass":
        raise ValueError(f"general.ff: center_weight is {variables.get('center_weight')!r}, expected 'mass'")
    masses = {k: float(v) for k, v in attach_mass.ATOM_MASSES.items()}
    use(Path(attach_mass.__file__).resolve())
    resnames, blocks = read_blocks(use(ff_dir / "aminoacids.ff"))
    modifications = read_modifications(use(map_dir / "modifications.charmm36.mapping"))

    report: list[str] = []
    residues: dict[str, dict] = {}
    for name in resnames:
        parent = _parent(name)
        if parent is None:
            report.append(f"skipped {name}: not one of the 20 standard amino acids")
            continue
        path, from_ff = None, None
        for suffix, ff in ((".charmm36.map", "charmm"), (".amber.map", "amber")):
            if (map_dir / f"{name.lower()}{suffix}").is_file():
                path, from_ff = map_dir / f"{name.lower()}{suffix}", ff
                break
        if path is None:
            report.append(f"skipped {name} (parent {parent}): no martini3001 mapping file")
            continue
        mol, ffs, targets = read_map(use(path))
        if mol != name or from_ff not in ffs:
            raise ValueError(f"{path.name}: molecule {mol} from {ffs}, expected {name} from {from_ff}")
        heavy, hydrogens = _split_heavy(parent, map_weights(targets, name), path.name)
        block = blocks[name]
        extra = (set(heavy) | set(hydrogens)) - set(block["beads"])
        if extra:
            raise ValueError(f"{path.name}: beads {sorted(extra)} not in the {FORCE_FIELD} block {name}")
        if set(heavy) != set(block["beads"]):
            raise ValueError(f"{path.name}: beads {sorted(heavy)} with heavy atoms, block has {block['beads']}")
        mapped = [a for b in heavy.values() for a, _ in b]
        if sorted(set(mapped)) != sorted(chem.RESIDUES[parent].atoms):
            raise ValueError(f"{path.name}: heavy atoms {sorted(mapped)} != {sorted(chem.RESIDUES[parent].atoms)}")
        residues[name] = {
            "standard": parent,
            "map_file": path.name,
            "from_force_field": from_ff,
            "beads": list(block["beads"]),
            "atoms": {b: heavy[b] for b in block["beads"]},
            "hydrogens": {b: hydrogens.get(b, []) for b in block["beads"]},
            "bead_masses": block["masses"],
            "virtual_sites": block["virtual_sites"],
        }

    # protonation variants share their parent's heavy-atom beads
    variants = {}
    for name, res in residues.items():
        parent = res["standard"]
        if name != parent:
            same = residues[parent]["beads"] == res["beads"] and residues[parent]["atoms"] == res["atoms"]
            variants[name] = {"standard": parent, "heavy_atoms_as_standard": same}
            if not same:
                report.append(f"{name}: heavy-atom beads differ from {parent}")
    # Amber files (martinize2 -from amber) against the CHARMM ones, heavy atoms only
    amber = {}
    for name, res in residues.items():
        path = map_dir / f"{name.lower()}.amber.map"
        if res["from_force_field"] == "charmm" and path.is_file():
            _, _, targets = read_map(use(path))
            heavy, _ = _split_heavy(res["standard"], map_weights(targets, name), path.name)
            amber[name] = {b: heavy.get(b, []) for b in res["beads"]} == res["atoms"]
            if not amber[name]:
                report.append(f"{name}: heavy atoms of {path.name} differ from {res['map_file']}")

    termini = {}
    for mod in TERMINI:
        heavy, hydrogens = {}, {}
        for atom, beads in modifications[mod].items():
            std = chem.standard_atom_name("ALA", atom)  # backbone names are the same for every residue
            for bead, w in beads.items():
                if std is None:
                    hydrogens.setdefault(bead, []).append([atom, w])
                else:
                    heavy.setdefault(bead, []).append([std, w])
        termini[mod] = {"atoms": heavy, "hydrogens": hydrogens}
        for bead, pairs in heavy.items():
            for atom, w in pairs:
                if atom != "OXT" and [atom, w] not in residues["ALA"]["atoms"].get(bead, []):
                    raise ValueError(f"{mod}: {atom} -> {bead} ({w}) differs from the residue files")
    oxt = [(b, w) for b, pairs in termini["C-ter"]["atoms"].items() for a, w in pairs if a == "OXT"]
    if len(oxt) != 1:
        raise ValueError(f"C-ter: OXT mapped {oxt}")
    cooh = [(b, w) for b, pairs in termini["COOH-ter"]["atoms"].items() for a, w in pairs if a == "OXT"]
    if cooh != oxt:
        report.append(f"COOH-ter maps OXT as {cooh}, C-ter as {oxt}")

    has_h = any(w > 0 for r in residues.values() for pairs in r["hydrogens"].values() for _, w in pairs)
    table = {
        "description": (
            "Martini 3 (martini3001) beads of the protein residues as martinize2 places them: each bead at "
            "sum(weight * mass * x) / sum(weight * mass) over its atoms present in the input. 'atoms' are the "
            "heavy atoms (this project's names, backmap_plugin.core.chemistry), 'hydrogens' the hydrogens as "
            "named in the mapping file. Generated by workflows/tables/build_martini3.py; do not edit."
        ),
        "provenance": {
            "vermouth_version": vermouth.__version__,
            "force_field": FORCE_FIELD,
            "from_force_field": "charmm (martinize2 default -from); amber files for amber-only names",
            "files": dict(sorted(files.items())),
        },
        "center_weight": variables["center_weight"],
        "masses": masses,
        "masses_source": "vermouth.processors.attach_mass.ATOM_MASSES (element -> integer mass)",
        "hydrogens_in_beads": has_h,
        "hydrogens_note": (
            "martinize2 counts hydrogens that are present in its input (weights as listed under 'hydrogens'; "
            "weight 0 for '!' entries such as HA). For an input without hydrogens (or martinize2 -ignh) only "
            "the heavy atoms count, which is what the table's 'atoms' reproduce."
        ),
        "oxt": {"bead": oxt[0][0], "weight": oxt[0][1]},
        "termini": termini,
        "residues": residues,
        "variants": variants,
        "amber_heavy_atoms_as_charmm": amber,
        "skipped": report[:],
    }
    return table, report


def main(argv=None) -> None:
    """Write ``martini3.json`` (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-o", "--output", default=str(DEFAULT_OUTPUT), help="output JSON (default: %(default)s)")
    parser.add_argument("--vermouth-dir", default=None, help="vermouth package folder (default: the installed one)")
    args = parser.parse_args(argv)
    table, report = build_table(args.vermouth_dir)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as fh:
        json.dump(table, fh, indent=1)
        fh.write("\n")
    for line in report:
        print(line)
    print(f"wrote {args.output}: {len(table['residues'])} residue names, vermouth {table['provenance']['vermouth_version']}")


if __name__ == "__main__":
    main()
